"""How packages and missing lists are written out, shared by the CLI and the mount.

``dicomfs missing`` and ``plans/<uid>/missing.txt`` must say exactly the
same thing, so both are produced here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dicomfs import graph

MISSING_HEADER = "# level\tuid\texpected\treferenced_by\tattribute\tstudy_uid\tseries_uid"


def _member_dict(member: graph.Member, folder: str) -> dict[str, Any]:
    inst = member.instance
    return {
        "sop_instance_uid": inst.sop_uid,
        "modality": inst.modality,
        "sop_class_uid": inst.sop_class,
        "role": member.role,
        "attribute": member.attribute,
        "via": member.via,
        "direction": member.direction,
        "provenance": member.provenance.value,
        "folder": folder,
        "source_path": inst.file.path,
        "note": member.note,
    }


def missing_dict(ref: graph.MissingRef) -> dict[str, str]:
    return {
        "level": ref.level.value,
        "uid": ref.uid,
        "expected": ref.expected,
        "referenced_by": ref.referenced_by,
        "attribute": ref.attribute,
        "study_uid": ref.study_uid,
        "series_uid": ref.series_uid,
    }


def package_dict(pkg: graph.Package) -> dict[str, Any]:
    members = (
        [_member_dict(m, "references") for m in pkg.references]
        + [_member_dict(m, "referenced-by") for m in pkg.referenced_by]
        + [_member_dict(m, "registrations") for m in pkg.registrations]
        + [_member_dict(m, "related") for m in pkg.related]
        + [_member_dict(m, "candidates") for m in pkg.candidates]
    )
    return {
        "root": pkg.root.sop_uid,
        "modality": pkg.root.modality,
        "label": pkg.root.label,
        "members": members,
        "missing": [missing_dict(m) for m in pkg.missing],
        "truncated": pkg.truncated,
    }


def format_missing(refs: Sequence[graph.MissingRef]) -> str:
    """The tab-separated missing list, identical to the mount's missing.txt.

    Empty (no header) when nothing is missing, so ``test -s missing.txt``
    tells whether a package is complete.
    """
    if not refs:
        return ""
    rows = [
        "\t".join(
            (
                r.level.value,
                r.uid,
                r.expected,
                r.referenced_by,
                r.attribute,
                r.study_uid,
                r.series_uid,
            )
        )
        for r in refs
    ]
    return "\n".join([MISSING_HEADER, *rows]) + "\n"
