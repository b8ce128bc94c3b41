"""The dashboard's kept-ready kernel and its log, served by Voila and read over HTTP (no browser needed).

Issue 28: a page could hang on "Loading widget..." because the kernel kept ready for it was culled right after
it was handed over: its idle clock had started when it finished preheating.  Here the dashboard runs as the
command starts it (one kept-ready kernel, the command's kernel manager); only the cull time is the test's,
shorter than the default so that the kept-ready kernel ages past it in seconds rather than minutes.
"""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

pytestmark = [pytest.mark.slow]

#: The cull time and check interval under test (the command's defaults are 120 s and 15 s).
CULL_IDLE_S, CULL_INTERVAL_S = 6, 1
#: Generous waits for a loaded 2-core machine (the kernel runs the dashboard notebook while preheating).
PREHEAT_TIMEOUT_S, PAGE_TIMEOUT_S = 240, 240


def _wait_until(predicate, timeout_s: float, poll_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return bool(predicate())


def test_a_kept_ready_kernel_older_than_the_cull_time_still_serves_its_page(tmp_path):
    pytest.importorskip("voila")
    from workbench.cli.dashboard import kernel_pids, start_dashboard, stop

    log_path = tmp_path / "voila.log"
    proc, url = start_dashboard(cull_idle_s=CULL_IDLE_S, cull_interval_s=CULL_INTERVAL_S, pool_size=1,
                                log_path=log_path)
    log = lambda: log_path.read_text(encoding="utf-8", errors="replace")  # noqa: E731
    try:
        assert proc.log_path == log_path
        assert _wait_until(lambda: "is filled with 1 kernel" in log(), PREHEAT_TIMEOUT_S), log()[-3000:]
        (kept,) = kernel_pids(proc.pid)
        time.sleep(CULL_IDLE_S + 3 * CULL_INTERVAL_S)  # the kept-ready kernel ages past the cull time
        with urllib.request.urlopen(url, timeout=PAGE_TIMEOUT_S) as response:
            assert response.status == 200
            response.read()
        handed = re.search(r"Using pre-heated kernel: ([0-9a-f-]+)", log())
        assert handed, log()[-3000:]
        # The page's browser connects next (none here).  Before the fix the next cull check, within a second,
        # stopped this kernel; now its idle clock starts at the hand-over.
        time.sleep(CULL_IDLE_S / 2)
        assert kept in kernel_pids(proc.pid), log()[-3000:]
        assert handed.group(1) not in "".join(line for line in log().splitlines() if "Culling" in line)
        # A page that never connects still loses its kernel, one cull time after the hand-over.
        assert _wait_until(lambda: kept not in kernel_pids(proc.pid), CULL_IDLE_S + 60), log()[-3000:]
    finally:
        stop(proc)


def test_the_dashboard_prints_where_its_log_is(tmp_path, capsys, monkeypatch):
    """Issue 28: Voila's log went to an unnamed temporary file; the command names it at start."""
    pytest.importorskip("voila")
    import workbench.cli.dashboard as dashboard

    class Started:
        log_path = tmp_path / "named.log"

        def wait(self):
            return 0

    monkeypatch.setattr(dashboard, "start_dashboard", lambda *a, **k: (Started(), "http://127.0.0.1:1/"))
    monkeypatch.setattr(dashboard, "stop", lambda proc: None)
    from workbench.cli import main

    assert main(["dashboard", "--no-browser", "--log", str(tmp_path / "named.log")]) == 0
    assert f"Voila's log: {tmp_path / 'named.log'}" in capsys.readouterr().out
    assert dashboard.default_log_path(8123).name == "workbench-dashboard-8123.log"
