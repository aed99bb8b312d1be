"""Graph and index questions: refs, referenced-by, package, missing, rejected, status."""

from __future__ import annotations

import argparse
from typing import Any

from dicomfs.commands.common import (
    SubParsers,
    add_index_option,
    add_json_option,
    command,
    emit,
    open_reader,
)
from dicomfs.errors import EXIT_OK, NotAPlanError, UnknownUidError
from dicomfs.index import graph
from dicomfs.view.report import (
    display_path,
    format_missing,
    format_rejected,
    manifest,
    missing_dict,
)


def register(sub: SubParsers) -> None:
    """Add the query subcommands to the main parser."""
    for name, func, help_text in (
        ("refs", cmd_refs, "references stored in an object (forward edges)"),
        ("referenced-by", cmd_referenced_by, "objects that reference a UID (reverse edges)"),
    ):
        p = command(sub, name, func, help_text)
        p.add_argument("uid", metavar="UID")
        add_index_option(p)
        add_json_option(p)

    for name, func, help_text in (
        (
            "package",
            cmd_package,
            "everything an RT Plan needs: its package, with how each was found",
        ),
        ("missing", cmd_missing, "references of a plan's package that are not indexed"),
    ):
        p = command(sub, name, func, help_text)
        p.add_argument("plan_uid", metavar="PLAN_UID")
        add_index_option(p)
        add_json_option(p)
        p.add_argument("--any", action="store_true", help="accept any object, not only plans")

    for name, func, help_text in (
        ("rejected", cmd_rejected, "files that could not be indexed, with the reason"),
        ("status", cmd_status, "counts, duplicates and last scan of the index"),
    ):
        p = command(sub, name, func, help_text)
        add_index_option(p)
        add_json_option(p)


def _edge_dict(edge: Any, found: bool | None = None) -> dict[str, Any]:
    data = {
        "target_uid": edge.target_uid,
        "level": edge.level.value,
        "role": edge.role.value,
        "attribute": edge.path,
        "class_hint": edge.class_hint,
        "qualifiers": dict(edge.qualifiers),
        "study_uid": edge.study_uid,
        "series_uid": edge.series_uid,
    }
    if found is not None:
        data["indexed"] = found
    return data


def cmd_refs(args: argparse.Namespace) -> int:
    reader = open_reader(args)
    edges = graph.forward(reader, args.uid)
    found = reader.instances(e.target_uid for e in edges)
    rows = [
        _edge_dict(e, e.target_uid in found if e.level.value == "instance" else None) for e in edges
    ]

    def text() -> str:
        lines = []
        for e in edges:
            state = ""
            if e.level.value == "instance":
                state = "found" if e.target_uid in found else "MISSING"
            lines.append(f"{e.role.value}\t{e.level.value}\t{e.target_uid}\t{e.path}\t{state}")
        return "\n".join(lines)

    emit(args, rows, text)
    return EXIT_OK


def cmd_referenced_by(args: argparse.Namespace) -> int:
    reader = open_reader(args)
    hits = graph.reverse(reader, args.uid)
    if not hits and reader.instance(args.uid) is None:
        raise UnknownUidError(f"{args.uid!r} is neither indexed nor referenced by anything indexed")
    sources = reader.instances(src for src, _ in hits)
    rows = [
        {
            "source_uid": src,
            "modality": sources[src].modality if src in sources else "",
            **_edge_dict(e),
        }
        for src, e in hits
    ]
    emit(
        args,
        rows,
        lambda: "\n".join(
            f"{r['modality']}\t{r['source_uid']}\t{r['role']}\t{r['attribute']}" for r in rows
        ),
    )
    return EXIT_OK


def plan_package(args: argparse.Namespace) -> graph.Package:
    reader = open_reader(args)
    root = graph.resolve(reader, args.plan_uid)
    if not root.is_plan and not getattr(args, "any", False):
        raise NotAPlanError(
            f"{args.plan_uid} is a {root.modality or root.sop_class} object, not an RT Plan "
            "(use --any to see the graph view of any object)"
        )
    return graph.package(reader, args.plan_uid)


def cmd_package(args: argparse.Namespace) -> int:
    pkg = plan_package(args)
    data = manifest(pkg)

    def text() -> str:
        lines = [f"{pkg.root.modality} {pkg.root.sop_uid} {pkg.root.label}".rstrip()]
        for m in data["members"]:
            flag = " (inferred)" if m["provenance"] == "inferred" else ""
            lines.append(
                f"  {m['folder']:<14} {m['modality']:<8} {m['sop_instance_uid']}  "
                f"{m['role']}{flag}  {m['source_path']}"
            )
        lines.append(f"  {len(pkg.missing)} missing" + (" (truncated)" if pkg.truncated else ""))
        return "\n".join(lines)

    emit(args, data, text)
    return EXIT_OK


def cmd_missing(args: argparse.Namespace) -> int:
    pkg = plan_package(args)
    emit(
        args,
        [missing_dict(m) for m in pkg.missing],
        lambda: format_missing(pkg.missing).decode().rstrip("\n"),
    )
    return EXIT_OK


def cmd_rejected(args: argparse.Namespace) -> int:
    rows = open_reader(args).rejected()
    data = [{"path": display_path(r.path), "kind": r.kind, "reason": r.reason} for r in rows]
    emit(args, data, lambda: format_rejected(rows).decode().rstrip("\n"))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    reader = open_reader(args)
    status = reader.status()
    data = status.as_dict()
    conflicts = reader.conflicts()
    data["conflict_details"] = [
        {"sop_uid": c.sop_uid, "kind": c.kind, "kept": c.kept_path, "other": c.other_path}
        for c in conflicts
    ]

    def text() -> str:
        lines = [
            f"index         {status.index_path} (schema {status.schema_version})",
            f"instances     {status.instances} ({status.plans} plans)",
            f"files         {status.files} ({status.indexed_files} indexed, "
            f"{status.rejected_files} rejected)",
            f"duplicates    {status.conflicts} conflicting, {status.benign_duplicates} identical",
        ]
        if status.capped_objects:
            lines.append(
                f"capped        {status.capped_objects} objects hit a size bound while parsing: "
                "indexed with their first references only (flag edges_capped)"
            )
        if status.details_pending:
            lines.append(
                "upgraded      names, dates and descriptions are read again from every file "
                "at the next scan (`dicomfs index`, or serve's): patients/ answers "
                "'try again' until then"
            )
        if status.last_scan:
            import datetime as dt

            when = dt.datetime.fromtimestamp(status.last_scan).isoformat(timespec="seconds")
            lines.append(f"last scan     {when}")
        for c in conflicts:
            if c.kind == "conflict":
                lines.append(
                    f"conflict      {c.sop_uid}: serving {c.kept_path}, ignoring {c.other_path}"
                )
        return "\n".join(lines)

    emit(args, data, text)
    return EXIT_OK
