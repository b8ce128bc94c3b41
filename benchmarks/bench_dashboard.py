"""The dashboard in a real browser: first render (page request to the Gantt chart drawn) and a control change.

    python benchmarks/bench_dashboard.py [--loads 3] [--pool-size 1]

Starts ``workbench dashboard`` (Voila on 127.0.0.1), waits until its preheated kernel pool is
full, then loads the page ``--loads`` times in headless Chromium (Debian's ``/usr/bin/chromium``
through Playwright), each time measuring the seconds from the request to the first drawn client
row of the chart; then types a new client count into the slider's readout, as a user would, and
measures the seconds until the chart shows that many rows (the 150 ms debounce included); then closes
the page.  It prints each load, the medians and the targets (issue 28: first render < 2 s, a change
< 0.5 s, on a quiet 2-core machine).  ``--pool-size 0`` measures Voila without preheated kernels (a kernel started,
the package imported and the dashboard simulated per page), for comparison.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

# This checkout's package, whether or not it is installed (`python benchmarks/...` from the repository root).
_sys.path.insert(0, str(_Path(__file__).resolve().parents[1] / "src"))

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
TARGET_S = 2.0
CHANGE_TARGET_S = 0.5
ROWS = """() => Array.from(document.querySelectorAll('.js-plotly-plot .yaxislayer-above .ytick text'))
                  .filter(t => t.textContent.startsWith('client')).length"""
CHART_WIDTH = "() => document.querySelector('.js-plotly-plot .main-svg').getBoundingClientRect().width"
CHART_DRAWN = "() => document.querySelectorAll('.js-plotly-plot .yaxislayer-above .ytick text').length > 0"


def wait_until(predicate, timeout_s: float, poll_s: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` so far (Linux /proc; 0 if it has gone)."""
    try:
        fields = _Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kernels_idle(pid: int, over_s: float = 1.0) -> bool:
    """Whether the dashboard's kernels used (almost) no CPU over the next ``over_s`` seconds."""
    from workbench.cli.dashboard import kernel_pids

    before = {k: cpu_seconds(k) for k in kernel_pids(pid)}
    time.sleep(over_s)
    return sum(cpu_seconds(k) - t for k, t in before.items()) < 0.05 * over_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--pool-size", type=int, default=None, help="default: the dashboard's default")
    parser.add_argument("--warm", action="store_true",
                        help="load every page in one browser profile (a returning visitor's cache); default: a new "
                             "profile per load (a first visit)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from workbench.cli.dashboard import FILL_DELAY_S, POOL_SIZE, kernel_pids, start_dashboard, stop

    pool = POOL_SIZE if args.pool_size is None else args.pool_size
    started = time.perf_counter()
    proc, url = start_dashboard(pool_size=pool)
    times, changes = [], []
    try:
        print(f"dashboard listening after {time.perf_counter() - started:.1f} s at {url} (pool of {pool} kernels)")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
            # --warm: one browser profile for every load, so the later loads find Plotly's bundle in the cache
            context = browser.new_context(viewport={"width": 1400, "height": 1000}) if args.warm else None
            for i in range(args.loads):
                # The kept-ready kernel is ready once Voila has started it (FILL_DELAY_S after the last page took
                # one) and it has run the notebook: its CPU time stops growing.  Pages opened sooner measure the
                # preheat running beside them.
                time.sleep(FILL_DELAY_S + 1.0 if pool and i else 0.0)
                wait_until(lambda: len(kernel_pids(proc.pid)) >= pool, 120)
                if pool:
                    wait_until(lambda: kernels_idle(proc.pid), 120)
                page = context.new_page() if context else browser.new_page(viewport={"width": 1400, "height": 1000})
                t0 = time.perf_counter()
                page.goto(url, timeout=180_000)
                page.wait_for_function(CHART_DRAWN, timeout=180_000)
                times.append(time.perf_counter() - t0)
                width_px = page.evaluate(CHART_WIDTH)
                rows = 4 if i % 2 == 0 else 6
                readout = page.locator(".wb-clients .widget-readout")
                readout.click()
                page.keyboard.press("Control+A")
                page.keyboard.type(str(rows))
                t1 = time.perf_counter()
                page.keyboard.press("Enter")
                page.wait_for_function(f"() => ({ROWS})() === {rows}", timeout=60_000, polling=10)
                changes.append(time.perf_counter() - t1)
                print(f"load {i + 1}: chart drawn {times[-1]:.2f} s after the request, {width_px:.0f} px wide; "
                      f"{rows} clients redrawn {changes[-1]:.2f} s after the change")
                page.close(run_before_unload=True)
            browser.close()
    finally:
        stop(proc)
    median, change = statistics.median(times), statistics.median(changes)
    print(f"first render, median of {len(times)} loads: {median:.2f} s (target < {TARGET_S:g} s: "
          f"{'met' if median < TARGET_S else 'MISSED'})")
    print(f"control change, median of {len(changes)}: {change:.2f} s (target < {CHANGE_TARGET_S:g} s: "
          f"{'met' if change < CHANGE_TARGET_S else 'MISSED'})")


if __name__ == "__main__":
    main()
