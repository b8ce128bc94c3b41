#!/usr/bin/env bash
# Set up a virtual environment from pyproject.toml and run every test, notebooks included.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# pip --quiet prints nothing while it works: say what is happening and for about how long.
echo "test.sh: installing the package with its dev, notebooks and docs extras into $VENV (about 65 s on a fresh machine, a few s after)" >&2
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[dev,notebooks,docs]"
if [ -f scripts/install-browser.sh ]; then bash scripts/install-browser.sh; fi
# The `workbench profile` tests need the extra `profile` (torch, transformers).  Install it only from a local
# CPU wheel of torch (a file path, so pip cannot pick the multi-GB CUDA build from an index); without one,
# those tests skip with the reason.  Measured on the 2-core dev machine: ~90 s into an empty venv, ~27 s
# into one that has the dev extra; the tests then take ~10-17 s.
TORCH_CPU_WHEEL="$(ls "${TORCH_WHEEL_DIR:-/opt/wheels}"/torch-2.13.0+cpu-cp"$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"-*.whl 2>/dev/null | head -n 1 || true)"
if [ -n "$TORCH_CPU_WHEEL" ]; then
  echo "test.sh: installing the profile and learn extras over $TORCH_CPU_WHEEL (about 40 s the first time)" >&2
  "$VENV/bin/python" -m pip install --quiet "$TORCH_CPU_WHEEL" "transformers>=4.45" "pyyaml>=6.0"
  # The extra `learn` (stable-baselines3) over the same CPU torch: `workbench learn`'s short training tests.
  "$VENV/bin/python" -m pip install --quiet "$TORCH_CPU_WHEEL" "stable-baselines3>=2.3"
else
  echo "scripts/test.sh: no local CPU wheel of torch 2.13.0; the workbench profile and learn training tests will skip"
fi
echo "test.sh: running pytest (about 10 minutes on 2 cores)" >&2
exec "$VENV/bin/python" -m pytest "$@"
