"""The kernels that execute notebooks for the documentation site, and the site's execution cache.

Shared by ``site/conf.py`` (MyST-NB executes what the cache lacks) and
``site/nbval_cache.py`` (nbval's run of the notebooks fills the cache, so that the site
reuses those executions instead of running every notebook a second time).

A site kernel draws a Plotly figure as HTML that calls the page's own plotly.js
(``_static/plotly.min.js``, copied from the plotly package): no CDN, and plotly.js is not
embedded in every page. It does so through an IPython startup file in a profile folder
under the build folder, selected with ``IPYTHONDIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("WORKBENCH_SITE_WORK", ROOT / "build" / "site-work"))
CACHE = WORK / "jupyter-cache"
IPYTHONDIR = WORK / "ipython"

STARTUP = '''\
# Written by site/site_kernels.py: the documentation site's kernels draw Plotly figures as HTML
# that calls the page's own plotly.js, never a CDN.
import plotly.io as _pio
from plotly.io._base_renderers import MimetypeRenderer as _MimetypeRenderer


class _SiteRenderer(_MimetypeRenderer):
    def to_mimebundle(self, fig_dict):
        html = _pio.to_html(fig_dict, include_plotlyjs=False, include_mathjax=False, full_html=False,
                            default_width="100%", config={"responsive": True})
        return {"text/html": html}


_pio.renderers["workbench_site"] = _SiteRenderer()
_pio.renderers.default = "workbench_site"
'''


def kernel_profile() -> Path:
    """Write the site kernels' IPython profile; return the folder to put in ``IPYTHONDIR``."""
    startup = IPYTHONDIR / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    path = startup / "00-plotly-site.py"
    if not path.is_file() or path.read_text(encoding="utf-8") != STARTUP:
        path.write_text(STARTUP, encoding="utf-8")
    return IPYTHONDIR


def cache_executed(path: Path, nb) -> None:
    """Store an executed notebook in the site's cache, keyed (by jupyter-cache) on its code cells."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    CACHE.parent.mkdir(parents=True, exist_ok=True)
    get_cache(str(CACHE)).cache_notebook_bundle(CacheBundleIn(nb, str(path), data={"executed_by": "nbval"}),
                                                check_validity=False, overwrite=True)

