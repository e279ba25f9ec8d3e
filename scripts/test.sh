#!/usr/bin/env bash
# The test command: installs what the tests need (system servers; the package with its test extras
# into a virtualenv, so only what pyproject declares is importable) and runs the default suite.
# Slow benchmarks are deselected; run them with `scripts/test.sh -m slow`.
#   EDGESHIP_VENV   the virtualenv to use (default .venv in the checkout)
#   CI=true         recreate that virtualenv from scratch: a dependency missing from pyproject fails here
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system.sh
venv="${EDGESHIP_VENV:-$PWD/.venv}"
if [ "${CI:-}" = "true" ] || [ ! -x "$venv/bin/python" ]; then
  echo "==> fresh virtualenv $venv"
  python3 -m venv --clear "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
echo "==> pip install -e '.[test]' into $venv"
"$venv/bin/python" -m pip install -q -e '.[test]'
echo "==> vendor toolchain environments (kept between runs on one machine)"
bash scripts/install-toolchains.sh "$venv/bin/python"
export PATH="$venv/bin:$PATH"
"$venv/bin/python" examples/make_all.py
exec "$venv/bin/python" -m pytest -q "$@"
