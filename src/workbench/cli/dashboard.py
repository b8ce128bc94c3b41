"""Extra subcommands: ``workbench dashboard`` serves the dashboard notebook with Voila.

The dashboard notebook ships inside the package (``workbench/viz/dashboard.ipynb``),
so the command works from an installed wheel as well as from a checkout.
Voila listens on 127.0.0.1 only; the command prints the URL once the server
accepts connections and stops the server (and its kernels) on Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import webbrowser
from pathlib import Path

from workbench._paths import write_atomically
from workbench.errors import ConfigError

HOST = "127.0.0.1"
#: Seconds to wait for Voila to accept connections.
START_TIMEOUT_S = 60.0
#: A kernel whose page is gone (closed without Voila's shutdown beacon, a crashed tab, a lost
#: network) is stopped after this many idle seconds; a kernel with its page still open is kept.
CULL_IDLE_S = 120
#: How often (s) Voila looks for such kernels.
CULL_INTERVAL_S = 15
#: Kernels kept ready with the dashboard already run (Voila's preheated pool): a page takes one
#: and renders at once instead of waiting for a kernel to start, import and simulate (~10 s on
#: 2 cores); Voila refills the pool in the background.  0 starts a kernel per page load.
POOL_SIZE = 1
#: Seconds Voila waits, after a page took a kept-ready kernel, before it starts the next one.  Preheating takes
#: about 4.5 s of a core (start, import, run the dashboard); begun 1 s after the hand-over (Voila's default) it
#: ran while the page was still loading and drawing, on the same 2 cores.  Measured in a browser (median of 8
#: page loads, 2 cores): 2.71 s to the first drawn chart with 1 s, 2.11 s with 4 s.
FILL_DELAY_S = 4.0
#: JupyterLab extensions the dashboard page does not load: it draws its chart with the FigureWidget
#: (anywidget), so Plotly's mime renderer (a 4.8 MB bundle), jupytext, code highlighting and the lab preview button only
#: cost load time (and jupytext's fails to load in Voila).
EXTENSION_DENYLIST = ("jupyterlab-plotly", "jupyterlab-jupytext", "jupyterlab_pygments",
                      "@voila-dashboards/jupyterlab-preview")
#: The dashboard's Voila template (Voila's lab template without CDN links), on JUPYTER_PATH.
TEMPLATE = "workbench"
#: The kernel manager Voila wraps: a kept-ready kernel's idle clock starts when a page takes it, so a
#: kernel that waited in the pool longer than the cull time is not stopped before its page connects.
KERNEL_MANAGER = "workbench._voila_kernels.HandOverKernelManager"


def default_log_path(port: int) -> Path:
    """Where Voila's log goes unless --log says otherwise: a named file, printed at start."""
    return Path(tempfile.gettempdir()) / f"workbench-dashboard-{port}.log"


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


def template_root() -> Path:
    """The folder that goes on JUPYTER_PATH so Voila finds ``voila/templates/workbench``."""
    return Path(__file__).resolve().parents[1] / "viz" / "voila"


def voila_command(notebook: Path, port: int, *, cull_idle_s: float = CULL_IDLE_S,
                  cull_interval_s: float = CULL_INTERVAL_S, pool_size: int = POOL_SIZE) -> list[str]:
    """The Voila command line: the venv's Python, localhost only, no browser, no token, no CDN.

    Kernels: Voila's page sends a shutdown beacon when it closes (``beforeunload``), and the
    kernel manager culls a kernel that has had no page connected and no activity for
    ``cull_idle_s`` seconds (``MappingKernelManager.cull_idle_timeout``; ``cull_connected``
    stays off, so an open page keeps its kernel however long its user reads).  With
    ``pool_size`` > 0, that many preheated kernels wait for the next page (Voila never culls them); a taken one is
    replaced :data:`FILL_DELAY_S` seconds later, once its page has drawn.
    """
    pool = (["--preheat_kernel=True", f"--pool_size={int(pool_size)}",
             f"--VoilaKernelManager.fill_delay={FILL_DELAY_S:g}"] if pool_size > 0 else [])
    return [sys.executable, "-m", "voila", str(notebook), f"--port={port}", f"--Voila.ip={HOST}",
            "--no-browser", "--Voila.port_retries=0", "--show_tracebacks=True", "--theme=light",
            f"--template={TEMPLATE}",
            f"--MappingKernelManager.cull_idle_timeout={int(cull_idle_s)}",
            f"--MappingKernelManager.cull_interval={int(cull_interval_s)}",
            "--MappingKernelManager.cull_connected=False", *pool,
            f"--VoilaConfiguration.multi_kernel_manager_class={KERNEL_MANAGER}",
            *(f"--VoilaConfiguration.extension_denylist={name}" for name in EXTENSION_DENYLIST)]


