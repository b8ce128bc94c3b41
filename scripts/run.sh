#!/usr/bin/env bash
# Set up a virtual environment from pyproject.toml and run the main job into results/.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[notebooks]"
if "$VENV/bin/workbench" reproduce --help >/dev/null 2>&1; then
  exec "$VENV/bin/workbench" reproduce --out results "$@"
fi
exec "$VENV/bin/workbench" compare --trace gsm8k-test --clients 8 --batch-size 16 \
  --policies static,least-work,paper-baseline --out results "$@"
