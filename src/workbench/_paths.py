"""Where the shipped data lives, in a source checkout and in an installed wheel."""

from __future__ import annotations

import os
import tempfile
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


def write_atomically(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file beside it, renamed over ``path`` once complete: a reader
    (or a second writer) finds the old file or the new one, never part of one; a failure leaves neither a
    half-written file nor the temporary one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; what is written here is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


#: Size limits of the files a loader reads (bytes).  A trace of 10^7 requests is about 250 MB of CSV;
#: an exported timeline at the export limit (workbench.schedule.estimate) about 1 GB.
MAX_TRACE_BYTES = 2 * 1024**3
MAX_PRESET_BYTES = 1024**2
MAX_SCHEDULE_FILE_BYTES = 4 * 1024**3


def missing_because(path: str | Path, *, folder: bool) -> str:
    """Why ``path`` is not the file (``folder=False``) or folder wanted: 'does not exist', or what it is instead
    (a message saying 'does not exist' for a path that is a file named the wrong cause)."""
    path = Path(path)
    if path.is_dir():
        return "is a folder, not a file"
    if path.exists():
        return "is a file, not a folder" if folder else "is not a regular file"
    return "does not exist"


def input_file(path: str | Path, *, what: str, field: str, max_bytes: int, error: type | None = None,
               fix: str = "check the path.") -> Path:
    """``path`` if it names a regular file of at most ``max_bytes``; else ``error`` (one line naming ``field``).

    Every loader (traces, cost-model presets, exported schedules) reads through this, so a FIFO or a
    device (``/dev/zero``) is refused before anything opens it (reading one would hang or never
    end), as are folders, over-long names and files above the limit.  ``error`` defaults to
    :class:`workbench.errors.ConfigError`.
    """
    import os
    import stat

    from workbench.errors import ConfigError

    error = error or ConfigError
    path = Path(path)
    shown = str(path) if len(str(path)) <= 80 else str(path)[:60] + "..." + str(path)[-17:]
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} '{shown}' does not exist.", field=field, fix=fix) from None
    except OSError as exc:  # a name too long, a component that is not a folder, no permission, a loop
        raise error(f"{what} '{shown}' cannot be opened ({exc.strerror or type(exc).__name__}).", field=field,
                    fix=fix) from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{what} '{shown}' is a folder, not a file.", field=field, fix=fix)
    if not stat.S_ISREG(info.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(info.st_mode) else
                "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else
                "a socket" if stat.S_ISSOCK(info.st_mode) else "not a regular file")
        raise error(f"{what} '{shown}' is {kind}; only regular files are read.", field=field,
                    fix="save the data to a file first and give its path.")
    if info.st_size > max_bytes:
        raise error(f"{what} '{shown}' is {info.st_size:,} bytes, above the limit of {max_bytes:,}.", field=field,
                    fix="give a smaller file (split the trace, or sample it with workbench.workload.trace.sample_trace).")
    return path


@cache
def exact_floats() -> dict[str, str]:
    """``read_csv`` options that parse every float exactly as it is written.

    pandas 3 parses floats exactly; the fast parser of pandas 2 can miss by an ulp, and a schedule or
    trace read back must hold the very times it was written with (``Schedule.read`` of CSV and of
    Parquet must agree, and a validator compares durations to a few ulps).
    """
    import pandas as pd

    return {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}


def read_json_object(path: str | Path, *, field: str, max_bytes: int, fix: str, size_fix: str | None = None) -> dict:
    """The JSON object in ``path`` (at most ``max_bytes``; a byte-order mark allowed), else a ConfigError naming
    ``field``: the file too large, not JSON, or JSON that is not an object."""
    import json

    from workbench.errors import ConfigError

    path = Path(path)
    if path.stat().st_size > max_bytes:
        raise ConfigError(f"{path} is over {max_bytes} bytes.", field=field, fix=size_fix or fix)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not JSON: {exc}.", field=field, fix=fix) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object.", field=field, fix=fix)
    return data
