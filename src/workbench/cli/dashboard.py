"""Extra subcommands: ``workbench dashboard`` serves the dashboard notebook with Voila.

The dashboard notebook ships inside the package (``workbench/viz/dashboard.ipynb``),
so the command works from an installed wheel as well as from a checkout.
Voila listens on 127.0.0.1 only; the command prints the URL once the server
accepts connections and stops the server (and its kernels) on Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import webbrowser
from pathlib import Path

from workbench.errors import ConfigError

HOST = "127.0.0.1"
#: Seconds to wait for Voila to accept connections.
START_TIMEOUT_S = 60.0


def dashboard_notebook() -> Path:
    """The dashboard notebook Voila serves."""
    return Path(__file__).resolve().parents[1] / "viz" / "dashboard.ipynb"


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def voila_command(notebook: Path, port: int) -> list[str]:
    """The Voila command line: the venv's Python, localhost only, no browser, no token."""
    return [sys.executable, "-m", "voila", str(notebook), f"--port={port}", f"--Voila.ip={HOST}",
            "--no-browser", "--Voila.port_retries=0", "--show_tracebacks=True", "--theme=light"]


def stop(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """Stop ``proc`` and everything it started (its process group): SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout_s)
    log = getattr(proc, "log", None)
    if log is not None:
        log.close()


def start_dashboard(port: int | None = None, *, notebook: Path | None = None,
                    timeout_s: float = START_TIMEOUT_S) -> tuple[subprocess.Popen, str]:
    """Start Voila in its own process group; return the process and the URL once it listens."""
    if importlib.util.find_spec("voila") is None:
        raise ConfigError("Voila is not installed.", field="dashboard",
                          fix="pip install 'llm-sched-workbench[notebooks]'.")
    notebook = notebook or dashboard_notebook()
    if not notebook.is_file():
        raise ConfigError(f"the dashboard notebook '{notebook}' is missing.", field="dashboard",
                          fix="reinstall the package.")
    if port is None:
        port = free_port()
    elif not 1 <= port <= 65535:
        raise ConfigError(f"port {port} is out of range.", field="--port", fix="give a port in 1..65535.")
    elif _listening(HOST, port):
        raise ConfigError(f"port {port} on {HOST} is already in use.", field="--port",
                          fix="choose another port, or leave out --port to pick a free one.")
    # Voila's log goes to an unnamed temporary file: shown if it fails to start, never a full pipe.
    log = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115 (lives as long as Voila; closed by stop())
    proc = subprocess.Popen(voila_command(notebook, port), cwd=notebook.parent, start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    proc.log = log  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            lines = log.read().strip().splitlines()
            log.close()
            raise ConfigError(f"Voila exited with status {proc.returncode}: {lines[-1] if lines else 'no output'}.",
                              field="dashboard", fix="run the voila command by hand to see its log.")
        if _listening(HOST, port):
            return proc, f"http://{HOST}:{port}/"
        time.sleep(0.2)
    stop(proc)
    raise ConfigError(f"Voila did not start within {timeout_s:.0f} s.", field="dashboard",
                      fix="run the voila command by hand to see its log.")


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(0)


def cmd_dashboard(args) -> int:
    proc, url = start_dashboard(args.port)
    # Stopped with SIGTERM (a service manager, a test): unwind so ``finally`` stops Voila too.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        print(f"workbench dashboard: serving at {url} (Ctrl-C to stop)", flush=True)
        if not args.no_browser:
            webbrowser.open(url)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop(proc)
        signal.signal(signal.SIGTERM, previous)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("dashboard", help="serve the interactive dashboard (Voila) on 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="print the URL but do not open a browser")
    p.set_defaults(func=cmd_dashboard)
