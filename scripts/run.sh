#!/usr/bin/env bash
# Set up a virtual environment from pyproject.toml and run the main job: the paper's experiments into results/.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[notebooks]"
exec "$VENV/bin/workbench" reproduce --out results "$@"
