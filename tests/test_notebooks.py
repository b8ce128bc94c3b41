"""The notebooks as files: each ``.ipynb`` is paired with a MyST Markdown text file (jupytext).

These tests read sources only, never outputs or execution metadata, so running a
notebook in JupyterLab and saving it (with or without its outputs) changes nothing
they look at. nbval, configured in ``pyproject.toml``, runs the notebooks themselves;
what a notebook checks lives in its code as assertions (docs/notebooks.md).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext", reason="jupytext is in the dev and notebooks extras")

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "src" / "workbench" / "viz" / "dashboard.ipynb"
CHECKPOINTS = ".ipynb_checkpoints"
# An executed notebook with its Plotly figures weighs megabytes; without outputs the largest is ~40 kB.
MAX_COMMITTED_NOTEBOOK_BYTES = 200_000


def without_checkpoints(paths) -> list[Path]:
    return sorted(p for p in paths if CHECKPOINTS not in p.relative_to(ROOT).parts)


def notebook_paths() -> list[Path]:
    return without_checkpoints((ROOT / "notebooks").rglob("*.ipynb")) + [DASHBOARD]


def text_paths() -> list[Path]:
    return without_checkpoints((ROOT / "notebooks").rglob("*.md")) + [DASHBOARD.with_suffix(".md")]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def cells(path: Path) -> list[tuple[str, str, tuple[str, ...]]]:
    """(type, source, tags) of every cell: what a pair must share. Outputs and other metadata are ignored."""
    nb = jupytext.read(path)
    return [(c.cell_type, c.source, tuple(sorted(c.metadata.get("tags", ())))) for c in nb.cells]


def fix(path: Path) -> str:
    return (f"edit notebooks in JupyterLab (jupytext saves both files), or after editing either file run "
            f"`jupytext --sync {rel(path.with_suffix('.md'))}` (the newer file of the pair wins)")


@pytest.mark.parametrize("path", notebook_paths(), ids=rel)
def test_every_notebook_has_its_text_file(path):
    assert path.with_suffix(".md").is_file(), (
        f"{rel(path)} has no text pair {path.with_suffix('.md').name}: run `jupytext --sync {rel(path)}` "
        "(jupytext.toml pairs every notebook with MyST Markdown)")


@pytest.mark.parametrize("path", text_paths(), ids=rel)
def test_every_text_file_has_its_notebook(path):
    assert path.with_suffix(".ipynb").is_file(), (
        f"{rel(path)} has no notebook {path.with_suffix('.ipynb').name}: run `jupytext --sync {rel(path)}`; "
        "notebooks/ holds paired notebooks only")
    header = path.read_text(encoding="utf-8").split("\n---\n", 1)[0]
    assert header.startswith("---\njupytext:") and "format_name: myst" in header, (
        f"{rel(path)} does not start with a jupytext MyST header: run `jupytext --sync {rel(path.with_suffix('.ipynb'))}`")


@pytest.mark.parametrize("path", notebook_paths(), ids=rel)
def test_pairs_hold_the_same_cells(path):
    text = path.with_suffix(".md")
    if not text.is_file():
        pytest.skip(f"{rel(text)} is missing (reported by test_every_notebook_has_its_text_file)")
    ours, theirs = cells(path), cells(text)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            what = "cell type" if a[0] != b[0] else "tags" if a[1] == b[1] else "source"
            first = a[1].splitlines()[0] if a[1] else ""
            pytest.fail(f"{rel(path)} and {text.name} differ in the {what} of cell {i} ({a[0]}, {first[:50]!r}): "
                        + fix(path), pytrace=False)
    if len(ours) != len(theirs):
        pytest.fail(f"{rel(path)} has {len(ours)} cells and {text.name} has {len(theirs)}: " + fix(path),
                    pytrace=False)


@pytest.mark.parametrize("path", notebook_paths(), ids=rel)
def test_notebooks_follow_the_conventions(path):
    code = [source for kind, source, _ in cells(path) if kind == "code"]
    assert code and code[0].startswith(("# Parameters", "import", "from")), (
        f"{rel(path)}: the first code cell is the parameters cell (or the imports)")
    for source in code:
        # A stored output is lost when a notebook is saved without it; a check lives in the code instead.
        assert "NBVAL_CHECK_OUTPUT" not in source, (
            f"{rel(path)}: a cell relies on its stored output ({source.splitlines()[0]!r}); "
            "write the expected values as an assertion in a cell tagged remove-cell (docs/notebooks.md)")


def test_committed_notebooks_are_small():
    """What is committed, not the working copy: a user's executed, saved notebook is theirs until committed."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing committed to measure")
    listing = subprocess.run(["git", "ls-tree", "-r", "-l", "HEAD", "--", "notebooks", rel(DASHBOARD)],
                             cwd=ROOT, capture_output=True, text=True)
    if listing.returncode != 0:
        pytest.skip(f"git ls-tree failed: {listing.stderr.strip()}")
    sizes = {}
    for line in listing.stdout.splitlines():
        meta, name = line.split("\t", 1)
        if name.endswith(".ipynb"):
            sizes[name] = int(meta.split()[3])
    assert sizes, "no notebook is committed under notebooks/"
    large = {name: size for name, size in sizes.items() if size > MAX_COMMITTED_NOTEBOOK_BYTES}
    assert not large, (f"committed notebooks over {MAX_COMMITTED_NOTEBOOK_BYTES} bytes: {large}; commit them "
                       "without outputs (JupyterLab: Edit > Clear Outputs of All Cells, then save)")