#: The template whose static folder serves Plotly's widget bundle (a file the browser caches).
ASSETS_TEMPLATE = "workbench-assets"
#: A page fragment, written beside the bundle under the dashboard template's name (so Voila's template loader
#: finds it), that the dashboard's template puts in the page's head; it imports the bundle once the page has
#: loaded (see :func:`plotly_bundle_root`).
EARLY_IMPORT_TEMPLATE = "workbench_plotly_import.html.j2"
#: V8's explicit compile hint (Chromium 136+): compile every function of the file eagerly, on the thread
#: that streams it in.  Plotly's bundle wraps its code in nested functions that are all called on load; compiled
#: lazily, V8 pre-parsed them while streaming, then parsed each again on the main thread when it was
#: called (about 400 ms of the page's longest task on 2 cores).  Other browsers read it as a comment.
COMPILE_HINT = "//# allFunctionsCalledOnLoad\n"
#: Bumped whenever what :func:`plotly_bundle_root` writes changes, so that no older copy is served.
ASSETS_FORMAT = 6


def plotly_bundle_root() -> tuple[Path, str, str | None]:
    """A folder for JUPYTER_PATH whose ``voila/templates/workbench-assets/static/`` holds the installed Plotly's
    widget bundle, copied once per Plotly version (atomically, so dashboards started together agree), and the
    URL paths below the server's base URL the page fetches it by: the full bundle's, and the basic build's
    (:data:`workbench.viz.widgets.BASIC_BUNDLE`: bars, pies and scatter, what the Gantt chart draws; None
    where the installed Plotly is not the version it was built for).

    Each copy starts with :data:`COMPILE_HINT`.  The URLs carry a version (``?v=``), so the server (Tornado)
    says the files may be cached (ten years); a second visit can then use the browser's cached file and V8's
    code cache.  The folder also holds :data:`EARLY_IMPORT_TEMPLATE`: a module script that imports the bundle
    the Gantt chart draws with when the page's ``load`` event fires.  Plotly's code then runs while the page
    waits for its kernel's widget state (the main thread is otherwise idle there) instead of after it, when the
    widget first asks for it; the widget's own import of the same URL gets the module already evaluated.
    """
    import plotly

    from workbench.viz.widgets import BASIC_BUNDLE, BASIC_PROVENANCE

    version = plotly.__version__
    built = json.loads(BASIC_PROVENANCE.read_text())
    basic = built["plotly"] == version
    # One folder per Plotly version and basic build (a rebuild for the same version must not serve the old one).
    tag = f"{version}-{ASSETS_FORMAT}" + (f"-{built['sha256'][:12]}" if basic else "")
    root = Path(tempfile.gettempdir()) / f"workbench-dashboard-assets-{tag}"
    static = root / "voila" / "templates" / ASSETS_TEMPLATE / "static"
    sources = {"full": Path(plotly.__file__).parent / "package_data" / "widgetbundle.js"}
    if basic:
        sources["basic"] = BASIC_BUNDLE
    paths = {}
    for kind, source in sources.items():
        name = f"plotly-widget-{version}.js" if kind == "full" else f"plotly-widget-basic-{version}.js"
        if not (static / name).is_file():
            write_atomically(static / name, COMPILE_HINT.encode() + source.read_bytes())
        paths[kind] = f"voila/templates/{ASSETS_TEMPLATE}/static/{name}?v={version}-{ASSETS_FORMAT}"
    early = "{{ resources.base_url }}" + paths.get("basic", paths["full"])
    fragment = root / "voila" / "templates" / TEMPLATE / EARLY_IMPORT_TEMPLATE
    if not fragment.is_file():
        write_atomically(fragment, ('<script type="module">\n'
                                    f'window.addEventListener("load", () => import("{early}"));\n'
                                    '</script>\n').encode())
    return root, paths["full"], paths.get("basic")


