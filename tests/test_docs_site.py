"""The documentation site: built by ``scripts/docs.sh`` and read in Chromium, offline.

The build treats warnings as errors (a broken cross-reference or a failing notebook fails
it) and reuses the notebook execution cache in ``build/site-work``, so a second run is
quick. The pages are served from 127.0.0.1 and every request the browser makes is
recorded: anything outside 127.0.0.1 is refused and fails the test. Uses the Playwright
and Debian Chromium setup of ``tests/test_dashboard_browser.py``.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, _screenshot_dir

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("WORKBENCH_SITE_OUT", ROOT / "build" / "site"))
BUILD_TIMEOUT_S = 1200
LOAD_TIMEOUT_MS = 60_000
LOCAL_SCHEMES = {"file", "data", "blob", "about"}
# Attributes through which an HTML page makes the browser fetch something (links a reader clicks do not).
LOADED = re.compile(r"""<(?:script|img|iframe|source|embed)\b[^>]*?\bsrc=["']([^"']+)["']"""
                    r"""|<link\b[^>]*?\bhref=["']([^"']+)["']""", re.IGNORECASE)
CSS_URL = re.compile(r"""(?:url\(\s*["']?|@import\s+["'])(https?:[^"')\s]+)""", re.IGNORECASE)


def _requirements() -> None:
    missing = [name for name in ("sphinx", "myst_nb", "sphinx_book_theme") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: the docs extra (pip install -e '.[docs]')")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (run scripts/install-browser.sh)")


def _external(url: str) -> bool:
    parts = urlparse(url)
    return parts.scheme not in LOCAL_SCHEMES and parts.hostname not in ("127.0.0.1", "localhost", None)


@pytest.fixture(scope="module")
def site() -> Path:
    _requirements()
    env = {**os.environ, "PYTHON": sys.executable}
    started = time.perf_counter()
    run = subprocess.run(["bash", str(ROOT / "scripts" / "docs.sh")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=BUILD_TIMEOUT_S)
    assert run.returncode == 0, f"scripts/docs.sh failed:\n{(run.stdout + run.stderr)[-6000:]}"
    executed = run.stdout.count("Executed notebook")
    # Issue 28: MyST and MyST-NB dumped their whole configuration (two multi-kilobyte lines) into every build.
    assert "MdParserConfig(" not in run.stdout + run.stderr and "NbParserConfig(" not in run.stdout + run.stderr
    print(f"\nscripts/docs.sh: {time.perf_counter() - started:.1f} s, {executed} notebooks executed "
          f"(the others from the execution cache)")
    assert (SITE / "index.html").is_file() and (SITE / "notebooks" / "00-tour.html").is_file()
    return SITE


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def browser():
    _requirements()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def test_site_loads_nothing_from_outside(site):
    """Every page, script and stylesheet of the built site names only its own files."""
    outside = []
    for path in sorted(site.rglob("*.html")):
        for match in LOADED.finditer(path.read_text(encoding="utf-8", errors="replace")):
            url = match.group(1) or match.group(2)
            if _external(url):
                outside.append(f"{path.relative_to(site)}: {url}")
    for path in sorted((site / "_static").rglob("*.css")):
        outside += [f"{path.relative_to(site)}: {url}" for url in CSS_URL.findall(path.read_text(errors="replace"))]
    assert not outside, "the site loads from outside:\n" + "\n".join(outside[:20])
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    expected = {"README.html", "docs/MODEL.html", "docs/online.html", "notebooks/00-tour.html",
                "notebooks/solutions/07-arrivals-kv-chunked-solutions.html", "docs/api.html"}
    assert expected <= pages, f"pages missing from the site: {sorted(expected - pages)}"


def _open(browser, url: str, requests: list[str], errors: list[str]):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})

    def route(r):
        requests.append(r.request.url)
        if _external(r.request.url):
            r.abort()
        else:
            r.continue_()

    context.route("**/*", route)
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Console errors too: the theme logged "Got invalid theme mode" on every first visit (issue 28).
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(url, wait_until="load", timeout=LOAD_TIMEOUT_MS)
    return context, page


def test_index_and_a_notebook_render_offline(served, browser, tmp_path_factory):
    shots = _screenshot_dir(tmp_path_factory)
    requests: list[str] = []
    errors: list[str] = []

    context, page = _open(browser, served + "/index.html", requests, errors)
    assert page.url.endswith("/index.html")  # the front page itself: no redirect, no site/ inside the site
    page.wait_for_selector("nav.bd-links a[href$='00-tour.html']", timeout=LOAD_TIMEOUT_MS)
    assert "scheduling workbench" in page.title().lower()
    toc = page.eval_on_selector_all("nav.bd-links a", "links => links.map(a => a.textContent.trim())")
    assert any("tour" in t.lower() for t in toc) and any("API" in t for t in toc), toc
    page.screenshot(path=str(shots / "site-index.png"), full_page=False)
    context.close()

    context, page = _open(browser, served + "/notebooks/00-tour.html", requests, errors)
    # The figures are the notebook's own outputs, drawn by the site's plotly.js.
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2",
                           timeout=LOAD_TIMEOUT_MS)
    figures = page.evaluate("() => document.querySelectorAll('.js-plotly-plot').length")
    bars = page.evaluate("() => document.querySelectorAll('.js-plotly-plot g.trace g.point').length")
    # The mathematics, typeset by the site's MathJax.
    page.wait_for_selector("mjx-container", timeout=LOAD_TIMEOUT_MS)
    page.screenshot(path=str(shots / "site-00-tour.png"), full_page=False)
    context.close()

    print(f"\nsite: {figures} Plotly figures on notebooks/00-tour.html, {bars} drawn marks, "
          f"{len(requests)} requests, screenshots in {shots}")
    assert figures >= 2 and bars > 0
    outside = [url for url in requests if _external(url)]
    assert not outside, f"requests outside 127.0.0.1: {outside[:10]}"
    paths = [urlparse(url).path for url in requests]
    assert any(path.endswith("/_static/plotly.min.js") for path in paths), paths
    assert any("/_static/mathjax/" in path for path in paths), paths
    assert not errors, f"JavaScript errors on the pages: {errors[:5]}"
