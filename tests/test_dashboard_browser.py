"""The dashboard in a real browser: ``workbench dashboard`` (Voila) driven by Playwright in Chromium.

Uses Debian's Chromium (``/usr/bin/chromium``; ``scripts/install-browser.sh``
installs it) through the ``playwright`` package, never ``playwright install``.
The test starts the dashboard on a free port of 127.0.0.1, changes the
client-count control, checks that the Gantt chart re-renders with one row
per client and prints how long that took, uploads a malformed trace and
checks that the error appears while the chart stays, saves screenshots, and
stops every process it started.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
START_TIMEOUT_S = 90
RENDER_TIMEOUT_MS = 120_000
#: Generous ceiling for a re-render on a loaded CI machine; the target (< 1 s) is printed, not asserted.
RERENDER_LIMIT_S = 5.0


def _requirements() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (run scripts/install-browser.sh)")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]')")
    if importlib.util.find_spec("voila") is None:
        pytest.skip("voila is not installed (pip install -e '.[notebooks]')")


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _stop(proc: subprocess.Popen, readers: list[threading.Thread]) -> None:
    """SIGTERM the dashboard command (it stops Voila and its kernels); then make sure of every descendant."""
    started = _descendants(proc.pid)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    for thread in readers:
        thread.join(5)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in started:
        if _alive(pid):
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture(scope="module")
def dashboard():
    """``workbench dashboard --port P --no-browser`` in its own process group; yields its URL."""
    _requirements()
    from workbench.cli.dashboard import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "dashboard", "--port", str(port), "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "http://" in line:
                ready.set()

    readers = [threading.Thread(target=read, daemon=True),
               threading.Thread(target=lambda: proc.stderr.read(), daemon=True)]  # type: ignore[union-attr]
    for thread in readers:
        thread.start()
    try:
        if not ready.wait(START_TIMEOUT_S):
            pytest.fail(f"the dashboard did not print its URL within {START_TIMEOUT_S} s: {''.join(lines)!r}")
        url = next(line for line in lines if "http://" in line).split("serving at ", 1)[1].split()[0]
        assert url == f"http://127.0.0.1:{port}/"
        yield url
    finally:
        _stop(proc, readers)
        from workbench.cli.dashboard import _listening

        assert not _listening("127.0.0.1", port), "the dashboard still listens after the test"


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


def _client_rows(page) -> int:
    return page.evaluate("""() => Array.from(document.querySelectorAll('.js-plotly-plot .yaxislayer-above .ytick text'))
                                   .filter(t => t.textContent.startsWith('client')).length""")


def _screenshot_dir(tmp_path_factory) -> Path:
    given = os.environ.get("WORKBENCH_SCREENSHOT_DIR")
    folder = Path(given) if given else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_dashboard_rerenders_with_new_client_count(dashboard, browser, tmp_path_factory):
    shots = _screenshot_dir(tmp_path_factory)
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(dashboard, timeout=RENDER_TIMEOUT_MS)
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .ytick text').length > 0",
                           timeout=RENDER_TIMEOUT_MS)
    assert _client_rows(page) == 8
    page.screenshot(path=str(shots / "dashboard-8-clients.png"), full_page=True)

    # Type 4 into the client-count slider's readout, as a user would, and time the re-render.
    readout = page.locator(".wb-clients .widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("4")
    started = time.perf_counter()
    page.keyboard.press("Enter")
    page.wait_for_function("""() => Array.from(document.querySelectorAll('.js-plotly-plot .yaxislayer-above .ytick text'))
                                    .filter(t => t.textContent.startsWith('client')).length === 4""",
                           timeout=30_000, polling=10)
    elapsed = time.perf_counter() - started
    print(f"\nGantt chart re-rendered with 4 client rows {elapsed * 1e3:.0f} ms after the change "
          f"(target < 1000 ms; includes the {150} ms debounce)")
    page.wait_for_selector(".wb-status .wb-idle", timeout=30_000)
    assert _client_rows(page) == 4
    assert page.locator(".js-plotly-plot").count() == 1  # updated in place, not a second figure
    page.screenshot(path=str(shots / "dashboard-4-clients.png"), full_page=True)
    assert elapsed < RERENDER_LIMIT_S

    # A malformed upload: the command line's one-line error inside the widget; the chart stays.
    bad = tmp_path_factory.mktemp("upload") / "bad-trace.csv"
    bad.write_text("request_id,input_tokens,output_tokens\n1,10,5\n2,abc,3\n", encoding="utf-8")
    page.locator(".wb-trace-picker .widget-toggle-button[data-value=upload]").click()
    with page.expect_file_chooser(timeout=30_000) as chooser:
        page.locator(".wb-trace-picker .widget-upload").click()
    chooser.value.set_files(str(bad))
    page.wait_for_selector(".wb-trace-picker .wb-error-text", timeout=30_000)
    text = page.locator(".wb-trace-picker .wb-error-text").inner_text()
    assert "field 'input_tokens', row 1: 'abc' is not a number" in text
    assert _client_rows(page) == 4
    page.screenshot(path=str(shots / "dashboard-bad-upload.png"), full_page=True)
    print(f"screenshots in {shots}")
    page.close()
