#!/usr/bin/env bash
# Vendor toolchain environments the tests use, made once per machine and kept between runs:
#   rknn  rknn-toolkit2 2.5.0 + torch 1.12.1 on CPython 3.10 (2.3 GB; 116 s from a cold pip cache on
#         the project's machine, 52 s warm)
# They go to $EDGESHIP_TOOLCHAIN_CACHE (default ~/.cache/edgeship-test-toolchains, the folder the tests
# read); an environment that is already there is reused (edgeship toolchain install is a no-op then).
# Usage: scripts/install-toolchains.sh [PYTHON]   PYTHON: the interpreter with edgeship installed
set -euo pipefail
cd "$(dirname "$0")/.."
python="${1:-${EDGESHIP_VENV:-$PWD/.venv}/bin/python}"
export EDGESHIP_TOOLCHAIN_CACHE="${EDGESHIP_TOOLCHAIN_CACHE:-$HOME/.cache/edgeship-test-toolchains}"
for name in rknn; do
  echo "==> toolchain $name (cache: $EDGESHIP_TOOLCHAIN_CACHE)"
  start=$(date +%s)
  "$python" -m edgeship toolchain install "$name"
  "$python" -m edgeship toolchain doctor "$name"
  echo "==> toolchain $name ready in $(( $(date +%s) - start )) s"
done
