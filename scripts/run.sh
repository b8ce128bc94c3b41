#!/usr/bin/env bash
# Set up a virtual environment from pyproject.toml and run the main job: the paper's experiments into results/.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# pip --quiet prints nothing while it works: say what is happening and for about how long.
echo "run.sh: installing the package and the notebooks extra into $VENV (about 35 s on a fresh machine, a few s after)" >&2
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[notebooks]"
echo "run.sh: running workbench reproduce --out results" >&2
exec "$VENV/bin/workbench" reproduce --out results "$@"
