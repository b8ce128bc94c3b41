#!/usr/bin/env bash
# Build the documentation site into build/site/ (open build/site/index.html).
# Offline: nothing is fetched; warnings are errors, so a broken cross-reference or a notebook
# that fails fails the build. Notebooks are executed once and cached by their code in
# build/site-work/jupyter-cache, so a rebuild executes only the notebooks that changed.
#   bash scripts/docs.sh            # build (incremental)
#   bash scripts/docs.sh --clean    # rebuild every page (the execution cache is kept)
# Needs the docs extra: pip install -e ".[docs]"
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
OUT="${WORKBENCH_SITE_OUT:-build/site}"
if [ "${1:-}" = "--clean" ]; then rm -rf "$OUT" build/site-doctrees docs/generated; shift; fi
exec "$PYTHON" -m sphinx -W --keep-going -n -b html -c site -d build/site-doctrees -j "${WORKBENCH_SITE_JOBS:-auto}" "$@" . "$OUT"
