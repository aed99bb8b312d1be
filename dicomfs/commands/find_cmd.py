"""``dicomfs find``: search the index, print each hit with its path in the mount (issue 10).

The search itself is ``dicomfs.index.search``; this module reads the
options, prints the hits as a table (or ``--json`` for scripts) and makes
each hit's path, in ``mount_path`` only, so that a new tree in the mount
changes one function. ``--names`` is the mount's setting of the same name
(README "Names in paths"): with ``id`` (the default, as a private mount)
paths are under ``patients/``, with ``uid`` the UID trees; the table shows
patient names only with ``name``: a list of names on a screen is more than
most look-ups need. Every value printed comes from a DICOM file: control and
formatting characters are shown as ``?`` so a description cannot drive the
terminal, and nothing is logged.
"""

from __future__ import annotations

import argparse
import os
import sys
import unicodedata
from typing import Any

from dicomfs.commands.common import (
    SubParsers,
    add_index_option,
    add_json_option,
    add_names_option,
    command,
    emit,
    open_reader,
    open_view,
)
from dicomfs.dicom.records import is_safe_uid
from dicomfs.errors import EXIT_OK
from dicomfs.index.search import (
    DEFAULT_LEVEL,
    DEFAULT_LIMIT,
    LEVELS,
    Hit,
    Query,
    find,
    parse_date_range,
)
from dicomfs.view.names import synthetic_name
from dicomfs.view.nodes import Rebuilding
from dicomfs.view.tree import View

_WIDEST = {"MODALITY": 64, "DESCRIPTION": 40}  # cut in the table, whole in --json
_UNPRINTABLE = ("Cc", "Cf", "Cs", "Zl", "Zp")


def register(sub: SubParsers) -> None:
    """Add ``find`` to the main parser."""
    p = command(
        sub, "find", cmd_find, "search the index by patient, name, date, modality or free text"
    )
    p.add_argument(
        "text",
        nargs="*",
        metavar="TEXT",
        help="free text in names, labels and descriptions: whole words, word* for a prefix, "
        '"a phrase"; any case and accents',
    )
    p.add_argument(
        "-p", "--patient", default="", metavar="ID", help="patient ID; wildcards * and ?, any case"
    )
    p.add_argument(
        "--name",
        default="",
        metavar="NAME",
        help="patient name as stored (Family^Given); wildcards * and ?, any case",
    )
    p.add_argument(
        "--date",
        type=_date_range,
        metavar="RANGE",
        help="YYYYMMDD, YYYYMMDD-YYYYMMDD, YYYYMMDD- or -YYYYMMDD: the study date "
        "(for plans the plan date, else their study's)",
    )
    p.add_argument(
        "-m",
        "--modality",
        action="append",
        default=[],
        metavar="MOD",
        help="CT, RTPLAN, ... (repeat, or a comma list): one of them; for patients and "
        "studies, one of their series",
    )
    p.add_argument(
        "-l",
        "--level",
        choices=LEVELS,
        default=DEFAULT_LEVEL,
        help=f"what each hit is (default {DEFAULT_LEVEL}, as findscu)",
    )
    p.add_argument(
        "--limit",
        type=_limit,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"at most N hits (default {DEFAULT_LIMIT}; 0 = all)",
    )
    p.add_argument("--mount", metavar="DIR", help="print paths under this mount point")
    add_names_option(
        p,
        "which tree paths are in (uid: UID paths; id: patients/..., the default) and, "
        "with name, patient names in the table",
    )
    add_index_option(p)
    add_json_option(p, help="machine-readable output (includes patient names and UID paths)")


def mount_path(hit: Hit, mount: str | None = None, view: View | None = None) -> str | None:
    """Where ``hit`` is in the mount, relative to its root or under ``mount``; None if nowhere.

    The one place paths are made: under ``patients/`` when ``view`` has that
    tree (its names come from the view itself, so they are the mount's),
    else in the UID trees, where only UIDs that may be names
    (``records.is_safe_uid``) make paths, as in the mount itself; patients
    have no UID folder.
    """
    path = (human_path(hit, view) if view is not None else None) or uid_path(hit)
    if path is None or mount is None:
        return path
    return os.path.join(mount, path)


def human_path(hit: Hit, view: View) -> str | None:
    level = hit.level
    if level == "plan":
        return view.human_path(hit.patient_id, plan_uid=hit.uid)
    return view.human_path(
        hit.patient_id,
        study_uid=hit.study_uid if level in ("study", "series", "instance") else None,
        series_uid=hit.series_uid if level in ("series", "instance") else None,
        sop_uid=hit.uid if level == "instance" else None,
    )


