"""User-facing errors.

Every error a user can cause (a bad trace, an impossible option, a solver that
is missing) is a :class:`WorkbenchError`.  Its message names the field, the row
and the fix, so the command line and the widgets can show it as one line
instead of a traceback from deep inside pandas or Pyomo.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """An error caused by input or options, with a message fit for a user."""

    def __init__(self, message: str, *, field: str | None = None, row: object | None = None,
                 fix: str | None = None) -> None:
        self.message = message
        self.field = field
        self.row = row
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.field is not None:
            where.append(f"field '{self.field}'")
        if self.row is not None:
            where.append(f"row {self.row}")
        text = (", ".join(where) + ": " if where else "") + self.message
        if self.fix:
            text += f" Fix: {self.fix}"
        return text


class TraceError(WorkbenchError, ValueError):
    """A trace that does not meet the data contract (MODEL.md section 9)."""


class ConfigError(WorkbenchError, ValueError):
    """An option out of range: a batch size of 0, an unknown policy, ..."""


class SolverError(WorkbenchError, RuntimeError):
    """A solver that is missing, or stopped without a usable solution."""


class ScheduleFileError(WorkbenchError, ValueError):
    """Exported schedule files that cannot be read as a schedule."""


class UnreadableFileError(ScheduleFileError):
    """A schedule file that is not a file one can read (a folder, a FIFO, a device, above the size limit, no
    permission): bad input (exit status 2), where a missing or malformed part is a broken rule (exit 1)."""
