"""The ``dicomfs`` command line: parse arguments, call one library function, report.

Every command opens the index, asks the core (index, graph, scan, view)
one question and prints the answer; library exceptions become one clear
message and a documented exit code (README "Commands").
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dicomfs import __version__, graph
from dicomfs.errors import (
    ConfigError,
    DicomfsError,
    IndexCorruptError,
    IndexUnavailableError,
    MountError,
    NotAPlanError,
    SourceError,
    UnknownUidError,
)
from dicomfs.index import IndexReader, IndexWriter, default_index_path
from dicomfs.report import (
    display_path,
    format_missing,
    format_rejected,
    manifest,
    missing_dict,
)

log = logging.getLogger("dicomfs")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNKNOWN_UID = 3
EXIT_INDEX = 4
EXIT_SOURCE = 5
EXIT_MOUNT = 6

_EXIT_CODES: list[tuple[type[DicomfsError], int]] = [
    (UnknownUidError, EXIT_UNKNOWN_UID),
    (NotAPlanError, EXIT_UNKNOWN_UID),
    (IndexUnavailableError, EXIT_INDEX),
    (IndexCorruptError, EXIT_INDEX),
    (SourceError, EXIT_SOURCE),
    (MountError, EXIT_MOUNT),
    (ConfigError, EXIT_USAGE),
]


def index_path(args: argparse.Namespace) -> Path:
    """--index, then DICOMFS_INDEX, then the user's data directory."""
    if getattr(args, "index", None):
        return Path(args.index)
    env = os.environ.get("DICOMFS_INDEX")
    return Path(env) if env else default_index_path()


def _reader(args: argparse.Namespace) -> IndexReader:
    return IndexReader(index_path(args))


