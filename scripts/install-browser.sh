#!/usr/bin/env bash
# Install Debian's Chromium for the browser test (tests/test_dashboard_browser.py) when it is missing.
# Playwright drives /usr/bin/chromium; never `playwright install` (it downloads a browser).
# Never fails the run: without apt (or without root) it prints a warning and the browser test skips.
set -uo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: warning: /usr/bin/chromium is missing and apt-get is unavailable; the browser test will be skipped." >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install-browser: warning: /usr/bin/chromium is missing and installing it needs root; the browser test will be skipped." >&2
    exit 0
  fi
fi
echo "install-browser: installing Debian's chromium with apt-get" >&2
if $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
   && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; then
  echo "install-browser: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)" >&2
else
  echo "install-browser: warning: apt-get could not install chromium; the browser test will be skipped." >&2
fi
exit 0