def voila_env() -> dict[str, str]:
    """The environment Voila runs in: ours, with the dashboard's template and Plotly's widget bundles on
    JUPYTER_PATH, and the bundles' paths for the kernels (``workbench.viz.widgets.figure_widget``)."""
    from workbench.viz.widgets import PLOTLY_BASIC_BUNDLE_ENV, PLOTLY_BUNDLE_ENV

    env = dict(os.environ)
    bundle_root, bundle_path, basic_path = plotly_bundle_root()
    roots = (str(template_root()), str(bundle_root), env.get("JUPYTER_PATH"))
    env["JUPYTER_PATH"] = os.pathsep.join(p for p in roots if p)
    env[PLOTLY_BUNDLE_ENV] = bundle_path
    env.pop(PLOTLY_BASIC_BUNDLE_ENV, None)
    if basic_path is not None:
        env[PLOTLY_BASIC_BUNDLE_ENV] = basic_path
    return env


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, read from /proc (Linux; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        if fields and fields[0] != "Z":  # a zombie has exited
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kernel_pids(pid: int) -> list[int]:
    """The Jupyter kernels a dashboard (the process ``pid``) is running now: its ipykernel descendants."""
    out = []
    for child in descendants(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"ipykernel" in cmdline:
            out.append(child)
    return out


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
                    timeout_s: float = START_TIMEOUT_S, cull_idle_s: float = CULL_IDLE_S,
                    cull_interval_s: float = CULL_INTERVAL_S, pool_size: int = POOL_SIZE,
                    log_path: Path | None = None) -> tuple[subprocess.Popen, str]:
    """Start Voila in its own process group; return the process and the URL once it listens.

    Voila's log goes to ``log_path`` (default :func:`default_log_path`); ``proc.log_path`` names it.
    """
    if importlib.util.find_spec("voila") is None:
        raise ConfigError("Voila is not installed.", field="dashboard",
                          fix="pip install 'llm-sched-workbench[notebooks]'.")
    notebook = notebook or dashboard_notebook()
    if not notebook.is_file():
        raise ConfigError(f"the dashboard notebook '{notebook}' is missing.", field="dashboard",
                          fix="reinstall the package.")
    for name, value in (("--cull-idle", cull_idle_s), ("--cull-interval", cull_interval_s)):
        if not (value >= 1 and value == int(value)):
            raise ConfigError(f"{name} is {value!r}.", field=name, fix="give a whole number of seconds >= 1.")
    if not (isinstance(pool_size, int) and 0 <= pool_size <= 8):
        raise ConfigError(f"--pool-size is {pool_size!r}.", field="--pool-size",
                          fix="give 0 (a kernel per page load) up to 8 preheated kernels.")
    if port is None:
        port = free_port()
    elif not 1 <= port <= 65535:
        raise ConfigError(f"port {port} is out of range.", field="--port", fix="give a port in 1..65535.")
    elif _listening(HOST, port):
        raise ConfigError(f"port {port} on {HOST} is already in use.", field="--port",
                          fix="choose another port, or leave out --port to pick a free one.")
    # Voila's log goes to a named file (never a pipe that fills): its last line is shown if Voila fails to
    # start, and its path is printed, so a page that hangs can be explained from the log.
    log_path = Path(log_path) if log_path is not None else default_log_path(port)
    try:
        log = open(log_path, "w+", encoding="utf-8")  # noqa: SIM115 (lives as long as Voila; closed by stop())
    except OSError as exc:
        raise ConfigError(f"cannot write the log '{log_path}': {exc.strerror}.", field="--log",
                          fix="give a file in a folder you can write to.") from None
    proc = subprocess.Popen(voila_command(notebook, port, cull_idle_s=cull_idle_s, cull_interval_s=cull_interval_s,
                                          pool_size=pool_size),
                            cwd=notebook.parent, start_new_session=True, env=voila_env(),
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    proc.log = log  # type: ignore[attr-defined]
    proc.log_path = log_path  # type: ignore[attr-defined]
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
    proc, url = start_dashboard(args.port, cull_idle_s=args.cull_idle, cull_interval_s=args.cull_interval,
                                pool_size=args.pool_size, log_path=args.log)
    # Stopped with SIGTERM (a service manager, a test): unwind so ``finally`` stops Voila too.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        print(f"workbench dashboard: serving at {url} (Ctrl-C to stop); Voila's log: {proc.log_path}", flush=True)
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
    p.add_argument("--cull-idle", type=float, default=CULL_IDLE_S, metavar="SECONDS",
                   help="stop a kernel whose page is gone after this many idle seconds (default %(default)g)")
    p.add_argument("--cull-interval", type=float, default=CULL_INTERVAL_S, metavar="SECONDS",
                   help="how often to look for such kernels (default %(default)g)")
    p.add_argument("--pool-size", type=int, default=POOL_SIZE, metavar="N",
                   help="kernels kept ready with the dashboard already run, so a page renders at once; "
                        "0: start one per page load (default %(default)s)")
    p.add_argument("--log", default=None, metavar="FILE",
                   help="write Voila's log here (default: workbench-dashboard-PORT.log in the temporary folder)")
    p.set_defaults(func=cmd_dashboard)
