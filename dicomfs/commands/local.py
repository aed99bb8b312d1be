"""Commands that build or show the view on this host: index, demo-data, mount, serve, ls, cat."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from dicomfs.commands.common import (
    SubParsers,
    add_index_option,
    add_names_option,
    command,
    index_path,
    open_view,
)
from dicomfs.errors import EXIT_ERROR, EXIT_OK, EXIT_SOURCE
from dicomfs.index import IndexReader, IndexWriter
from dicomfs.view.paths import NAMES

PART10_HELP = (
    "serve files written without a PS3.10 header (Monaco and other exports) with a "
    "generated preamble and File Meta in front of the unchanged dataset"
)


def register(sub: SubParsers) -> None:
    """Add index, demo-data, mount, serve, ls and cat to the main parser."""
    p = command(
        sub, "index", cmd_index, "scan source folders into the index (unchanged files are skipped)"
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="folder to scan")
    add_index_option(p)
    p.add_argument(
        "--workers", type=int, default=None, help="parser processes (default: CPU count)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = command(sub, "demo-data", cmd_demo_data, "write synthetic RT patients to try dicomfs on")
    p.add_argument("dest", metavar="DIR")
    p.add_argument("--patients", type=int, default=2)
    p.add_argument("--ct-slices", type=int, default=8)
    p.add_argument(
        "--no-hostile",
        dest="hostile",
        action="store_false",
        help="omit the deliberately broken files",
    )

    p = command(sub, "mount", cmd_mount, "mount an existing index read-only (foreground)")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    add_index_option(p)
    p.add_argument("--allow-other", action="store_true", help="let other users use the mount")
    p.add_argument("--group", metavar="NAME", help="group owning the virtual folders (mode 0750)")
    p.add_argument(
        "--symlinks",
        action="store_true",
        help="show source files as symbolic links to their paths (native read speed)",
    )
    p.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="DIR",
        help="a source folder of the index: the mount reports the free space of its "
        "filesystem (repeatable; default: the filesystem holding the index)",
    )
    p.add_argument(
        "--names",
        choices=NAMES,
        help="what paths may show: uid, id or name (default id; uid with --allow-other)",
    )
    _add_part10_option(p)

    p = command(
        sub,
        "serve",
        cmd_serve,
        "index, watch and mount in one process (the main job; Ctrl-C stops)",
    )
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="folder to index and watch")
    p.add_argument(
        "--mount",
        metavar="MOUNTPOINT",
        help="where to mount the view (optional with --webdav-port)",
    )
    add_index_option(p)
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
    p.add_argument(
        "--names",
        choices=NAMES,
        help="what paths may show: uid (UIDs only), id (adds patients/ by PatientID, plan "
        "labels, descriptions) or name (adds PatientName); default id for a private mount, "
        "uid with --allow-other and for WebDAV",
    )
    p.add_argument(
        "--part10",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=PART10_HELP,
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
    p.add_argument(
        "--webdav-port", type=int, metavar="PORT", help="also serve the view over WebDAV on PORT"
    )
    p.add_argument("--webdav-bind", metavar="ADDR", help="WebDAV address (default 127.0.0.1)")
    p.add_argument("--webdav-run-as", metavar="USER", help="WebDAV reads as USER (default nobody)")
    p.add_argument("--webdav-users", metavar="FILE", help="WebDAV users file (HTTP Basic)")
    p.add_argument("--webdav-tls-cert", metavar="PEM", help="serve WebDAV over HTTPS")
    p.add_argument("--webdav-tls-key", metavar="PEM", help="the TLS certificate's key")

    p = command(sub, "ls", cmd_ls, "list a path of the mount layout without mounting")
    p.add_argument("path", metavar="PATH", nargs="?", default="/")
    p.add_argument("-l", "--long", action="store_true")
    add_index_option(p)
    add_names_option(p, _NAMES_HELP)
    _add_part10_option(p)

    p = command(sub, "cat", cmd_cat, "print a file of the mount layout without mounting")
    p.add_argument("path", metavar="PATH")
    add_index_option(p)
    add_names_option(p, _NAMES_HELP)
    _add_part10_option(p)


_NAMES_HELP = "what paths may show (default id: patients/ by PatientID; uid: none; name: names too)"


def _add_part10_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--part10", action="store_true", help=PART10_HELP)


def cmd_index(args: argparse.Namespace) -> int:
    from dicomfs.live.progress import Progress
    from dicomfs.live.scan import reconcile

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


def cmd_demo_data(args: argparse.Namespace) -> int:
    from dicomfs.demo.patients import write_demo

    demo = write_demo(
        Path(args.dest), patients=args.patients, ct_slices=args.ct_slices, hostile=args.hostile
    )
    print(f"wrote {len(demo.patients)} synthetic RT patients to {demo.root}")
    for patient in demo.patients:
        print(f"  plan {patient.plan_uid}")
    print(f"try: dicomfs index {demo.root} && dicomfs package {demo.patients[0].plan_uid}")
    return EXIT_OK


def cmd_mount(args: argparse.Namespace) -> int:
    from dicomfs.fuse.mount import run_mount

    path = index_path(args)
    IndexReader(path).close()  # fail early and clearly when there is no index
    return run_mount(
        Path(args.mountpoint),
        path,
        allow_other=args.allow_other,
        group=args.group,
        symlinks=args.symlinks,
        sources=[Path(d) for d in args.source],
        names=args.names,
        part10=args.part10,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from dicomfs.service.config import resolve
    from dicomfs.service.serve import serve

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
            "webdav_port": args.webdav_port,
            "webdav_bind": args.webdav_bind,
            "webdav_run_as": args.webdav_run_as,
            "webdav_users": args.webdav_users,
            "webdav_tls_cert": args.webdav_tls_cert,
            "webdav_tls_key": args.webdav_tls_key,
            "symlinks": args.symlinks,
            "names": args.names,
            "part10": args.part10,
        }
    )
    if not args.verbose:
        logging.getLogger().setLevel(settings.log_level)
    return serve(settings)


def _view(args: argparse.Namespace) -> Any:
    return open_view(args, args.names, part10=args.part10)


def cmd_ls(args: argparse.Namespace) -> int:
    from dicomfs.view.listing import format_listing
    from dicomfs.view.nodes import ViewError

    try:
        out = format_listing(_view(args), args.path, long=args.long)
    except ViewError as exc:
        print(f"dicomfs ls: {args.path}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if out:
        print(out)
    return EXIT_OK


def cmd_cat(args: argparse.Namespace) -> int:
    from dicomfs.view.listing import cat_bytes
    from dicomfs.view.nodes import ViewError

    try:
        data = cat_bytes(_view(args), args.path)
    except ViewError as exc:
        print(f"dicomfs cat: {args.path}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return EXIT_OK
