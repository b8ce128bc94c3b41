"""The dashboard in a real browser: ``workbench dashboard`` (Voila) driven by Playwright in Chromium.

Uses Debian's Chromium (``/usr/bin/chromium``; ``scripts/install-browser.sh``
installs it) through the ``playwright`` package, never ``playwright install``.
The test starts the dashboard on a free port of 127.0.0.1, changes the
client-count control, checks that the Gantt chart re-renders with one row
per client and prints how long that took, uploads a malformed trace and
checks that the error appears while the chart stays, saves screenshots, and
stops every process it started.  A second test loads and closes the page three
times and checks that no page leaves a kernel behind (Voila's preheated pool
aside), that no request leaves 127.0.0.1, and that the chart fits an 800 px
window after a resize.  Times are printed, never asserted (the benchmark
``benchmarks/bench_dashboard.py`` measures the first render).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
START_TIMEOUT_S = 90
RENDER_TIMEOUT_MS = 120_000
#: The dashboard under test runs the command's default configuration (its kept-ready kernel, its kernel
#: manager); only the cull time is the test's, shorter than the default so that a kept-ready kernel ages past
#: it within the test (issue 28: such a kernel was culled as it was handed to a page, which then hung).
CULL_IDLE_S, CULL_INTERVAL_S = 30, 2
from workbench.cli.dashboard import POOL_SIZE  # noqa: E402 (the command's default: one kept-ready kernel)
#: How long a closed page's kernel may take to go: the cull time, with room for a loaded machine.
KERNEL_GONE_TIMEOUT_S = 180
CHART_DRAWN = "() => document.querySelectorAll('.js-plotly-plot .ytick text').length > 0"


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


@dataclass
class Dashboard:
    url: str
    pid: int  # the `workbench dashboard` process: Voila and its kernels are below it


def _wait_until(predicate, timeout_s: float, poll_s: float = 0.5) -> bool:
    """Poll ``predicate`` until it holds or ``timeout_s`` passes (a generous wait, not a timing check)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return bool(predicate())


@pytest.fixture(scope="module")
def dashboard():
    """``workbench dashboard --port P --no-browser`` in its own process group; yields its URL and pid."""
    _requirements()
    from workbench.cli.dashboard import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "dashboard", "--port", str(port), "--no-browser",
                             "--cull-idle", str(CULL_IDLE_S), "--cull-interval", str(CULL_INTERVAL_S)],
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
        yield Dashboard(url=url, pid=proc.pid)
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
    page.goto(dashboard.url, timeout=RENDER_TIMEOUT_MS)
    page.wait_for_function(CHART_DRAWN, timeout=RENDER_TIMEOUT_MS)
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


def _local(url: str) -> bool:
    return url.startswith(("http://127.0.0.1:", "ws://127.0.0.1:", "blob:http://127.0.0.1:", "data:", "about:"))


def _chart_fits(page) -> dict:
    return page.evaluate("""() => {
        const plot = document.querySelector('.js-plotly-plot');
        const svg = plot.querySelector('.main-svg');
        return {svg: svg.getBoundingClientRect().width, box: plot.parentElement.getBoundingClientRect().width,
                page: document.documentElement.scrollWidth, window: window.innerWidth};
    }""")


