#!/usr/bin/env bash
# Set up a virtual environment from pyproject.toml and run every test, notebooks included.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[dev,notebooks,docs]"
if [ -f scripts/install-browser.sh ]; then bash scripts/install-browser.sh; fi
exec "$VENV/bin/python" -m pytest "$@"
