"""Where the shipped data lives, in a source checkout and in an installed wheel."""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def data_dir() -> Path:
    """The folder holding ``traces/`` and ``presets/``.

    A wheel carries the repository's ``data/`` as ``workbench/_data``; an
    editable install reads the repository's ``data/`` directly.
    """
    packaged = Path(__file__).resolve().parent / "_data"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "data"


def repo_root() -> Path | None:
    """The repository root in a source checkout, else ``None``."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None