def _emit(args: argparse.Namespace, data: Any, text: Callable[[], str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        out = text()
        if out:
            print(out)


# -- index ---------------------------------------------------------------


def cmd_index(args: argparse.Namespace) -> int:
    from dicomfs.progress import Progress
    from dicomfs.scan import reconcile

    writer = IndexWriter(index_path(args))
    progress = None if args.quiet else Progress("indexing")
    try:
        report = reconcile(writer, args.sources, workers=args.workers, progress=progress)
    finally:
        if progress is not None:
            progress.close()
        writer.close()
    rate = report.parsed / report.elapsed if report.elapsed > 0 else 0.0
    print(
        f"{report.seen} files seen, {report.skipped} unchanged, {report.parsed} parsed "
        f"({rate:,.0f} files/s): {report.indexed} indexed, {report.rejected} rejected, "
        f"{report.removed} removed, {report.conflicts} conflicts, "
        f"{report.benign_duplicates} identical duplicates in {report.elapsed:.1f}s"
    )
    if report.rejected:
        print("see `dicomfs rejected` for the reasons")
    for folder in report.unreadable_dirs:
        print(f"warning: could not read folder {folder!r}; its files were kept as they were")
    if report.mass_loss_alarm:
        print(f"ALARM: {report.mass_loss_alarm}", file=sys.stderr)
        return EXIT_SOURCE
    return EXIT_OK


# -- graph questions -----------------------------------------------------


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
    reader = _reader(args)
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

    _emit(args, rows, text)
    return EXIT_OK


def cmd_referenced_by(args: argparse.Namespace) -> int:
    reader = _reader(args)
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
    _emit(
        args,
        rows,
        lambda: "\n".join(
            f"{r['modality']}\t{r['source_uid']}\t{r['role']}\t{r['attribute']}" for r in rows
        ),
    )
    return EXIT_OK


def _plan_package(args: argparse.Namespace) -> graph.Package:
    reader = _reader(args)
    root = graph.resolve(reader, args.plan_uid)
    if not root.is_plan and not getattr(args, "any", False):
        raise NotAPlanError(
            f"{args.plan_uid} is a {root.modality or root.sop_class} object, not an RT Plan "
            "(use --any to see the graph view of any object)"
        )
    return graph.package(reader, args.plan_uid)


def cmd_package(args: argparse.Namespace) -> int:
    pkg = _plan_package(args)
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

    _emit(args, data, text)
    return EXIT_OK


def cmd_missing(args: argparse.Namespace) -> int:
    pkg = _plan_package(args)
    _emit(
        args,
        [missing_dict(m) for m in pkg.missing],
        lambda: format_missing(pkg.missing).decode().rstrip("\n"),
    )
    return EXIT_OK


def cmd_rejected(args: argparse.Namespace) -> int:
    rows = _reader(args).rejected()
    data = [{"path": display_path(r.path), "kind": r.kind, "reason": r.reason} for r in rows]
    _emit(args, data, lambda: format_rejected(rows).decode().rstrip("\n"))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    reader = _reader(args)
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

    _emit(args, data, text)
    return EXIT_OK


def cmd_demo_data(args: argparse.Namespace) -> int:
    from dicomfs.demo import write_demo

    demo = write_demo(
        Path(args.dest), patients=args.patients, ct_slices=args.ct_slices, hostile=args.hostile
    )
    print(f"wrote {len(demo.patients)} synthetic RT patients to {demo.root}")
    for patient in demo.patients:
        print(f"  plan {patient.plan_uid}")
    print(f"try: dicomfs index {demo.root} && dicomfs package {demo.patients[0].plan_uid}")
    return EXIT_OK


# -- filesystem ----------------------------------------------------------


def cmd_mount(args: argparse.Namespace) -> int:
    from dicomfs.mount import run_mount

    path = index_path(args)
    IndexReader(path).close()  # fail early and clearly when there is no index
    return run_mount(
        Path(args.mountpoint),
        path,
        allow_other=args.allow_other,
        group=args.group,
        symlinks=args.symlinks,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from dicomfs.config import resolve
    from dicomfs.serve import serve

    settings = resolve(
        {
            "sources": args.sources,
            "mountpoint": args.mount,
            "index": args.index,
            "config": args.config,
            "settle_seconds": args.settle,
            "reconcile_interval": args.reconcile_interval,
            "watch": args.watch,
            "allow_other": args.allow_other,
            "group": args.group,
            "workers": args.workers,
            "scp_port": args.scp_port,
            "ae_title": args.ae_title,
            "scp_bind": args.scp_bind,
            "scp_allow": args.scp_allow,
            "scp_store": args.scp_store,
            "symlinks": args.symlinks,
        }
    )
    if not args.verbose:
        logging.getLogger().setLevel(settings.log_level)
    return serve(settings)


def _view(args: argparse.Namespace) -> Any:
    import time

    from dicomfs.view import View

    path = index_path(args)
    IndexReader(path).close()
    return View(
        lambda: IndexReader(path),
        dir_uid=os.getuid(),
        dir_gid=os.getgid(),
        mount_time_ns=time.time_ns(),
    )


def cmd_ls(args: argparse.Namespace) -> int:
    from dicomfs.view import ViewError, format_listing

    try:
        out = format_listing(_view(args), args.path, long=args.long)
    except ViewError as exc:
        print(f"dicomfs ls: {args.path}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if out:
        print(out)
    return EXIT_OK


def cmd_cat(args: argparse.Namespace) -> int:
    from dicomfs.view import ViewError, cat_bytes

    try:
        data = cat_bytes(_view(args), args.path)
    except ViewError as exc:
        print(f"dicomfs cat: {args.path}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return EXIT_OK


# -- parser --------------------------------------------------------------


def _add_index_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--index",
        metavar="PATH",
        help="index file (default: $DICOMFS_INDEX, else ~/.local/share/dicomfs/index.sqlite)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomfs",
        description="Index DICOM files by UID and mount them organized by what they reference.",
    )
    parser.add_argument("--version", action="version", version=f"dicomfs {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, func: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = command(
        "index", cmd_index, "scan source folders into the index (unchanged files are skipped)"
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="folder to scan")
    _add_index_option(p)
    p.add_argument(
        "--workers", type=int, default=None, help="parser processes (default: CPU count)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    for name, func, help_text in (
        ("refs", cmd_refs, "references stored in an object (forward edges)"),
        ("referenced-by", cmd_referenced_by, "objects that reference a UID (reverse edges)"),
    ):
        p = command(name, func, help_text)
        p.add_argument("uid", metavar="UID")
        _add_index_option(p)
        p.add_argument("--json", action="store_true", help="machine-readable output")

    for name, func, help_text in (
        (
            "package",
            cmd_package,
            "everything an RT Plan needs: its package, with how each was found",
        ),
        ("missing", cmd_missing, "references of a plan's package that are not indexed"),
    ):
        p = command(name, func, help_text)
        p.add_argument("plan_uid", metavar="PLAN_UID")
        _add_index_option(p)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--any", action="store_true", help="accept any object, not only plans")

    for name, func, help_text in (
        ("rejected", cmd_rejected, "files that could not be indexed, with the reason"),
        ("status", cmd_status, "counts, duplicates and last scan of the index"),
    ):
        p = command(name, func, help_text)
        _add_index_option(p)
        p.add_argument("--json", action="store_true", help="machine-readable output")

    p = command("demo-data", cmd_demo_data, "write synthetic RT patients to try dicomfs on")
    p.add_argument("dest", metavar="DIR")
    p.add_argument("--patients", type=int, default=2)
    p.add_argument("--ct-slices", type=int, default=8)
    p.add_argument(
        "--no-hostile",
        dest="hostile",
        action="store_false",
        help="omit the deliberately broken files",
    )

    p = command("mount", cmd_mount, "mount an existing index read-only (foreground)")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    _add_index_option(p)
    p.add_argument("--allow-other", action="store_true", help="let other users use the mount")
    p.add_argument("--group", metavar="NAME", help="group owning the virtual folders (mode 0750)")
    p.add_argument(
        "--symlinks",
        action="store_true",
        help="show source files as symbolic links to their paths (native read speed)",
    )

    p = command(
        "serve", cmd_serve, "index, watch and mount in one process (the main job; Ctrl-C stops)"
    )
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="folder to index and watch")
    p.add_argument("--mount", metavar="MOUNTPOINT", help="where to mount the view")
    _add_index_option(p)
    p.add_argument(
        "--config",
        metavar="PATH",
        help="TOML settings (default: /etc/dicomfs/dicomfs.toml if present)",
    )
    p.add_argument(
        "--settle", type=float, metavar="SECONDS", help="wait until a file is unchanged this long"
    )
    p.add_argument(
        "--reconcile-interval", type=float, metavar="SECONDS", help="full rescan period (600)"
    )
    p.add_argument(
        "--watch", choices=("inotify", "poll"), help="poll: periodic rescans only (NFS/CIFS)"
    )
    p.add_argument(
        "--allow-other",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="let other users use the mount",
    )
    p.add_argument("--group", metavar="NAME", help="group owning the virtual folders (mode 0750)")
    p.add_argument("--workers", type=int, help="parser processes (default: CPU count)")
    p.add_argument(
        "--symlinks",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show source files as symbolic links to their paths (native read speed)",
    )
    p.add_argument("--scp-port", type=int, metavar="PORT", help="also receive C-STORE on PORT")
    p.add_argument("--ae-title", metavar="TITLE", help="our AE title (default DICOMFS)")
    p.add_argument("--scp-bind", metavar="ADDR", help="receiver address (default 127.0.0.1)")
    p.add_argument(
        "--scp-allow", action="append", metavar="AE", help="accept only these calling AE titles"
    )
    p.add_argument(
        "--scp-store", metavar="DIR", help="where received objects go (default SOURCE/received)"
    )

    p = command("ls", cmd_ls, "list a path of the mount layout without mounting")
    p.add_argument("path", metavar="PATH", nargs="?", default="/")
    p.add_argument("-l", "--long", action="store_true")
    _add_index_option(p)

    p = command("cat", cmd_cat, "print a file of the mount layout without mounting")
    p.add_argument("path", metavar="PATH")
    _add_index_option(p)

    from dicomfs import export
    from dicomfs.net import register as register_network

    register_network(sub)
    export.register(sub)
    return parser


def configure_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        return int(args.func(args))
    except DicomfsError as exc:
        print(f"dicomfs: error: {exc}", file=sys.stderr)
        for cls, code in _EXIT_CODES:
            if isinstance(exc, cls):
                return code
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("dicomfs: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
