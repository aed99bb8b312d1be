"""Every plan on one line, with what is missing: ``dicomfs plans`` and ``.dicomfs/plans.tsv``.

A physicist's first question of an archive is "which plans can I open, and
which cannot be opened yet". Each row is a plan with its patient, label,
date, approval, intent, the number of objects in its package, the number
of references that are not indexed, and a state:

* ``complete``: nothing missing, and the plan names a structure set;
* ``no structure set``: the plan names none (a QA plan, or a plan exported
  without the reference; a treatment plan then also counts the study-level
  line of its missing.txt among its missing);
* ``N missing``: N references of the package are not indexed.

Building a row builds the plan's package (``index.graph``), so the table
costs one package per plan; the mount caches it like any generated file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dicomfs.dicom.records import Role
from dicomfs.index import IndexReader, graph, people
from dicomfs.view.human import iso_date
from dicomfs.view.report import Reveal, escape_field

COLUMNS = (
    "patient_id",
    "label",
    "date",
    "approval",
    "intent",
    "members",
    "missing",
    "state",
    "plan_uid",
    "path",
)


@dataclass(frozen=True, slots=True)
class PlanLine:
    patient_id: str
    label: str
    date: str  # ISO, or "" when the plan has no RTPlanDate
    approval: str
    intent: str
    members: int
    missing: int
    state: str
    plan_uid: str
    path: str | None  # the plan's folder in the mount, None when it has none
    source_path: str  # to decide per reader whether the line may be shown

    @property
    def complete(self) -> bool:
        return self.state == "complete"

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in COLUMNS}


def plan_lines(reader: IndexReader, paths: Mapping[str, str]) -> list[PlanLine]:
    """One line per plan, ordered by patient, date and label; ``paths``: plan UID -> folder."""
    lines = []
    for row in people.plans(reader):
        plan = row.instance
        pkg = graph.package(reader, plan.sop_uid)
        names_structures = any(
            edge.edge.role is Role.STRUCTURE_SET for edge in reader.forward_edges(plan.sop_uid)
        )
        missing = len(pkg.missing)
        if not names_structures:
            state = "no structure set"
        elif missing:
            state = f"{missing} missing"
        else:
            state = "complete"
        members = {
            m.instance.sop_uid for m in (*pkg.references, *pkg.referenced_by, *pkg.registrations)
        }
        lines.append(
            PlanLine(
                patient_id=plan.patient_id,
                label=plan.label,
                date=iso_date(row.plan_date, ""),
                approval=row.approval_status,
                intent=plan.plan_intent,
                members=len(members),
                missing=missing,
                state=state,
                plan_uid=plan.sop_uid,
                path=paths.get(plan.sop_uid),
                source_path=plan.file.path,
            )
        )
    return lines


def sort_lines(lines: Iterable[PlanLine], key: str, *, reverse: bool = False) -> list[PlanLine]:
    """Sorted by one column; numbers as numbers, text case-insensitively."""
    if key not in COLUMNS:
        raise ValueError(f"unknown column {key!r} (columns: {', '.join(COLUMNS)})")

    def value(line: PlanLine) -> tuple[Any, ...]:
        v = getattr(line, key)
        return (0, v) if isinstance(v, int) else (1, str(v or "").casefold())

    return sorted(lines, key=value, reverse=reverse)


def format_tsv(lines: Iterable[PlanLine], reveal: Reveal | None = None) -> bytes:
    """Tab-separated, a header line first; a line only where ``reveal`` shows its plan file.

    Fields come from files: tabs, newlines and other control characters are
    escaped (``report.escape_field``) so that a line is always one plan.
    """
    out = ["\t".join(COLUMNS)]
    for line in lines:
        if reveal is not None and not reveal(line.source_path):
            continue
        out.append("\t".join(_field(getattr(line, name)) for name in COLUMNS))
    return ("\n".join(out) + "\n").encode("utf-8", "surrogateescape")


def _field(value: object) -> str:
    return "" if value is None else escape_field(str(value))


def renderer(lines: list[PlanLine]) -> Callable[[Reveal], bytes]:
    """``FileNode.render`` for plans.tsv: the table as one reader may see it."""

    def render(reveal: Reveal) -> bytes:
        return format_tsv(lines, reveal)

    return render
