"""The one schedule schema every method produces (MODEL.md section 9).

A :class:`Schedule` is three tables: the per-iteration ``timeline``, the
per-request ``requests`` table, and ``metrics``.  The simulator, the
heuristics and the exact MIP all return one, so one Gantt function, one
metrics function and one validator serve them all.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench._paths import MAX_SCHEDULE_FILE_BYTES, exact_floats, input_file
from workbench._version import __version__
from workbench.costmodel.linear import LinearCostModel
from workbench.errors import ConfigError, ScheduleFileError, UnreadableFileError
from workbench.schedule.members import RunMembers
from workbench.schedule.metrics import batch_sizes_array, gap, schedule_metrics

TIMELINE_COLUMNS = ("client", "iteration", "kind", "start_s", "end_s", "n_requests", "tokens", "request_ids")
#: Written only when present: the prompt pieces of ``mixed`` rows (chunked prefill) and, with paged KV,
#: of prefill rows too, with the tokens of each prompt already cached before the piece (MODEL.md section 11).
OPTIONAL_TIMELINE_COLUMNS = ("prefill_ids", "prefill_tokens", "prefill_prior")
REQUEST_COLUMNS = ("request_id", "client", "input_tokens", "output_tokens", "arrival_s",
                   "prefill_start_s", "first_token_s", "finish_s")
#: Written only when present: the output length the schedulers were told (``simulate(predictor=...)``) and,
#: with paged KV, each request's preemptions, recomputed prompt tokens and prefix-cache hits.
OPTIONAL_REQUEST_COLUMNS = ("predicted_output_tokens", "preemptions", "recomputed_tokens", "cached_tokens",
                            "prefill_client")
FILES = ("timeline.csv", "requests.csv", "metrics.json")
#: Pooled fleets (MODEL.md section 9, "Pools and KV transfers"): one row per KV-cache transfer, written as
#: ``transfers.csv`` (or ``transfers.parquet``) beside the three files only when the fleet has pools.
TRANSFER_COLUMNS = ("request_id", "from_client", "to_client", "start_s", "end_s", "tokens", "bytes")
TRANSFER_FILES = {"csv": "transfers.csv", "parquet": "transfers.parquet"}
PARQUET_TRANSFER_TYPES = {"from_client": "int", "to_client": "int", "start_s": "float", "end_s": "float",
                          "tokens": "int", "bytes": "float"}
#: Written into every output folder; only folders holding it (or empty ones) are ever replaced.
OUTPUT_MARKER = ".workbench-output"


class Schedule:
    """A complete schedule: per-iteration timeline, per-request times, metrics.

    A schedule from the simulator holds its decode *runs* (consecutive decode
    iterations over the same requests, see :meth:`compact`) and expands the
    per-iteration ``timeline`` only when it is asked for, with the very
    arithmetic the simulator used; a schedule read from files, or built by
    the MIP, holds the timeline itself.
    """

    def __init__(self, timeline: pd.DataFrame | None = None, requests: pd.DataFrame | None = None,
                 metrics: dict[str, Any] | None = None, runs: pd.DataFrame | None = None,
                 run_ids: RunMembers | Callable[[], Any] | None = None, transfers: pd.DataFrame | None = None,
                 expand_timeline: Callable[[], pd.DataFrame] | None = None) -> None:
        if timeline is None and runs is None and expand_timeline is None:
            raise ValueError("a Schedule needs a timeline or runs")
        self._timeline = timeline
        self._expand = expand_timeline  # builds the timeline on first use (a simulator's text columns)
        #: Pooled fleets only: one row per KV transfer (TRANSFER_COLUMNS); None otherwise.
        self.transfers = transfers
        self.requests = requests
        self.metrics = metrics if metrics is not None else {}
        self._runs = runs
        self._run_ids = run_ids

    @property
    def runs(self) -> pd.DataFrame | None:
        """The simulator's runs with their ``request_ids``, listed on first use (it costs one pass)."""
        if self._runs is not None and "request_ids" not in self._runs.columns and self._run_ids is not None:
            self._runs["request_ids"] = self._run_ids()
        return self._runs

    def runs_without_ids(self) -> pd.DataFrame | None:
        """The runs as they are, without forcing the request ids (for metrics and bare Gantt bars)."""
        return self._runs

    @property
    def timeline(self) -> pd.DataFrame:
        """One row per iteration (MODEL.md section 9), expanded from the runs on first use."""
        if self._timeline is None and self._expand is not None:
            self._timeline, self._expand = self._expand(), None
        if self._timeline is None:
            from workbench.schedule.estimate import check_rows

            check_rows(int(self._runs["iterations"].sum()))  # refuse before allocating, not after
            self._timeline = expand_runs(self.runs, self.metrics)
        return self._timeline

    @timeline.setter
    def timeline(self, value: pd.DataFrame) -> None:
        self._timeline = value

    def __repr__(self) -> str:
        m = self.metrics
        return (f"Schedule(policy={m.get('policy')!r}, clients={m.get('clients')}, requests="
                f"{0 if self.requests is None else len(self.requests)}, makespan_s={m.get('makespan_s')})")

    @property
    def makespan_s(self) -> float:
        return float(self.metrics["makespan_s"])

    @property
    def policy(self) -> str:
        return str(self.metrics.get("policy", "?"))

    @property
    def clients(self) -> int:
        return int(self.metrics["clients"])

    def compact(self) -> pd.DataFrame:
        """The timeline for display: consecutive decode iterations with the same requests merged.

        One row per prefill and per run of decodes between two batch changes,
        with ``iterations`` (how many were merged), ``tokens`` summed and
        ``first_iteration``/``last_iteration``.  Derived from the timeline, never a
        replacement for it.
        """
        if self._runs is not None:
            return self.runs
        return compact_timeline(self.timeline)

    def write(self, out_dir: str | Path, format: str = "csv") -> Path:
        """Write the timeline, the requests (``format``: csv or parquet) and ``metrics.json`` into ``out_dir``, atomically."""
        check_format(format)
        with atomic_dir(out_dir) as tmp:
            self.write_into(tmp, format=format)
        return Path(out_dir)

    def write_into(self, folder: Path, format: str = "csv") -> None:
        """The files of :meth:`write` into an existing folder, the timeline streamed in chunks."""
        write_schedule_files(self, Path(folder), format)

    @classmethod
    def read(cls, folder: str | Path) -> Schedule:
        """Read a schedule written by :meth:`write` (or by anyone following MODEL.md section 9).

        The folder holds ``timeline`` and ``requests`` either as CSV or as Parquet (see
        :func:`schedule_format`) and ``metrics.json``.
        """
        folder = Path(folder)
        fmt = schedule_format(folder)
        metrics = read_metrics(folder)
        requests = read_requests(folder, fmt)
        if fmt == "csv":
            try:
                timeline = pd.read_csv(folder / "timeline.csv", dtype=_CSV_TEXT_COLUMNS, keep_default_na=False,
                                       **exact_floats())
            except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
                raise ScheduleFileError(f"cannot read the schedule in '{folder}': {exc}.") from None
        else:
            timeline = pd.concat(list(iter_timeline_file(folder, fmt)), ignore_index=True)
        if timeline.empty:  # every request has an iteration: nothing downstream can draw or sum no rows
            raise ScheduleFileError(f"timeline.{fmt} in '{folder}' holds no iterations.", field=f"timeline.{fmt}",
                                    fix="write the schedule again (workbench simulate --out ...).")
        return cls(timeline=timeline, requests=requests, metrics=metrics, transfers=read_transfers(folder, fmt))


