"""What a notebook saved from JupyterLab keeps: its cells, never its outputs or widget state (docs/notebooks.md).

:func:`strip_for_save` is a Jupyter server ``pre_save_hook``; installing the package registers it
(``etc/jupyter/jupyter_server_config.d/workbench.json``, shipped by ``pyproject.toml``), so every
notebook JupyterLab saves in this environment, the paired ``.ipynb`` of this repository included,
when it lies in this checkout, is written as committed: cells and tags, no outputs, no execution counts, no widget state, and
the kernel's ``language_info`` cut to the two fields the committed notebooks carry (its Python
version would otherwise change the file with whoever saves).  The ``.md`` text file jupytext
writes beside it is made from the cells alone, so a save leaves it unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The ``language_info`` fields a saved notebook keeps: jupytext writes ``{code-cell} <pygments_lexer>``.
LANGUAGE_INFO_KEPT = ("name", "pygments_lexer")
#: Per-cell metadata that only records a run (JupyterLab's timing), dropped like the outputs.
RUN_METADATA = ("execution", "ExecuteTime")


def strip_notebook(nb: dict[str, Any]) -> dict[str, Any]:
    """``nb`` (a notebook as a dict, changed in place and returned) without outputs, counts and widget state."""
    metadata = nb.setdefault("metadata", {})
    metadata.pop("widgets", None)  # ipywidgets' saved state: hundreds of kB, and stale once the kernel is gone
    derived = metadata.get("jupytext", {})
    derived.pop("default_lexer", None)  # jupytext sets it when it reads the .md; the .md's fences already say it
    if "jupytext" in metadata and not derived:
        del metadata["jupytext"]
    info = metadata.get("language_info")
    if isinstance(info, dict):
        metadata["language_info"] = {k: info[k] for k in LANGUAGE_INFO_KEPT if k in info}
    for cell in nb.get("cells", []):
        for key in RUN_METADATA:
            cell.get("metadata", {}).pop(key, None)
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return nb


def checkout_root() -> Path | None:
    """The repository this package runs from (an editable install: it holds ``jupytext.toml``), else None."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "jupytext.toml").is_file() and (root / "notebooks").is_dir() else None


def strip_for_save(model: dict[str, Any], path: str = "", contents_manager: Any = None, **_: Any) -> None:
    """Jupyter server ``pre_save_hook``: a notebook of this checkout is stripped (:func:`strip_notebook`).

    Notebooks elsewhere (a user's own, saved in the same environment) are left as JupyterLab sends them.
    """
    root = checkout_root()
    if root is None or model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    os_path = Path(contents_manager._get_os_path(path)) if hasattr(contents_manager, "_get_os_path") else Path(path)
    if os_path.resolve().is_relative_to(root):
        strip_notebook(model["content"])
