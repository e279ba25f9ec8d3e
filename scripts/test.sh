#!/usr/bin/env bash
# The test command: installs what the tests need (system servers, the package with its test extras)
# and runs the default suite. Slow benchmarks are deselected; run them with `pytest -m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system.sh
python3 -m pip install -q -e '.[test]'
python3 examples/make_all.py
python3 -m pytest -q "$@"