def read_transfers(folder: str | Path, fmt: str | None = None) -> pd.DataFrame | None:
    """The transfers table of a schedule folder (pooled fleets), or None where the folder has none."""
    folder = Path(folder)
    fmt = fmt or schedule_format(folder)
    path = folder / TRANSFER_FILES[fmt]
    if not path.exists():
        return None
    input_file(path, what="schedule file", field=path.name, max_bytes=MAX_SCHEDULE_FILE_BYTES,
               error=UnreadableFileError, fix="transfers.csv is a regular file written by workbench.")
    if fmt == "parquet":
        return _frame_from_arrow(_read_parquet(path, TRANSFER_COLUMNS, PARQUET_TRANSFER_TYPES))
    try:
        frame = pd.read_csv(path, **exact_floats())
        written = pd.read_csv(path, usecols=["request_id"], dtype=str, keep_default_na=False)["request_id"]
        frame["request_id"] = _ids_from_text(written)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise ScheduleFileError(f"cannot read the transfers in '{folder}': {exc}.") from None
    return frame


_CSV_TEXT_COLUMNS = {"request_ids": str, "kind": str, "prefill_ids": str, "prefill_tokens": str,
                     "prefill_prior": str}
PARQUET_FILES = ("timeline.parquet", "requests.parquet", "metrics.json")


class ParquetFileError(ScheduleFileError):
    """A Parquet file of a schedule that cannot be read: truncated, or missing or mistyped columns."""


def schedule_format(folder: str | Path) -> str:
    """``"csv"`` or ``"parquet"``: which files the schedule folder holds.

    A folder with both ``timeline.csv`` and ``timeline.parquet`` is refused rather than guessed at:
    the two may come from different runs (:meth:`Schedule.write` replaces the whole folder, so it never
    leaves both).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ScheduleFileError(f"'{folder}' is not a folder.", fix="give the folder a schedule was written to.")
    has_csv = (folder / "timeline.csv").is_file() or (folder / "requests.csv").is_file()
    has_parquet = (folder / "timeline.parquet").is_file() or (folder / "requests.parquet").is_file()
    if has_csv and has_parquet:
        raise ScheduleFileError(f"'{folder}' holds both CSV and Parquet schedule files.", field="timeline",
                                fix="keep one format in the folder (delete timeline.csv and requests.csv, "
                                    "or timeline.parquet and requests.parquet).")
    fmt = "parquet" if has_parquet else "csv"
    for name in (FILES if fmt == "csv" else PARQUET_FILES):
        if not (folder / name).exists():
            raise ScheduleFileError(f"'{folder}' has no {name}.", field=name,
                                    fix="a schedule folder holds timeline.csv, requests.csv and metrics.json "
                                        "(or timeline.parquet and requests.parquet with --format parquet).")
        # Regular files of bounded size only: a FIFO or /dev/zero named timeline.csv must not hang the reader.
        input_file(folder / name, what="schedule file", field=name, max_bytes=MAX_SCHEDULE_FILE_BYTES,
                   error=UnreadableFileError, fix="a schedule folder holds the regular files timeline.csv, "
                                                "requests.csv and metrics.json.")
    return fmt


def read_metrics(folder: Path) -> dict[str, Any]:
    try:
        metrics = json.loads((Path(folder) / "metrics.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ScheduleFileError(f"cannot read the schedule in '{folder}': {exc}.") from None
    if not isinstance(metrics, dict):
        raise ScheduleFileError("metrics.json is not a JSON object.", field="metrics.json")
    return metrics


def read_requests(folder: Path, fmt: str | None = None) -> pd.DataFrame:
    """The requests table of a schedule folder, in either format."""
    folder = Path(folder)
    fmt = fmt or schedule_format(folder)
    if fmt == "parquet":
        table = _read_parquet(folder / "requests.parquet", REQUEST_COLUMNS, PARQUET_REQUEST_TYPES)
        return _frame_from_arrow(table)
    try:
        requests = pd.read_csv(folder / "requests.csv", **exact_floats())
        if "request_id" in requests.columns:
            # Ids as written, like timeline.csv's request_ids: the text "01", "+1" or "NaN" is an id,
            # not a number (pandas would read "01" and "1" both as 1).
            written = pd.read_csv(folder / "requests.csv", usecols=["request_id"], dtype=str,
                                  keep_default_na=False)["request_id"]
            requests["request_id"] = _ids_from_text(written)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise ScheduleFileError(f"cannot read the schedule in '{folder}': {exc}.") from None
    return requests


def _type_ok(arrow_type, want: str | None) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if want == "int":
        return pa.types.is_integer(arrow_type)
    if want == "float":
        return pa.types.is_floating(arrow_type) or pa.types.is_integer(arrow_type)
    if want == "str":
        return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
    return (pa.types.is_integer(arrow_type) or pa.types.is_string(arrow_type)
            or pa.types.is_large_string(arrow_type))  # request_id: whole numbers or text


def _parquet_schema(path: Path, required, types: dict[str, str]):
    """The file's Arrow schema after checking it is Parquet and holds the named columns, typed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise ParquetFileError(f"{path.name} is not a readable Parquet file ({exc}).", field=path.name,
                               fix="write the schedule again (workbench simulate --format parquet); "
                                   "the file may be truncated.") from None
    missing = [c for c in required if c not in schema.names]
    if missing:
        raise ParquetFileError(f"{path.name} has no column {', '.join(missing)}.", field=missing[0],
                               fix=f"{path.name} holds the columns of MODEL.md section 9.")
    for name in schema.names:
        if (name in required or name in types) and not _type_ok(schema.field(name).type, types.get(name)):
            want = {"int": "integers", "float": "numbers", "str": "text"}.get(types.get(name), "integers or text")
            raise ParquetFileError(f"column {name} of {path.name} is {schema.field(name).type}, not {want}.",
                                   field=name, fix=f"write {name} as {want} (MODEL.md section 9).")
    return schema


