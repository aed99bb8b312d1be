"""``dicomfs plans``: every plan on one line, and which cannot be opened yet.

The same table as ``.dicomfs/plans.tsv`` in the mount (``view.plan_table``),
printed aligned for a terminal, or as JSON for scripts. The path column is
the plan's folder in a mount with the same ``names`` setting.
"""

from __future__ import annotations

import argparse

from dicomfs.commands.common import (
    SubParsers,
    add_index_option,
    add_json_option,
    add_names_option,
    command,
    emit,
    index_path,
    open_view,
)
from dicomfs.errors import EXIT_OK, ConfigError, IndexUnavailableError
from dicomfs.view.plan_table import COLUMNS, PlanLine, plan_lines, sort_lines

# What the terminal table shows, in order (the JSON has every column).
_SHOWN = ("patient_id", "label", "date", "approval", "intent", "members", "missing", "state")


def register(sub: SubParsers) -> None:
    p = command(
        sub,
        "plans",
        cmd_plans,
        "every plan on one line: patient, label, date, approval, and what is missing",
    )
    add_index_option(p)
    add_json_option(p)
    p.add_argument("--incomplete", action="store_true", help="only plans that are not complete")
    p.add_argument("--patient", metavar="ID", help="only this patient's plans (exact PatientID)")
    p.add_argument(
        "--sort",
        default="patient_id",
        choices=COLUMNS,
        metavar="COLUMN",
        help=f"sort by this column (default patient_id; one of {', '.join(COLUMNS)})",
    )
    p.add_argument("--reverse", action="store_true", help="sort in descending order")
    p.add_argument("--paths", action="store_true", help="add each plan's folder in the mount")
    add_names_option(
        p, "which tree the paths are in: uid (plans/<uid>) or id/name (patients/...; default)"
    )


def cmd_plans(args: argparse.Namespace) -> int:
    view = open_view(args, args.names, cache_ttl=60.0)
    try:
        if view.reader.details_pending():
            raise IndexUnavailableError(
                f"{index_path(args)} was upgraded and is reading every file's details again: run "
                "`dicomfs index` (or wait for `dicomfs serve`'s scan) and try again"
            )
        lines = plan_lines(view.reader, view.plan_paths())
    finally:
        view.close()
    if args.patient is not None:
        lines = [line for line in lines if line.patient_id == args.patient]
    if args.incomplete:
        lines = [line for line in lines if not line.complete]
    try:
        lines = sort_lines(lines, args.sort, reverse=args.reverse)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    shown = (*_SHOWN, "path") if args.paths else _SHOWN
    emit(args, [line.as_dict() for line in lines], lambda: _table(lines, shown))
    return EXIT_OK


def _table(lines: list[PlanLine], columns: tuple[str, ...]) -> str:
    if not lines:
        return "no plans"
    rows = [[name.replace("_", " ").upper() for name in columns]]
    rows += [[_cell(getattr(line, name), name != "path") for name in columns] for line in lines]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    text = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    complete = sum(line.complete for line in lines)
    text.append(f"{len(lines)} plans, {complete} complete, {len(lines) - complete} not")
    return "\n".join(text)


def _cell(value: object, cut: bool) -> str:
    """One table cell: values from files lose control characters; labels are cut to 40."""
    text = "" if value is None else str(value)
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= 40 or not cut else text[:39] + "…"
