"""``workbench validate``: check an exported schedule against every rule of MODEL.md section 9."""

from __future__ import annotations


def cmd_validate(args) -> int:
    from workbench.schedule.validator import validate_files

    report = validate_files(args.folder, trace=args.trace)
    print(report)
    return 0 if report.ok else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("validate", help="check an exported schedule against every rule of MODEL.md section 9")
    p.add_argument("folder")
    p.add_argument("--trace", default=None, help="also check against this trace")
    p.set_defaults(func=cmd_validate)