def test_checkpoint_folders_are_never_collected(pytestconfig):
    assert CHECKPOINTS in pytestconfig.getini("norecursedirs")
    assert not any(CHECKPOINTS in p.parts for p in notebook_paths() + text_paths())
    ignored = subprocess.run(["git", "check-ignore", "-q", f"notebooks/{CHECKPOINTS}/00-tour-checkpoint.ipynb"],
                             cwd=ROOT) if shutil.which("git") and (ROOT / ".git").exists() else None
    if ignored is not None:
        assert ignored.returncode == 0, f"{CHECKPOINTS}/ must be in .gitignore"


def _as_a_kernel_ran_it(nb) -> None:
    """What running a notebook in JupyterLab adds before a save: the kernel's language_info, a Plotly figure's
    JSON per code cell, execution counts and timings, and ipywidgets' saved state."""
    nb.metadata["language_info"] = {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                                    "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
                                    "pygments_lexer": "ipython3", "version": "3.11.9"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"w": {"x": "0" * 300_000}},
                                                                            "version_major": 2, "version_minor": 0}}
    for k, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.execution_count = k + 1
        cell.metadata["execution"] = {"iopub.execute_input": "2026-12-07T10:00:00.000Z"}
        cell.outputs = [{"output_type": "display_data", "metadata": {},
                         "data": {"application/vnd.plotly.v1+json": {"data": [{"x": list(range(5_000))}]},
                                  "text/plain": ["Figure"]}}]


@pytest.mark.parametrize("name", ["notebooks/00-tour.ipynb", "notebooks/08-fidelity.ipynb",
                                  "src/workbench/viz/dashboard.ipynb"])
def test_a_jupyterlab_save_leaves_both_files_as_committed(name, tmp_path, monkeypatch):
    """Issue 28: a save rewrote every ```{code-cell} fence to ```{code-cell} ipython3 and grew the .ipynb from
    11 kB to 1.15 MB.  The save goes through jupytext's contents manager with the package's pre-save hook, as
    in `jupyter lab` once the package is installed (jupyter-config/ -> etc/jupyter/jupyter_server_config.d)."""
    import json

    from jupytext import TextFileContentsManager
    from traitlets.config import Config

    import workbench._jupyter as hook

    for path in (ROOT / name, (ROOT / name).with_suffix(".md")):
        (tmp_path / path.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tmp_path / path.relative_to(ROOT))
    shutil.copy(ROOT / "jupytext.toml", tmp_path / "jupytext.toml")
    monkeypatch.setattr(hook, "checkout_root", lambda: tmp_path)
    server_config = json.loads((ROOT / "jupyter-config" / "jupyter_server_config.d" / "workbench.json").read_text())
    manager = TextFileContentsManager(root_dir=str(tmp_path), config=Config(server_config))
    model = manager.get(name)
    _as_a_kernel_ran_it(model["content"])
    manager.save(model, name)
    saved = tmp_path / name
    assert saved.with_suffix(".md").read_text() == (ROOT / name).with_suffix(".md").read_text(), (
        "a save changed the text file: " + fix(ROOT / name))
    assert saved.read_text() == (ROOT / name).read_text(), f"{name} is not saved as committed"


def test_the_save_hook_leaves_notebooks_outside_the_checkout_alone(tmp_path):
    import nbformat

    import workbench._jupyter as hook

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1", outputs=[{"output_type": "stream",
                                                                                   "name": "stdout", "text": "1"}])])
    model = {"type": "notebook", "content": nb}
    hook.strip_for_save(model, path=str(tmp_path / "mine.ipynb"))
    assert model["content"].cells[0].outputs, "a user's own notebook keeps its outputs"


def test_installing_the_package_registers_the_save_hook():
    import importlib
    import json
    import tomllib

    shared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"][
        "shared-data"]
    source = next(k for k, v in shared.items() if v == "etc/jupyter/jupyter_server_config.d/workbench.json")
    hook = json.loads((ROOT / source).read_text())["ContentsManager"]["pre_save_hook"]
    module, _, function = hook.rpartition(".")
    assert callable(getattr(importlib.import_module(module), function))


def test_jupytext_toml_names_tests_that_exist():
    named = re.findall(r"tests/[\w/]+\.py", (ROOT / "jupytext.toml").read_text())
    assert named and all((ROOT / n).is_file() for n in named), named