def test_pages_leave_no_kernel_and_no_request_leaves_localhost(dashboard, browser, tmp_path_factory):
    from workbench.cli.dashboard import kernel_pids

    def kernels() -> int:
        return len(kernel_pids(dashboard.pid))

    # every kernel beyond the pool (none here) serves a page
    assert _wait_until(lambda: kernels() <= POOL_SIZE, KERNEL_GONE_TIMEOUT_S), \
        f"{kernels()} kernels before the loads (pool of {POOL_SIZE})"
    outside: list[str] = []
    bundles: list[str] = []
    shots = _screenshot_dir(tmp_path_factory)
    for load in range(3):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("request", lambda r: None if _local(r.url) else outside.append(r.url))
        page.on("request", lambda r: bundles.append(r.url) if "/plotly-widget-" in r.url else None)
        page.on("websocket", lambda ws: None if _local(ws.url) else outside.append(ws.url))
        started = time.perf_counter()
        page.goto(dashboard.url, timeout=RENDER_TIMEOUT_MS)
        page.wait_for_function(CHART_DRAWN, timeout=RENDER_TIMEOUT_MS)
        print(f"\nload {load + 1}: chart drawn {time.perf_counter() - started:.2f} s after the request "
              f"(measured, not asserted: benchmarks/bench_dashboard.py); {kernels()} kernels running")
        assert kernels() >= 1
        if load == 0:
            wide = _chart_fits(page)
            # drawn at its container's width, not at Plotly's default 700 px (a view rendered before its element
            # was placed, with the bundle already loaded)
            assert wide["svg"] >= 0.9 * wide["box"] > 1000, wide
            page.set_viewport_size({"width": 800, "height": 1000})
            # the chart follows its container: wait (generously) for the redraw at the new width
            page.wait_for_function("""() => {
                const plot = document.querySelector('.js-plotly-plot');
                const svg = plot.querySelector('.main-svg');
                const width = svg.getBoundingClientRect().width;
                return width <= window.innerWidth && width <= plot.parentElement.getBoundingClientRect().width + 1
                       && document.documentElement.scrollWidth <= window.innerWidth;
            }""", timeout=30_000)
            narrow = _chart_fits(page)
            print(f"chart {wide['svg']:.0f} px wide in a 1,400 px window, {narrow['svg']:.0f} px in 800 px")
            assert narrow["svg"] <= min(800, narrow["box"] + 1) < wide["svg"] and narrow["page"] <= 800, narrow
            page.screenshot(path=str(shots / "dashboard-800px.png"), full_page=True)
        page.close(run_before_unload=True)
        # the page's kernel goes (Voila culls it once no page is connected); the pool stays
        assert _wait_until(lambda: kernels() <= POOL_SIZE, KERNEL_GONE_TIMEOUT_S), \
            f"after closing page {load + 1}, {kernels()} kernels still run (pool of {POOL_SIZE})"
    assert not outside, f"requests left 127.0.0.1: {sorted(set(outside))[:5]}"
    # Plotly's widget bundle comes as a file the browser caches, not as 5 MB of widget state per page
    assert bundles and all("/voila/templates/workbench-assets/static/" in url for url in bundles), bundles


def _set_clients(page, n: int) -> None:
    readout = page.locator(".wb-clients .widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(str(n))
    page.keyboard.press("Enter")
    page.wait_for_function(f"""() => Array.from(document.querySelectorAll('.js-plotly-plot .yaxislayer-above .ytick text'))
                                     .filter(t => t.textContent.startsWith('client')).length === {n}""",
                           timeout=30_000, polling=10)
    page.wait_for_selector(".wb-status .wb-idle", timeout=30_000)


def test_a_page_after_the_kept_ready_kernel_aged_renders_and_follows_the_window(dashboard, browser):
    """Issue 28: 2 of 4 loads hung once the kept-ready kernel had waited longer than the cull time; and after a
    control change the chart stayed 1,370 px wide in an 800 px window."""
    from workbench.cli.dashboard import kernel_pids

    assert _wait_until(lambda: len(kernel_pids(dashboard.pid)) >= POOL_SIZE, KERNEL_GONE_TIMEOUT_S)
    time.sleep(CULL_IDLE_S + 3 * CULL_INTERVAL_S)  # the kept-ready kernel ages past the cull time
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(dashboard.url, timeout=RENDER_TIMEOUT_MS)
    page.wait_for_function(CHART_DRAWN, timeout=RENDER_TIMEOUT_MS)
    time.sleep(3 * CULL_INTERVAL_S)  # past the cull checks that used to stop the page's kernel
    _set_clients(page, 4)  # the page's kernel still answers
    page.set_viewport_size({"width": 800, "height": 1000})
    page.wait_for_function("""() => {
        const plot = document.querySelector('.js-plotly-plot');
        const width = plot.querySelector('.main-svg').getBoundingClientRect().width;
        return width <= window.innerWidth && document.documentElement.scrollWidth <= window.innerWidth;
    }""", timeout=30_000)
    narrow = _chart_fits(page)
    assert narrow["svg"] <= min(800, narrow["box"] + 1) and narrow["page"] <= 800, narrow
    page.close(run_before_unload=True)
