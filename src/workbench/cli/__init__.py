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
import sys

from workbench._version import __version__
from workbench.errors import WorkbenchError

#: The command modules, in help order.
COMMANDS = ("simulate", "validate", "offline", "reproduce", "loadsweep", "calibrate", "fidelity", "profile",
            "catalog", "dashboard")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"workbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"workbench.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except WorkbenchError as exc:
        print(f"workbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"workbench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