def uid_path(hit: Hit) -> str | None:
    if hit.level == "study" and is_safe_uid(hit.study_uid):
        return f"by-study/{hit.study_uid}/"
    if hit.level == "series" and is_safe_uid(hit.study_uid) and is_safe_uid(hit.series_uid):
        return f"by-study/{hit.study_uid}/{hit.series_uid}/"
    if hit.level == "instance":  # by-sop lists every instance, by a hash when unsafe
        return (
            f"by-sop/{hit.uid}.dcm" if is_safe_uid(hit.uid) else f"by-sop/{synthetic_name(hit.uid)}"
        )
    if hit.level == "plan" and is_safe_uid(hit.uid):
        return f"plans/{hit.uid}/"
    return None


def cmd_find(args: argparse.Namespace) -> int:
    start, end = args.date or ("", "")
    modalities = tuple(m for value in args.modality for m in value.split(","))
    reader = open_reader(args)
    try:
        if reader.rebuilding_since() is not None:
            print("dicomfs: the index is being rebuilt: hits are incomplete", file=sys.stderr)
        elif reader.details_pending():
            print(
                "dicomfs: the index is reading every file again after an upgrade: names, "
                "dates and descriptions are incomplete until that scan ends",
                file=sys.stderr,
            )
        query = Query(
            patient=args.patient,
            name=args.name,
            date_from=start,
            date_to=end,
            modality=modalities,
            level=args.level,
            text=" ".join(args.text),
            limit=args.limit + 1 if args.limit else 0,  # one more: were there more?
        )
        hits = find(reader, query)
    finally:
        reader.close()
    if args.limit and len(hits) > args.limit:
        hits = hits[: args.limit]
        print(
            f"dicomfs: more than {args.limit} hits, {args.limit} shown "
            "(narrow the search, or --limit 0 for all)",
            file=sys.stderr,
        )
    elif not hits and not args.json:
        print("dicomfs: no match", file=sys.stderr)
    view = _view(args)
    try:
        paths = [_paths(hit, args.mount, view) for hit in hits]
    finally:
        if view is not None:
            view.close()
    emit(
        args,
        [hit_dict(h, args.mount, *p) for h, p in zip(hits, paths, strict=True)],
        lambda: table(hits, [p[0] for p in paths], args),
    )
    return EXIT_OK


def _view(args: argparse.Namespace) -> View | None:
    """The view whose patients/ names the paths are in; None with ``--names uid``."""
    if args.names == "uid":
        return None
    return open_view(args, args.names, cache_ttl=60.0)  # hits of one patient share listings


def _paths(hit: Hit, mount: str | None, view: View | None) -> tuple[str | None, str | None]:
    """(the path under the names setting, the UID path) of one hit."""
    try:
        path = mount_path(hit, mount, view)
    except Rebuilding:  # details not read again yet after an upgrade (warned above)
        path = mount_path(hit, mount)
    return path, mount_path(hit, mount)


def hit_dict(
    hit: Hit, mount: str | None = None, path: str | None = None, uid_path: str | None = None
) -> dict[str, Any]:
    return {
        "level": hit.level,
        "patient_id": hit.patient_id,
        "patient_name": hit.patient_name,
        "date": hit.date,
        "modalities": list(hit.modalities),
        "description": hit.description,
        "uid": hit.uid,
        "study_uid": hit.study_uid,
        "series_uid": hit.series_uid,
        "instances": hit.instances,
        "path": path if path is not None else mount_path(hit, mount),
        "uid_path": uid_path if uid_path is not None else mount_path(hit, mount),
    }


def table(hits: list[Hit], paths: list[str | None], args: argparse.Namespace) -> str:
    """One line per hit under a header, columns aligned; "" when there is no hit."""
    if not hits:
        return ""
    header = ["PATIENT ID", "NAME", "DATE", "MODALITY", "INSTANCES", "DESCRIPTION", "PATH"]
    if args.names != "name":
        header.remove("NAME")
    if args.level == "patient":
        header.remove("DESCRIPTION")  # a patient has none
    rows = [header]
    for hit, path in zip(hits, paths, strict=True):
        cells = {
            "PATIENT ID": hit.patient_id,
            "NAME": hit.patient_name,
            "DATE": hit.date,
            "MODALITY": ",".join(hit.modalities),
            "INSTANCES": str(hit.instances),
            "DESCRIPTION": hit.description,
            "PATH": path or "-",
        }
        rows.append([_cell(cells[column], _WIDEST.get(column)) for column in header])
    widths = [max(_width(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell + " " * (widths[i] - _width(cell)) for i, cell in enumerate(row)).rstrip()
        for row in rows
    )


def _cell(value: str, widest: int | None) -> str:
    """A value as a table cell: unprintable characters as ``?``, cut to ``widest`` columns."""
    text = "".join("?" if unicodedata.category(c) in _UNPRINTABLE else c for c in value)
    if not text:
        return "-"
    if widest is not None and _width(text) > widest:
        while _width(text) > widest - 1:
            text = text[:-1]
        text += "…"
    return text


def _width(text: str) -> int:
    """Terminal columns: wide East Asian characters take two, combining marks none."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


def _date_range(text: str) -> tuple[str, str]:
    try:
        return parse_date_range(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of hits, 0 for all")
    return value
