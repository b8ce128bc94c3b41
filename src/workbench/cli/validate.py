"""``workbench validate``: check an exported schedule against every rule of MODEL.md section 9."""

from __future__ import annotations


def cmd_validate(args) -> int:
    from pathlib import Path

    from workbench.errors import ConfigError
    from workbench.schedule.validator import validate_files

    if not Path(args.folder).is_dir():  # bad input (exit 2), not an invalid schedule (exit 1)
        raise ConfigError(f"'{args.folder}' is not a folder.", field="folder",
                          fix="give the folder a schedule was written to (workbench simulate --out DIR).")
    report = validate_files(args.folder, trace=args.trace)
    print(report)
    return 0 if report.ok else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("validate", help="check an exported schedule against every rule of MODEL.md section 9")
    p.add_argument("folder")
    p.add_argument("--trace", default=None, help="also check against this trace")
    p.set_defaults(func=cmd_validate)