def _read_parquet(path: Path, required, types: dict[str, str], columns=None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _parquet_schema(path, required, types)
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise ParquetFileError(f"{path.name} cannot be read ({exc}).", field=path.name,
                               fix="write the schedule again; the file may be truncated.") from None


def _frame_from_arrow(table) -> pd.DataFrame:
    """A DataFrame of an Arrow table, dictionary (categorical) text turned back into plain text."""
    import pyarrow as pa

    arrays = {}
    for name, column in zip(table.column_names, table.columns):
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        arrays[name] = column
    frame = pa.table(arrays).to_pandas() if arrays else pd.DataFrame()
    for name in frame.columns:
        if frame[name].dtype.kind == "O" or isinstance(frame[name].dtype, pd.StringDtype):
            frame[name] = frame[name].fillna("").astype(str)
    return frame


def iter_timeline_file(folder: str | Path, fmt: str | None = None, rows: int = 1 << 18,
                       columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """The timeline of a schedule folder in chunks of at most ``rows`` rows, read as streams.

    CSV with pandas' chunked reader, Parquet row group by row group, so a timeline of
    millions of rows is never held whole.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    fmt = fmt or schedule_format(folder)
    if fmt == "csv":
        try:
            reader = pd.read_csv(folder / "timeline.csv", dtype=_CSV_TEXT_COLUMNS, keep_default_na=False,
                                 chunksize=rows, usecols=columns, **exact_floats())
            with reader:
                yield from reader
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise ScheduleFileError(f"cannot read the schedule in '{folder}': {exc}.") from None
        return
    path = folder / "timeline.parquet"
    _parquet_schema(path, () if columns is not None else TIMELINE_COLUMNS, PARQUET_TIMELINE_TYPES)
    try:
        handle = pq.ParquetFile(path)
        # Row group by row group: ``iter_batches`` keeps what it has read (1.3 GB over the 5M rows of a
        # million requests, against 0.2 GB this way).
        empty = True
        for group in range(handle.metadata.num_row_groups):
            table = handle.read_row_group(group, columns=columns)
            for batch in table.to_batches(max_chunksize=rows):
                empty = False
                yield _frame_from_arrow(pa.Table.from_batches([batch]))
        if empty:  # no rows still has columns, as a CSV of only its header does: readers get a frame
            table = handle.schema_arrow.empty_table()
            yield _frame_from_arrow(table.select(columns) if columns is not None else table)
    except (pa.ArrowException, OSError) as exc:
        raise ParquetFileError(f"timeline.parquet cannot be read ({exc}).", field="timeline.parquet",
                               fix="write the schedule again; the file may be truncated.") from None


def _ids_from_text(ids: pd.Series) -> pd.Series:
    """Integer ids when every id is written as a plain integer (as integer ids are written), else the text
    (the trace loader's rule, :func:`workbench.workload.trace.ids_from_text`)."""
    from workbench.workload.trace import ids_from_text

    return ids_from_text(ids)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    return value


@contextlib.contextmanager
def atomic_dir(out_dir: str | Path, *, writer: dict[str, Any] | None = None, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``out_dir`` only if the block completes.

    A failure leaves ``out_dir`` as it was, so a half-written schedule never
    sits where a finished one is expected.  An existing ``out_dir`` is replaced
    only if it is empty or was written by this function (it holds
    :data:`OUTPUT_MARKER`).  ``writer`` (a command's name and settings, see
    ``workbench.cli._common.output_writer``) is recorded in the marker; given, a folder
    another writer (another command, other settings, or one not recorded) wrote is replaced only
    with ``force``, so one command's results never vanish under another's without a word.
    """
    out_dir = Path(out_dir)
    resolved = out_dir.resolve()
    if out_dir.is_symlink():
        out_dir = resolved  # replace the folder the link names; the link itself stays as it was
    parent = resolved.parent
    try:
        cwd = Path.cwd().resolve()
    except OSError:
        cwd = None
    if resolved == parent or resolved == Path(os.path.expanduser("~")).resolve() or (
            cwd is not None and cwd.is_relative_to(resolved)):
        # Replacing the output folder deletes what it held: never the working folder, a parent of it,
        # the home folder or a root.
        raise ConfigError(f"'{out_dir}' is the working folder, a parent of it, the home folder or a root; "
                          "writing the output there would replace everything in it.", field="out",
                          fix="give a new folder for the output, e.g. runs/my-run.")
    _refuse_foreign(out_dir, writer, force)  # before the work, so a refusal costs nothing; again under the lock
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=parent))
        (tmp / OUTPUT_MARKER).write_text(json.dumps({"note": MARKER_NOTE, "writer": writer}, indent=1) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
    except OSError as exc:
        raise ConfigError(f"cannot write to '{out_dir}': {exc.strerror}.", field="out",
                          fix="choose a folder you can write to.") from None
    try:
        with _terminate_as_exit():
            yield tmp
            with _folder_lock(parent):
                _swap_in(tmp, out_dir, parent, writer, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


MARKER_NOTE = "written by workbench; a run of the same command and settings replaces it, another needs --force"


def previous_writer(out_dir: Path) -> dict[str, Any] | None:
    """The writer recorded in ``out_dir``'s marker (None: none recorded, e.g. by an older workbench)."""
    try:
        return json.loads((out_dir / OUTPUT_MARKER).read_text(encoding="utf-8")).get("writer")
    except (OSError, ValueError, AttributeError):
        return None


def _differences(mine: dict[str, Any], theirs: dict[str, Any]) -> str:
    """The settings of ``mine`` that ``theirs`` does not share, as k=v (at most six)."""
    keys = [k for k in {**theirs, **mine} if mine.get(k) != theirs.get(k)]
    return ", ".join(f"{k}={mine.get(k)}" for k in keys[:6])


def check_replace(out_dir: str | Path, writer: dict[str, Any] | None, force: bool = False) -> None:
    """ConfigError if another ``writer`` wrote ``out_dir`` (see :func:`atomic_dir`); nothing is touched.

    A command calls it before its work, so that refusal costs nothing; a folder of files workbench did not
    write is refused when the output is written (after the inputs are checked, so their errors come first).
    """
    out_dir = Path(out_dir)
    try:
        names = {p.name for p in out_dir.iterdir()} if out_dir.is_dir() else set()
    except OSError:
        return  # atomic_dir reports it
    _refuse_other_writer(out_dir, names, writer, force)


def _refuse_other_writer(out_dir: Path, names: set[str], writer: dict[str, Any] | None, force: bool) -> None:
    if writer is None or force or OUTPUT_MARKER not in names:
        return
    before = previous_writer(out_dir)
    if before == writer:
        return
    command = f"`workbench {writer.get('command')}`"
    if not before:
        what = f"'{out_dir}' holds a workbench output whose command and settings were not recorded"
    elif before.get("command") != writer.get("command"):
        what = f"'{out_dir}' holds the output of `workbench {before.get('command')}`"
    else:
        mine, theirs = writer.get("settings") or {}, before.get("settings") or {}
        what = (f"'{out_dir}' holds the output of {command} with {_differences(theirs, mine)}; this run has "
                f"{_differences(mine, theirs)}")
    raise ConfigError(f"{what}; {command} would replace it.", field="out",
                      fix="give another folder, or add --force to replace it.")


def _refuse_foreign(out_dir: Path, writer: dict[str, Any] | None = None, force: bool = False) -> None:
    """ConfigError if ``out_dir`` is a folder holding files this package did not write.

    Only a folder this package wrote (it holds the marker), or an empty one, is replaced: --out
    ~/Documents must not wipe the user's documents.  The folder is listed once, so a writer swapping
    its output in at that moment is seen before or after the swap, never half-way.
    """
    try:
        names = {p.name for p in out_dir.iterdir()} if out_dir.is_dir() else set()
    except (FileNotFoundError, NotADirectoryError):
        names = set()  # moved aside by another writer of the same folder just now
    if names and OUTPUT_MARKER not in names:
        raise ConfigError(f"'{out_dir}' already holds files that workbench did not write; writing the output "
                          "there would replace them.", field="out",
                          fix="give a new or empty folder, or delete this one first.")
    _refuse_other_writer(out_dir, names, writer, force)


def _swap_in(tmp: Path, out_dir: Path, parent: Path, writer: dict[str, Any] | None = None,
             force: bool = False) -> None:
    """Move ``tmp`` to ``out_dir``, the previous output aside first and deleted after (under the lock)."""
    _refuse_foreign(out_dir, writer, force)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"'{out_dir}' exists and is not a folder.", field="out",
                          fix="choose another output folder.")
    backup = None
    if out_dir.exists():
        backup = parent / f".{out_dir.name}.old-{os.getpid()}"
        try:
            os.replace(out_dir, backup)
        except OSError as exc:  # immutable, or a folder we may not rename: the previous output stays whole
            raise ConfigError(f"cannot replace '{out_dir}': moving the previous output aside failed "
                              f"({exc.strerror}).", field="out",
                              fix="give another folder, or make this one writable (and its parent).") from None
    try:
        os.replace(tmp, out_dir)
    except OSError as exc:
        if backup is not None:
            os.replace(backup, out_dir)  # put the previous output back
        raise ConfigError(f"cannot write '{out_dir}': {exc.strerror}.", field="out",
                          fix="give another folder, or make its parent writable.") from None
    except BaseException:
        if backup is not None:
            os.replace(backup, out_dir)  # put the previous output back
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` itself (no lock file to leave behind), so writers of
    one output folder swap their results in one at a time (the last one wins) instead of racing
    between moving the old folder aside and moving theirs in."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; writers there are not serialised
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """While an output is written, SIGTERM raises SystemExit (so the temporary folder is removed and
    the previous output stays) instead of killing the process where it stands."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def compact_timeline(timeline: pd.DataFrame) -> pd.DataFrame:
    """Merge consecutive decode iterations of a client that serve the same requests."""
    if len(timeline) == 0:
        return pd.DataFrame(columns=["client", "kind", "start_s", "end_s", "n_requests", "tokens",
                                     "iterations", "first_iteration", "last_iteration", "request_ids"])
    tl = timeline.sort_values(["client", "iteration"], kind="stable")
    client = tl["client"].to_numpy()
    kind = tl["kind"].to_numpy()
    ids = tl["request_ids"].to_numpy()
    same = np.zeros(len(tl), dtype=bool)
    same[1:] = (client[1:] == client[:-1]) & (kind[1:] == "decode") & (kind[:-1] == "decode") & (ids[1:] == ids[:-1])
    run = np.cumsum(~same) - 1
    grouped = tl.assign(_run=run).groupby("_run", sort=True)
    out = grouped.agg(client=("client", "first"), kind=("kind", "first"), start_s=("start_s", "first"),
                      end_s=("end_s", "last"), n_requests=("n_requests", "first"), tokens=("tokens", "sum"),
                      iterations=("iteration", "size"), first_iteration=("iteration", "first"),
                      last_iteration=("iteration", "last"), request_ids=("request_ids", "first"))
    return out.reset_index(drop=True)


def cost_model_record(cost_model: LinearCostModel) -> dict[str, Any]:
    """What metrics.json records of a cost model: the coefficients of a linear one; the whole model (its
    ``to_dict``, with ``kind``) of any other, so that durations can be checked from the files alone."""
    if type(cost_model) is not LinearCostModel and hasattr(cost_model, "to_dict"):
        return cost_model.to_dict()
    record = cost_model.coefficients()
    record["name"] = cost_model.name
    return record


def build_metrics(timeline: pd.DataFrame, *, clients: int, batch_size, cost_model: LinearCostModel,
                  policy: str, params: dict[str, Any], lower_bound_s: float,
                  lower_bound_binding: str | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``metrics.json`` as MODEL.md section 9 and the foundation issue specify it."""
    if clients < 1:
        raise ConfigError(f"clients is {clients}.", field="clients", fix="use at least 1 client.")
    B = batch_sizes_array(batch_size, clients)
    base = schedule_metrics(timeline, clients, B)
    metrics = {
        "makespan_s": base["makespan_s"],
        "lower_bound_s": float(lower_bound_s),
        "gap": gap(base["makespan_s"], float(lower_bound_s)),
        "slot_utilization": base["slot_utilization"],
        "busy_utilization": base["busy_utilization"],
        "clients": int(clients),
        "batch_size": int(B[0]) if np.all(B == B[0]) else [int(b) for b in B],
        "cost_model": cost_model_record(cost_model),
        "policy": policy,
        "params": params,
        "version": __version__,
    }
    if lower_bound_binding:
        metrics["lower_bound_binding"] = lower_bound_binding
    if extra:
        metrics.update(extra)
    return metrics


def requests_from_timeline(timeline: pd.DataFrame, trace: pd.DataFrame) -> pd.DataFrame:
    """The ``requests`` table implied by a timeline (for schedules not made by the simulator)."""
    tl = timeline.sort_values(["client", "iteration"], kind="stable")
    ids = tl["request_ids"].astype(str).str.split()
    exploded = tl.assign(request_id=ids).explode("request_id")
    key = trace["request_id"].astype(str)
    pre = exploded[exploded["kind"] == "prefill"].drop_duplicates("request_id").set_index("request_id")
    last = exploded.drop_duplicates("request_id", keep="last").set_index("request_id")
    out = pd.DataFrame({
        "request_id": trace["request_id"].to_numpy(),
        "client": pre["client"].reindex(key).to_numpy(),
        "input_tokens": trace["input_tokens"].to_numpy(),
        "output_tokens": trace["output_tokens"].to_numpy(),
        "arrival_s": trace["arrival_s"].to_numpy(float),
        "prefill_start_s": pre["start_s"].reindex(key).to_numpy(float),
        "first_token_s": pre["end_s"].reindex(key).to_numpy(float),
        "finish_s": last["end_s"].reindex(key).to_numpy(float),
    })
    return out


# -- export: per-iteration rows from runs, in chunks, as CSV or Parquet --------------------------------
#
# The timeline of a simulated schedule is never held whole for writing: runs are expanded a chunk at a
# time (about EXPORT_CHUNK_ROWS rows) and each chunk is formatted and written before the next; a
# simulator's ``request_ids`` are listed per chunk from its run members (schedule.members).  Every
# field is given the text pandas' ``to_csv`` writes (floats as Python's repr) and Arrow's CSV writer
# lays the rows out, so the files equal pandas' byte for byte; anything the fast path cannot prove
# it writes the same way (a dtype it does not know, a field that would need quoting) falls back to
# pandas for that file.

#: Rows expanded and written at a time: bounds the memory of an export whatever its size.
EXPORT_CHUNK_ROWS = 1 << 16
FORMATS = ("csv", "parquet")
#: Per-run columns that :func:`expand_runs` turns into per-iteration values; every other column of a
#: runs table (``request_ids``, ``prefill_ids``, a future marker) is the same on each of the run's rows.
_RUN_ONLY_COLUMNS = ("start_s", "end_s", "tokens", "first_tokens", "iterations", "first_iteration",
                     "last_iteration")
_CSV_SPECIALS = (",", '"', "\r", "\n", "\x00")


def check_format(fmt: str) -> str:
    """``fmt`` if it names an export format, else a ConfigError naming the option."""
    if fmt not in FORMATS:
        raise ConfigError(f"'{fmt}' is not an export format.", field="--format",
                          fix="use --format csv (the default) or --format parquet.")
    return fmt


def _run_chunks(runs: pd.DataFrame, rows: int = EXPORT_CHUNK_ROWS) -> Iterator[slice]:
    """Slices of consecutive runs holding about ``rows`` iterations each (a longer run is a chunk alone)."""
    k = runs["iterations"].to_numpy(np.int64)
    ends = np.cumsum(k)
    start = 0
    while start < len(runs):
        base = ends[start - 1] if start else 0
        stop = int(np.searchsorted(ends, base + rows, side="right"))
        stop = max(stop, start + 1)
        yield slice(start, stop)
        start = stop


def _expand_numbers(runs: pd.DataFrame, metrics: dict[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(seg, columns)``: the run of each iteration row and the per-iteration numeric columns."""
    k = runs["iterations"].to_numpy(np.int64)
    total = int(k.sum())
    seg = np.repeat(np.arange(len(runs)), k)
    r = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(k) - k, k)
    client = runs["client"].to_numpy(np.int64)[seg]
    nr = runs["n_requests"].to_numpy(np.int64)[seg]
    S = runs["first_tokens"].to_numpy(np.int64)[seg]
    kind = runs["kind"].to_numpy()
    decode = (kind == "decode")[seg]
    several = k > 1
    if (several & (kind != "decode")).any():
        bad = int(np.flatnonzero(several & (kind != "decode"))[0])
        raise ValueError(f"run {bad} is a {kind[bad]} run of {k[bad]} iterations; only decode runs "
                         "have a closed form to expand")
    t0 = runs["start_s"].to_numpy(float)[seg]
    clients = int(metrics["clients"])
    record = metrics["cost_model"]
    records = record if isinstance(record, list) else [record] * clients
    a_d = np.array([m["a_d"] for m in records])[client]
    b_d = np.array([m["b_d"] for m in records])[client]
    c_d = np.array([m["c_d"] for m in records])[client]
    base = a_d + b_d * nr
    start = t0 + (r * base + c_d * (r * S + nr * (r * (r - 1) // 2)))
    r1 = r + 1
    end = t0 + (r1 * base + c_d * (r1 * S + nr * (r1 * (r1 - 1) // 2)))
    single = (k == 1)[seg]
    start = np.where(single, t0, start)
    end = np.where(single, runs["end_s"].to_numpy(float)[seg], end)
    first_iteration = runs["first_iteration"].to_numpy(np.int64)[seg]
    return seg, {"client": client, "iteration": first_iteration + r, "start_s": start, "end_s": end,
                 "n_requests": nr, "tokens": np.where(decode, S + r * nr, S)}


def expand_runs(runs: pd.DataFrame, metrics: dict[str, Any]) -> pd.DataFrame:
    """The per-iteration timeline of a run table, with the simulator's own arithmetic.

    A decode run of ``k`` iterations starting at ``t0`` with ``n`` requests
    whose first iteration reads ``S`` context tokens has iteration ``r`` from
    ``t0 + cum(r)`` to ``t0 + cum(r + 1)``, where
    ``cum(r) = r (a_d + b_d n) + c_d (r S + n r (r-1) / 2)``; the simulator's
    clock advanced by exactly ``cum(k)``, so every boundary matches bit for
    bit.  Runs of one iteration (all prefills, mixed iterations, and decodes
    under a cost model that is not linear) keep their recorded times.  Every
    other column of ``runs`` (``kind``, ``request_ids``, ``prefill_ids``, ...)
    is repeated on each row of its run.  All numpy over whole runs: no Python
    work per row.
    """
    seg, numbers = _expand_numbers(runs, metrics)
    out = {"client": numbers["client"], "iteration": numbers["iteration"], "kind": runs["kind"].array.take(seg),
           "start_s": numbers["start_s"], "end_s": numbers["end_s"], "n_requests": numbers["n_requests"],
           "tokens": numbers["tokens"]}
    for column in runs.columns:
        if column not in out and column not in _RUN_ONLY_COLUMNS:
            # The column's own array type repeats it: Arrow-backed text stays Arrow (no Python string per row).
            out[column] = runs[column].array.take(seg)
    return pd.DataFrame(out)


def iter_timeline(schedule: Schedule, rows: int = EXPORT_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """The schedule's timeline in chunks of about ``rows`` rows, expanded from its runs chunk by chunk."""
    if schedule._timeline is not None or schedule._runs is None:
        tl = schedule.timeline
        for lo in range(0, max(len(tl), 1), rows):
            yield tl.iloc[lo:lo + rows]
        return
    runs = schedule.runs
    for part in _run_chunks(runs, rows):
        yield expand_runs(runs.iloc[part], schedule.metrics)


def _timeline_columns(columns) -> list[str]:
    return list(TIMELINE_COLUMNS) + [c for c in OPTIONAL_TIMELINE_COLUMNS if c in columns]


def _request_columns(columns) -> list[str]:
    return list(REQUEST_COLUMNS) + [c for c in OPTIONAL_REQUEST_COLUMNS if c in columns]


# -- CSV ----------------------------------------------------------------------------------------------

class _SlowPath(Exception):
    """The fast CSV path cannot promise pandas' bytes for this column: write the file with pandas."""


#: Bytes that make pandas quote a field (and NUL, which the fast path does not promise to carry).
_CSV_SPECIAL_BYTES = tuple(ch.encode() for ch in _CSV_SPECIALS)


def _check_plain_text(arr) -> None:
    """_SlowPath when any value of an Arrow string array holds a byte pandas would quote."""
    data = arr.buffers()[2]
    if data is not None and data.size:
        raw = data.to_pybytes()
        if any(raw.find(ch) >= 0 for ch in _CSV_SPECIAL_BYTES):
            raise _SlowPath


def _float_text(values: np.ndarray):
    """Floats as pandas writes them (Python's repr, NaN as an empty field), as an Arrow string array.

    Arrow's shortest round-trip formatting is several times numpy's speed and gives the same digits;
    it differs only in layout (``3`` for ``3.0``, ``0.00001`` for ``1e-05``, exponents from 1e15),
    so only values whose Arrow text is a plain decimal fraction in Python's fixed-notation range are
    taken from Arrow, and the rest from numpy (whose ``str`` is Python's repr).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    values = np.ascontiguousarray(values, dtype=np.float64)
    text = pc.cast(pa.array(values, type=pa.float64()), pa.string())
    with np.errstate(invalid="ignore"):
        size = np.abs(values)
        safe = (size >= 1e-4) & (size < 1e15)
    safe &= pc.match_substring(text, ".").to_numpy(zero_copy_only=False)
    safe &= ~pc.match_substring(text, "e").to_numpy(zero_copy_only=False)
    redo = np.flatnonzero(~safe)
    if not len(redo):
        return text
    fixed = values[redo].astype(str)
    fixed[np.isnan(values[redo])] = ""
    return pc.replace_with_mask(text, pa.array(~safe), pa.array(fixed.tolist(), type=pa.string()))


def _text_array(values):
    """Text as pandas writes it (``str`` of each value, missing values empty), as an Arrow string array."""
    import pyarrow as pa

    try:
        if isinstance(values, pa.ChunkedArray):
            arr = values.combine_chunks()
        elif isinstance(values, pa.Array):
            arr = values
        else:
            arr = pa.array(values, type=pa.string(), from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError):
        arr = None  # not all text (e.g. numbers in an object column): str() of each, the slow way
    if isinstance(arr, pa.ChunkedArray):  # what pa.array gives for an Arrow-backed pandas column
        arr = arr.combine_chunks()
    if arr is None or not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        seq = values.to_pylist() if isinstance(values, (pa.Array, pa.ChunkedArray)) else np.asarray(values, dtype=object)
        arr = pa.array(["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in seq],
                       type=pa.string())
    _check_plain_text(arr)
    return arr


def _csv_array(values):
    """One column as an Arrow array whose CSV text is what pandas' ``to_csv`` writes for it.

    Integers stay integers (Arrow writes them as pandas does), floats and booleans become their
    text, text is checked for bytes pandas would quote (then the whole file takes pandas' path).
    """
    import pyarrow as pa

    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        if pa.types.is_integer(values.type):
            return values.cast(pa.int64())
        if pa.types.is_floating(values.type) or pa.types.is_boolean(values.type):
            values = values.to_numpy(zero_copy_only=False)
        else:
            return _text_array(values)
    if isinstance(values, pd.Series):
        if values.dtype.kind in "iufb":
            values = values.to_numpy()
        elif values.dtype.kind == "O" or isinstance(values.dtype, pd.StringDtype):
            return _text_array(values)
        else:
            raise _SlowPath
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        return pa.array(values.astype(np.int64, copy=False))
    if values.dtype.kind == "f" and values.dtype.itemsize == 8:
        return _float_text(values)
    if values.dtype.kind == "b":
        return pa.array(np.where(values, "True", "False").tolist(), type=pa.string())
    if values.dtype.kind in "OUS":
        return _text_array(values)
    raise _SlowPath


def _per_row(arr, seg: np.ndarray):
    """A per-run Arrow column repeated on each row of its run (text as a dictionary: no copy per row)."""
    import pyarrow as pa

    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        if pa.types.is_large_string(arr.type):
            arr = arr.cast(pa.string())
        return pa.DictionaryArray.from_arrays(pa.array(seg.astype(np.int32, copy=False)), arr)
    return arr.take(pa.array(seg))


def _write_arrow_csv(fh, arrays: list, columns: list[str]) -> None:
    """Rows of ``arrays`` (no header) with Arrow's CSV writer; nothing is quoted (checked before)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    table = pa.Table.from_arrays(arrays, names=columns)
    if not table.num_rows:
        return
    try:
        pcsv.write_csv(table, fh, write_options=pcsv.WriteOptions(include_header=False, quoting_style="none",
                                                                  batch_size=1024))
    except pa.ArrowInvalid:
        raise _SlowPath from None  # a structural character the checks did not foresee: pandas quotes it


def _header(columns: list[str]) -> bytes:
    if any(ch in c for c in columns for ch in _CSV_SPECIALS):
        raise _SlowPath
    return (",".join(columns) + "\n").encode("utf-8")


def _timeline_parts(schedule: Schedule, columns: list[str], rows: int = EXPORT_CHUNK_ROWS
                    ) -> Iterator[tuple[dict[str, Any], np.ndarray | None, dict[str, Any]]]:
    """Chunks of the timeline as ``(per-row columns, seg, per-run columns)``.

    From runs, the columns that are the same on every row of a run (``kind``, ``request_ids``, ...)
    stay per run (``seg`` maps each row to its run), so their text is built once per run and repeated
    by Arrow; a simulator's ``request_ids`` are listed chunk by chunk from the run members, never held
    whole.  From a held timeline every column is per row and ``seg`` is None.
    """
    if schedule._timeline is not None or schedule._runs is None:
        tl = schedule.timeline
        for lo in range(0, len(tl), rows):
            part = tl.iloc[lo:lo + rows]
            yield {c: part[c] for c in columns}, None, {}
        return
    runs = schedule.runs_without_ids()
    members = schedule._run_ids if "request_ids" not in runs.columns else None
    if members is not None and not isinstance(members, RunMembers):
        runs, members = schedule.runs, None  # ids from a plain callable: listed whole, once
    for part in _run_chunks(runs, rows):
        chunk = runs.iloc[part]
        seg, numbers = _expand_numbers(chunk, schedule.metrics)
        per_run = {c: chunk[c] for c in columns if c not in numbers and c in chunk.columns}
        if members is not None:
            per_run["request_ids"] = members.arrow(part.start, part.stop)
        yield numbers, seg, per_run


def _write_timeline_csv(path: Path, schedule: Schedule, columns: list[str]) -> None:
    import pyarrow as pa

    with pa.OSFile(str(path), "wb") as fh:  # Arrow's own file: its CSV writer skips Python's io
        fh.write(_header(columns))
        for numbers, seg, per_run in _timeline_parts(schedule, columns):
            arrays = [_csv_array(numbers[c]) if c in numbers else _per_row(_csv_array(per_run[c]), seg)
                      for c in columns]
            _write_arrow_csv(fh, arrays, columns)


def _write_frame_csv(path: Path, frame: pd.DataFrame, columns: list[str]) -> None:
    import pyarrow as pa

    with pa.OSFile(str(path), "wb") as fh:
        fh.write(_header(columns))
        _write_arrow_csv(fh, [_csv_array(frame[c]) for c in columns], columns)


def _write_csv(path: Path, fast: Callable[[], None], frames: Callable[[], Iterator[pd.DataFrame]],
               columns: list[str]) -> None:
    """The fast writer, or pandas when the fast one cannot promise pandas' bytes for this table."""
    try:
        fast()
        return
    except _SlowPath:
        pass
    with open(path, "w", encoding="utf-8", newline="") as fh:
        header = True
        for frame in frames():
            frame.loc[:, columns].to_csv(fh, index=False, header=header)
            header = False
        if header:
            pd.DataFrame(columns=columns).to_csv(fh, index=False)


# -- Parquet --------------------------------------------------------------------------------------------

#: Column types of the Parquet files: integers are int64, times float64, text UTF-8 strings.
PARQUET_TIMELINE_TYPES = {"client": "int", "iteration": "int", "kind": "str", "start_s": "float",
                          "end_s": "float", "n_requests": "int", "tokens": "int", "request_ids": "str",
                          "prefill_ids": "str", "prefill_tokens": "str", "prefill_prior": "str"}
PARQUET_REQUEST_TYPES = {"client": "int", "input_tokens": "int", "output_tokens": "int", "arrival_s": "float",
                         "prefill_start_s": "float", "first_token_s": "float", "finish_s": "float",
                         "predicted_output_tokens": "int", "preemptions": "int", "recomputed_tokens": "int",
                         "cached_tokens": "int", "prefill_client": "int"}


def _parquet_array(values, want: str | None):
    """One column as the Arrow array of its Parquet type (``want``: int, float, str, or None for ids)."""
    import pyarrow as pa

    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        arrow = values
        if want == "str" and not pa.types.is_string(arrow.type):
            arrow = arrow.cast(pa.string())
        return arrow.combine_chunks() if isinstance(arrow, pa.ChunkedArray) else arrow
    values = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
    if want == "int":
        return pa.array(values.astype(np.int64))
    if want == "float":
        return pa.array(values.astype(float))
    if want == "str":
        return (pa.array(values.astype(object)).cast(pa.string()) if values.dtype.kind == "O"
                else pa.array(values.astype(str)))
    # request_id: integer ids stay integers, text ids text (as requests.csv reads them back)
    return pa.array(values.astype(object) if values.dtype.kind == "O" else values)


def _arrow_table(frame: pd.DataFrame, columns: list[str], types: dict[str, str]):
    import pyarrow as pa

    return pa.Table.from_arrays([_parquet_array(frame[c], types.get(c)) for c in columns], names=columns)


def _arrow_type(kind: str | None):
    import pyarrow as pa

    return {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}.get(kind)


def _write_parquet(path: Path, tables: Iterator, columns: list[str], types: dict[str, str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for table in tables:
            if writer is None:
                # Dictionary pages only for text (kind, ids): times and counts are near-unique, and
                # trying a dictionary on them first costs a quarter of the writing time.
                writer = pq.ParquetWriter(path, table.schema,
                                          use_dictionary=[c for c in columns if types.get(c) == "str"])
            elif table.schema != writer.schema:
                table = table.cast(writer.schema)
            writer.write_table(table)
        if writer is None:
            writer = pq.ParquetWriter(path, pa.schema([(c, _arrow_type(types.get(c)) or pa.string())
                                                       for c in columns]))
    finally:
        if writer is not None:
            writer.close()


def _timeline_tables(schedule: Schedule, columns: list[str]) -> Iterator:
    """Arrow tables of the timeline; per-run text columns become dictionary arrays indexed by ``seg``."""
    import pyarrow as pa

    for numbers, seg, per_run in _timeline_parts(schedule, columns):
        arrays = []
        for c in columns:
            want = PARQUET_TIMELINE_TYPES.get(c)
            if c in numbers:
                arrays.append(_parquet_array(numbers[c], want))
            else:  # per run: text as a dictionary over the run's rows, a number or flag repeated
                arrays.append(_per_row(_parquet_array(per_run[c], want), seg))
        yield pa.Table.from_arrays(arrays, names=columns)


def write_schedule_files(schedule: Schedule, folder: Path, fmt: str = "csv") -> None:
    """``timeline``, ``requests`` (as CSV or Parquet) and ``metrics.json`` of ``schedule`` into ``folder``."""
    check_format(fmt)
    source = (schedule.timeline if schedule._timeline is not None or schedule._runs is None
              else schedule.runs_without_ids())  # the runs' ids are listed while writing, chunk by chunk
    columns = _timeline_columns(source.columns)
    request_columns = _request_columns(schedule.requests.columns)
    if fmt == "csv":
        _write_csv(folder / "timeline.csv", lambda: _write_timeline_csv(folder / "timeline.csv", schedule, columns),
                   lambda: iter_timeline(schedule), columns)
        _write_csv(folder / "requests.csv", lambda: _write_frame_csv(folder / "requests.csv", schedule.requests,
                                                                     request_columns),
                   lambda: iter([schedule.requests]), request_columns)
    else:
        _write_parquet(folder / "timeline.parquet", _timeline_tables(schedule, columns), columns,
                       PARQUET_TIMELINE_TYPES)
        _write_parquet(folder / "requests.parquet",
                       iter([_arrow_table(schedule.requests, request_columns, PARQUET_REQUEST_TYPES)]),
                       request_columns, PARQUET_REQUEST_TYPES)
    transfers = getattr(schedule, "transfers", None)
    if transfers is not None:
        if fmt == "csv":
            path = folder / TRANSFER_FILES["csv"]
            _write_csv(path, lambda: _write_frame_csv(path, transfers, list(TRANSFER_COLUMNS)),
                       lambda: iter([transfers]), list(TRANSFER_COLUMNS))
        else:
            _write_parquet(folder / TRANSFER_FILES["parquet"],
                           iter([_arrow_table(transfers, list(TRANSFER_COLUMNS), PARQUET_TRANSFER_TYPES)]),
                           list(TRANSFER_COLUMNS), PARQUET_TRANSFER_TYPES)
    (folder / "metrics.json").write_text(json.dumps(_jsonable(schedule.metrics), indent=2) + "\n", encoding="utf-8")
