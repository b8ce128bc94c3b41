"""Sphinx configuration of the documentation site (scripts/docs.sh builds it into build/site/).

The source folder is the repository root, so the README, docs/ and the notebooks are
read where they live (no copies, no symlinks); ``include_patterns`` names what is part
of the site. Everything the pages load is served from the site itself: MathJax comes
from the ``sphinx-mathjax-offline`` package, plotly.js from the ``plotly`` package,
and the notebooks are executed with a Plotly renderer that neither embeds nor fetches
plotly.js (``site_kernels.py``). Executions are cached by code in build/site-work/: the
test suite's nbval run fills the cache (``site/nbval_cache.py``), and MyST-NB executes
only what the cache lacks.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "site"))

import site_kernels  # noqa: E402
import workbench  # noqa: E402

BUILD = site_kernels.WORK

project = "LLM inference scheduling workbench"
author = "the workbench authors"
copyright = "the workbench authors, MIT licence"
version = release = workbench.__version__

# The front page is index.md at the repository root and the API reference docs/api.md, so the site's pages
# sit at build/site/index.html and build/site/docs/api.html (no folder named site/ inside the site, and no
# redirecting page in front of it).
root_doc = "index"
include_patterns = ["index.md", "README.md", "docs/*.md", "docs/generated/*.rst", "notebooks/*.ipynb",
                    "notebooks/solutions/*.ipynb"]
# Pruned while walking the repository root (a .venv there holds thousands of files).
exclude_patterns = [".*", "**/.ipynb_checkpoints", "build", "dist", "src", "tests", "benchmarks", "fuzz",
                    "data", "scripts", "results", "runs", "node_modules", "site"]

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
]

# -- MyST and the notebooks ------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
# The .ipynb files are the documents (their links to each other resolve); each is executed
# once and cached by its code (jupyter-cache), so an unchanged notebook is not executed again.
nb_execution_mode = os.environ.get("WORKBENCH_SITE_EXECUTION", "cache")
nb_execution_cache_path = str(site_kernels.CACHE)
nb_execution_timeout = 300
nb_execution_raise_on_error = True  # a notebook that fails fails the build
nb_execution_show_tb = True
nb_merge_streams = True
nb_ipywidgets_js = {}  # widgets need a kernel: the site says so instead of loading a widget manager
nb_render_markdown_format = "myst"

# -- the API reference -----------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "ignore-module-all": True}
autosummary_ignore_module_all = True
templates_path = [str(ROOT / "site" / "_templates")]  # absolute: autosummary joins it to the source folder
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
autoclass_content = "both"
# Broken cross-references inside the package fail the build (-W); names from other projects
# cannot resolve offline (no intersphinx), so only they are let through.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(pd|pandas|np|numpy|go|plotly|pyomo|pyo|dask|distributed|ipywidgets|w|widgets|pa|pyarrow|"
               r"highspy|tqdm|gymnasium|gym|stable_baselines3|torch|argparse|collections|typing|pathlib|datetime|concurrent|enum|os|io|json|"
               r"dataclasses|types|asyncio|subprocess|threading|abc|functools)(\..*)?"),
    (r"py:class", r"(Path|DataFrame|Series|Index|ndarray|Generator|Figure|FigureWidget|Callable|Iterable|"
                  r"Iterator|Mapping|Sequence|Any|Self|TypeAlias|Literal|ArrayLike|NDArray|ConcreteModel|"
                  r"Client|Namespace|ArgumentParser|_SubParsersAction|Widget|DOMWidget|Enum|datetime|"
                  r"NoneType|ellipsis|Dtype|Axes|object|optional)"),
]
suppress_warnings = ["myst.header"]  # the design notes start at ## in places; that is their business

# -- HTML ------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "LLM inference scheduling workbench"
# MathJax 3 from the sphinx-mathjax-offline package (its files, not its extension, which is not
# declared safe for parallel builds), served as _static/mathjax/: no CDN.
MATHJAX = Path(importlib.util.find_spec("sphinx-mathjax-offline").submodule_search_locations[0]) / "static"
mathjax_path = "mathjax/tex-chtml.js"
html_static_path = ["_static", str(BUILD / "static"), str(MATHJAX)]
html_js_files = ["plotly.min.js"]
html_css_files = ["site.css"]
# Without a default, a first visit reads an empty mode from localStorage and the theme logs
# "Got invalid theme mode" on every page; light matches the figures' white template.
html_context = {"default_mode": "light"}
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "use_download_button": True,
}
html_last_updated_fmt = None
html_copy_source = True  # the download button gives the page's .ipynb (or .md), to open and run
html_show_sourcelink = False


def offline_assets() -> None:
    """Kernels that draw Plotly figures for this site; plotly.js from the plotly package into _static."""
    import plotly

    os.environ["IPYTHONDIR"] = str(site_kernels.kernel_profile())  # the kernels MyST-NB starts inherit it
    static = BUILD / "static"
    static.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", static / "plotly.min.js")


offline_assets()

WIDGET_VIEW = re.compile(r'<script type="application/vnd\.jupyter\.widget-view\+json">')


def widgets_need_a_kernel(app, doctree, docname) -> None:
    """Replace each widget output (empty without a kernel) by a note that says where it runs."""
    from docutils import nodes

    for raw in list(doctree.findall(nodes.raw)):
        if WIDGET_VIEW.search(raw.astext()):
            note = nodes.paragraph(classes=["widget-note"])
            note += nodes.Text("Interactive widget: open this notebook in JupyterLab to use it "
                               "(pip install -e \".[notebooks]\"; jupyter lab notebooks/).")
            raw.replace_self(note)


def resolve_short_names(app, env, node, contnode):
    """Resolve a reference the package's docstrings write by the name the module imports.

    ``:class:`Schedule``` inside ``workbench.engine.chunked``, or ``:func:`workbench.offline.assign```
    (re-exported from ``workbench.offline.binpacking``), name one documented object: the one whose
    full name ends with that name, preferring the referring module's subpackage. A name of an
    undocumented attribute of the referring module or class (a constant without a doc comment, a
    method without a docstring) is shown
    without a link. Anything else (a name that exists nowhere, or is ambiguous) stays unresolved
    and fails the build (nitpicky, -W).
    """
    import importlib

    from sphinx.util.nodes import make_refnode

    if node.get("refdomain") != "py":
        return None
    written = node["reftarget"].lstrip("~.")
    if "." in written and not written.startswith("workbench."):
        return None
    package, _, short = written.rpartition(".")
    domain = env.get_domain("py")
    kinds = set(domain.objtypes_for_role(node["reftype"]) or ())
    candidates = [(name, obj) for name, obj in domain.objects.items()
                  if obj.objtype in kinds and not obj.aliased and name.endswith("." + short)
                  and (not package or name.startswith(package + "."))]
    here = node.get("py:module") or ""
    if len(candidates) > 1:
        subpackage = ".".join(here.split(".")[:2])
        candidates = [(n, o) for n, o in candidates if subpackage and n.startswith(subpackage + ".")]
    if len(candidates) == 1:
        name, obj = candidates[0]
        return make_refnode(app.builder, node["refdoc"], obj.docname, obj.node_id, contnode, name)
    if not package and here and not candidates:
        try:
            scope = importlib.import_module(here)
        except ImportError:
            return None
        for owner in (scope, getattr(scope, node.get("py:class") or "", None)):
            if owner is not None and hasattr(owner, short):
                return contnode
    return None


def drop_widget_state(app, env):
    """No page carries the widgets' saved state (megabytes for a FigureWidget): they need a kernel."""
    for data in getattr(env, "nb_metadata", {}).values():
        data.get("js_files", {}).pop("ipywidgets_state", None)
    return []


class _NoConfigDump:
    """Drops MyST's and MyST-NB's dumps of their whole configuration (two multi-kilobyte lines per build) from
    the build's log; their warnings and errors still pass."""

    def filter(self, record) -> bool:
        return not (record.levelno == logging.INFO and "v%s:" in str(record.msg))


for _name in ("sphinx.myst_parser.sphinx_ext.main", "sphinx.myst_nb.sphinx_ext"):
    logging.getLogger(_name).addFilter(_NoConfigDump())


def setup(app):
    app.connect("doctree-resolved", widgets_need_a_kernel)
    app.connect("env-updated", drop_widget_state)
    app.connect("missing-reference", resolve_short_names)
