"""What the mount's generated files and the CLI's answers say, in one place.

``dicomfs missing`` and ``plans/<uid>/missing.txt`` must say exactly the
same thing, as must ``dicomfs package --json`` and ``manifest.json``, so
both front ends use these functions.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

from dicomfs.index import RejectedRow, graph
from dicomfs.view.names import member_name

# Whether a reader may see a source path (reliability.md I3): source folders
# are often named after patients, so the mount's generated files name a
# source path only to a reader who could list the folder that holds it.
Reveal = Callable[[str], bool]
WITHHELD = "<withheld>"

# What escape_field changes: backslash, control characters and surrogates.
_NEEDS_ESCAPE = re.compile("[\\\\\x00-\x1f\x7f\ud800-\udfff]")

MISSING_HEADER = "# level\tuid\texpected\treferenced_by\tattribute\tstudy_uid\tseries_uid\n"
PLAN_FOLDERS = ("references", "referenced-by", "registrations")
_FOLDER_ORDER = (*PLAN_FOLDERS, "related", "candidates")


def escape_field(text: str) -> str:
    """One tab-separated field: backslash, tab, newline and control characters escaped.

    Undecodable bytes of a non-UTF-8 file name (surrogateescape) become ``\\xNN``.
    Most fields need nothing: one regex search answers that before the
    character loop (a 600,000-line missing.txt spent seconds in the loop).
    """
    if _NEEDS_ESCAPE.search(text) is None:
        return text
    out = []
    for ch in text:
        if "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif "\ud800" <= ch <= "\udfff":
            out.append(f"\\u{ord(ch):04x}")  # a lone surrogate cannot be UTF-8
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def display_path(path: str) -> str:
    """A source path as text; undecodable bytes of non-UTF-8 names become ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def format_missing(missing: Iterable[graph.MissingRef]) -> bytes:
    """missing.txt: 0 bytes when complete, else a header comment and one line per reference.

    Columns: level (instance/series), uid, expected (the role the reference
    plays, e.g. structure_set), referenced_by (SOP UID of the object holding
    the reference), attribute (its path), study_uid and series_uid where the
    referencing object says the target lives (empty when it does not).
    """
    rows = sorted(missing, key=lambda m: (m.level.value, m.uid, m.referenced_by))
    if not rows:
        return b""
    lines = [MISSING_HEADER]
    for m in rows:
        fields = [m.level.value, m.uid, m.expected, m.referenced_by, m.attribute]
        fields += [m.study_uid, m.series_uid]
        lines.append("\t".join(escape_field(f) for f in fields) + "\n")
    return "".join(lines).encode("utf-8")


def missing_dict(m: graph.MissingRef) -> dict[str, str]:
    return {
        "level": m.level.value,
        "uid": m.uid,
        "expected": m.expected,
        "referenced_by": m.referenced_by,
        "attribute": m.attribute,
        "study_uid": m.study_uid,
        "series_uid": m.series_uid,
    }


def manifest(pkg: graph.Package, reveal: Reveal | None = None) -> dict[str, Any]:
    """manifest.json: every member once per folder it is in, sorted; keys sorted.

    ``name`` is the file name in ``folder`` (null for related/candidates,
    which have no folder, and for members whose UID may not be a name).
    ``source_path`` is null where ``reveal`` withholds it.
    """
    groups: dict[str, list[graph.Member]] = {
        "references": pkg.references,
        "referenced-by": pkg.referenced_by,
        "registrations": pkg.registrations,
        "related": pkg.related,
        "candidates": pkg.candidates,
    }
    members = []
    for folder in _FOLDER_ORDER:
        for m in sorted(groups[folder], key=lambda m: m.sop_uid):
            inst = m.instance
            members.append(
                {
                    "sop_instance_uid": inst.sop_uid,
                    "name": member_name(inst) if folder in PLAN_FOLDERS else None,
                    "modality": inst.modality,
                    "sop_class_uid": inst.sop_class,
                    "role": m.role,
                    "attribute": m.attribute,
                    "via": m.via,
                    "direction": m.direction,
                    "provenance": m.provenance.value,
                    "folder": folder,
                    "source_path": _shown(inst.file.path, reveal),
                    "note": m.note,
                }
            )
    doc = {
        "plan": pkg.root.sop_uid,
        "label": pkg.root.label,
        "members": members,
        "missing": [
            missing_dict(m)
            for m in sorted(pkg.missing, key=lambda m: (m.level.value, m.uid, m.referenced_by))
        ],
        "truncated": pkg.truncated,
    }
    return doc


def _shown(path: str, reveal: Reveal | None) -> str | None:
    return display_path(path) if reveal is None or reveal(path) else None


def format_manifest(pkg: graph.Package, reveal: Reveal | None = None) -> bytes:
    """manifest.json; the same document as ``dicomfs package --json``."""
    return json_lines(manifest(pkg, reveal)).encode()


def json_lines(doc: dict[str, Any]) -> str:
    """``doc`` as JSON with each key, and each item of a list, on a line of its own.

    As readable as ``indent=2`` for a member list, and ten times faster: only
    without ``indent`` does ``json`` use its C encoder, and a plan's manifest
    is made for every plan a ``find`` lists (about 6 ms each the other way).
    """
    dump = functools.partial(json.dumps, sort_keys=True, ensure_ascii=False)
    lines = []
    for key in sorted(doc):
        value = doc[key]
        if isinstance(value, list) and value:
            items = ",\n    ".join(dump(item) for item in value)
            lines.append(f"  {dump(key)}: [\n    {items}\n  ]")
        else:
            lines.append(f"  {dump(key)}: {dump(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def format_rejected(rows: Iterable[RejectedRow], reveal: Reveal | None = None) -> bytes:
    """rejected.txt and ``dicomfs rejected``: ``path<TAB>kind<TAB>reason`` per line, escaped.

    A path ``reveal`` withholds is written as ``<withheld>``; kind and reason stay.
    """
    lines = []
    for r in rows:
        path = escape_field(r.path) if reveal is None or reveal(r.path) else WITHHELD
        lines.append(f"{path}\t{escape_field(r.kind)}\t{escape_field(r.reason)}\n")
    return "".join(lines).encode("utf-8")
