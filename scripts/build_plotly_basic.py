"""Build the dashboard's Plotly widget with plotly.js's *basic* bundle (bar, pie and scatter traces only).

    python scripts/build_plotly_basic.py          # needs Node.js and npm, and the npm registry

``go.FigureWidget`` ships a 5 MB front end: Plotly's anywidget code with the whole of plotly.js (maps, 3-D,
WebGL). The dashboard draws a Gantt chart (bars and scatter lines), so it serves this 1.3 MB build
instead, which compiles and runs in about a quarter of the time on a first visit (docs/notebooks.md).
The build: plotly.py's own widget source (``scripts/plotly_widget/widget.ts``, vendored) bundled by esbuild
exactly as plotly.py bundles it (``--bundle --format=esm --minify``), with ``plotly.js`` aliased to
``plotly.js/dist/plotly-basic.min`` of the plotly.js version the installed plotly bundles. It writes
``src/workbench/viz/plotly_basic/widgetbundle-basic.js`` and ``provenance.json`` (versions, sizes, sha256),
which the dashboard reads: it serves this build only to the plotly version it was built for (another
version gets its own full bundle) and only for figures whose traces are all of the types listed there.
Run it again after raising plotly's version; nothing runs it in CI (the output is committed).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "scripts" / "plotly_widget"
OUT = ROOT / "src" / "workbench" / "viz" / "plotly_basic"
#: plotly.py's js/package.json pins of the widget's dependencies and its bundler.
LODASH, LUMINO, ESBUILD = "4.17.21", "2.4.0", "0.23.1"
#: The trace types plotly.js's basic bundle registers (plotly.js/lib/index-basic.js; scatter is in core).
TRACES = ["bar", "pie", "scatter"]


def installed_versions() -> tuple[str, str]:
    import plotly

    head = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text()[:200]
    found = re.search(r"plotly\.js v(\d+\.\d+\.\d+)", head)
    if found is None:
        raise SystemExit("cannot read the plotly.js version from plotly's package_data/plotly.min.js")
    return plotly.__version__, found.group(1)


def main() -> None:
    if shutil.which("npm") is None:
        raise SystemExit("npm is needed (Node.js): install it, then run this again")
    plotly_version, plotly_js = installed_versions()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("widget.ts", "tsconfig.json"):
            shutil.copy(SOURCE / name, work / name)
        (work / "package.json").write_text('{"name": "workbench-plotly-basic", "private": true}\n')
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", f"plotly.js@{plotly_js}",
                        f"lodash-es@{LODASH}", f"@lumino/widgets@{LUMINO}", f"esbuild@{ESBUILD}"],
                       cwd=work, check=True)
        registered = (work / "node_modules" / "plotly.js" / "lib" / "index-basic.js").read_text()
        listed = sorted({"scatter", *re.findall(r"require\('\./(\w+)'\)", registered)} - {"calendars", "core"})
        if listed != TRACES:
            raise SystemExit(f"plotly.js {plotly_js}'s basic bundle registers {listed}, not {TRACES}: update TRACES")
        bundle = OUT / "widgetbundle-basic.js"
        subprocess.run(["npx", "esbuild", "--bundle", "--alias:plotly.js=plotly.js/dist/plotly-basic.min",
                        "--format=esm", "--minify", f"--outfile={bundle}", "widget.ts"], cwd=work, check=True)
    data = bundle.read_bytes()
    provenance = {"plotly": plotly_version, "plotly.js": plotly_js, "bundle": "plotly.js/dist/plotly-basic.min",
                  "traces": TRACES, "widget_source": "plotly/plotly.py js/src/widget.ts at 18f70acc5e",
                  "esbuild": ESBUILD, "lodash-es": LODASH, "@lumino/widgets": LUMINO, "bytes": len(data),
                  "sha256": hashlib.sha256(data).hexdigest()}
    (OUT / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    print(f"wrote {bundle.relative_to(ROOT)} ({len(data):,} bytes) for plotly {plotly_version} "
          f"(plotly.js {plotly_js}), traces {', '.join(TRACES)}", file=sys.stdout)


if __name__ == "__main__":
    main()
