"""The ``workbench`` command line (also ``python -m workbench``).

One module per command or command group, each with ``register(subparsers)``;
:data:`COMMANDS` lists them in the order ``workbench --help`` shows them, and
adding a command is adding a module there.  User errors print one line naming
the field, the row and the fix, exit with status 2 and leave output folders
untouched.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from workbench._version import __version__
from workbench.errors import WorkbenchError

#: The command modules, in help order.
COMMANDS = ("simulate", "validate", "offline", "reproduce", "loadsweep", "calibrate", "fidelity", "profile",
            "catalog", "dashboard", "learn", "plan")


_RST_ROLE = re.compile(r":(?:mod|func|class|meth|data|attr|obj|ref|doc):`~?([^`]+)`")
_RST_LITERAL = re.compile(r"``([^`]+)``")


def plain_text(text: str) -> str:
    """Docstring text as a terminal shows it: ``x`` and :mod:`x` become x."""
    return _RST_LITERAL.sub(r"\1", _RST_ROLE.sub(r"\1", text))


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's default in its help line, unless the help already states it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help reads as plain text, whatever reStructuredText the docstrings it quotes hold.

    Subcommand parsers are made with the same class (argparse uses the parent's class), so this
    is the one place help text is cleaned.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def format_help(self) -> str:
        return plain_text(super().format_help())

    def error(self, message: str):
        """One line, as every user error of the command line (the usage block is one ``--help`` away)."""
        self.exit(2, f"{self.prog}: error: {plain_text(message)} (see {self.prog} --help)\n")

    def format_usage(self) -> str:
        return plain_text(super().format_usage())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="workbench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"workbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"workbench.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a malformed line (2): a status, as for other errors
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.func(args) or 0)
    except WorkbenchError as exc:
        print(f"workbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"workbench {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `workbench bound | head -1`: the reader has what it wanted; no traceback
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (the interpreter's final flush must not fail again)
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
