"""The end-of-fetch summary, for people (``format_report``) and for scripts (``report_dict``).

Kept out of the fetch logic so that what a user reads can change without
touching what is retrieved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dicomfs.net.fetch_records import FetchReport, Outcome
from dicomfs.net.store import StoredObject
from dicomfs.view.report import missing_dict


def format_report(report: FetchReport, store: Path) -> str:
    """The summary: what was found and from which series, what is still missing.

    The reverse search adds what it brought into the package (by role) and
    one line for what it retrieved only to look at.

    Outcomes that differ only by UID (the slices of one CT series) share a line.
    """
    lines: list[str] = []
    groups: dict[tuple[str, str, str, str, str], list[Outcome]] = {}
    for item in report.outcomes:
        if item.state == "candidates":
            ref = item.ref
            lines.append(
                f"candidates plan {ref.referenced_by} names no structure set; "
                f"RTSTRUCT series in study {ref.uid}:"
            )
            lines.extend(f"             {info}" for info in item.candidates)
            if not item.candidates:
                lines.append("             (none on the PACS)")
            continue
        key = (item.state, item.ref.expected, item.series_uid, item.level, item.note)
        groups.setdefault(key, []).append(item)
    for (state, expected, series_uid, level, note), items in groups.items():
        what = items[0].ref.uid if len(items) == 1 else f"{len(items)} objects"
        line = f"{state.replace('_', ' '):<11}{expected:<15} {what}"
        if series_uid:
            line += f"  from series {series_uid}"
        if level:
            line += f" ({level} level)"
        if note:
            line += f"  ({note})"
        lines.append(line)
    lines.extend(_reverse_lines(report))
    if report.methods:
        how = " and ".join(f"C-{m.upper()}" for m in sorted(report.methods))
        whole = len(report.series_retrieved)
        lines.append(
            f"retrieved {len(report.new_objects)} new object(s) into {store} using {how}"
            + (f"; {whole} series retrieved whole" if whole else "")
        )
    else:
        lines.append("nothing retrieved")
    for plan, refs in report.still_missing.items():
        if refs:
            lines.append(
                f"still missing for plan {plan}: {len(refs)} (see `dicomfs missing {plan}`)"
            )
        else:
            lines.append(f"complete: plan {plan} has nothing missing")
    return "\n".join(lines)


def _reverse_lines(report: FetchReport) -> list[str]:
    """What the reverse search brought into the package, by role, and what it only looked at."""
    lines: list[str] = []
    by_role: dict[str, list[StoredObject]] = {}
    for role, stored in report.reverse_found:
        by_role.setdefault(role, []).append(stored)
    for role, items in by_role.items():
        what = items[0].identity.sop_instance_uid if len(items) == 1 else f"{len(items)} objects"
        lines.append(f"{'found':<11}{role:<15} {what}  (reverse search: in the package now)")
    if report.looked_at:
        series = len({s.identity.series_uid for s in report.looked_at})
        lines.append(
            f"retrieved to be looked at: {len(report.looked_at)} object(s) in {series} series, "
            "not part of the package (indexed all the same)"
        )
    return lines


def report_dict(report: FetchReport) -> dict[str, Any]:
    """The same summary for ``--json``: one entry per missing reference and what happened."""
    return {
        "plans": report.plans,
        "outcomes": [
            {
                **missing_dict(o.ref),
                "state": o.state,
                "found_in_series": o.series_uid,
                "retrieve_level": o.level,
                "note": o.note,
                "candidates": [
                    {
                        "series_uid": c.series_uid,
                        "study_uid": c.study_uid,
                        "modality": c.modality,
                        "instances": c.count,
                        "description": c.description,
                    }
                    for c in o.candidates
                ],
            }
            for o in report.outcomes
        ],
        "retrieved": [
            {"sop_instance_uid": s.identity.sop_instance_uid, "path": str(s.path)}
            for s in report.new_objects
        ],
        "series_retrieved_whole": [s.series_uid for s in report.series_retrieved],
        "reverse_found": [{**_stored_dict(s), "role": role} for role, s in report.reverse_found],
        "looked_at": [_stored_dict(s) for s in report.looked_at],
        "methods": sorted(report.methods),
        "still_missing": {
            plan: [missing_dict(m) for m in refs] for plan, refs in report.still_missing.items()
        },
        "complete": report.complete,
    }


def _stored_dict(stored: StoredObject) -> dict[str, str]:
    ident = stored.identity
    return {
        "sop_instance_uid": ident.sop_instance_uid,
        "series_uid": ident.series_uid,
        "modality": ident.modality,
        "path": str(stored.path),
    }
