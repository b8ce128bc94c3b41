"""The notebooks as files: each ``.ipynb`` is paired with a MyST Markdown text file (jupytext).

These tests read sources only, never outputs or execution metadata, so running a
notebook in JupyterLab and saving it (with or without its outputs) changes nothing
they look at. nbval, configured in ``pyproject.toml``, runs the notebooks themselves;
what a notebook checks lives in its code as assertions (docs/notebooks.md).
"""

from __future__ import annotations

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
