"""The ``receive`` and ``fetch`` subcommands (the DICOM network code lives in ``dicomfs.net``).

Each handler resolves its settings, calls one library function and turns the
result into a message and an exit status, like the other command modules.
pynetdicom is imported only when a handler runs, so building the parser
stays cheap.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from dicomfs.commands.common import (
    SubParsers,
    add_index_option,
    add_json_option,
    command,
    index_path,
)
from dicomfs.errors import EXIT_OK, ConfigError
from dicomfs.net.pacs import check_ae_title, check_port, resolve_pacs

EXIT_INCOMPLETE = 1  # the fetch ran, but something is still missing


def _store_options(p: argparse.ArgumentParser) -> None:
    """Options both directions share: how the store is laid out, and the index."""
    p.add_argument(
        "--flat", action="store_true", help="no <study>/<series>/ sub-folders in the store"
    )
    add_index_option(p)


def register(sub: SubParsers) -> None:
    """Add ``receive`` and ``fetch`` to the main parser's subcommands."""
    text = "accept objects over DICOM (C-STORE, C-ECHO) into a store folder and index them"
    p = command(sub, "receive", cmd_receive, text)
    p.add_argument("store", metavar="STORE", help="folder the received files are written to")
    p.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    p.add_argument("--ae-title", default="DICOMFS", help="our AE title (default: DICOMFS)")
    p.add_argument(
        "--bind",
        default="127.0.0.1",
        metavar="ADDR",
        help="address to listen on (default: loopback)",
    )
    p.add_argument(
        "--allow",
        action="extend",
        nargs="+",
        default=[],
        metavar="AE",
        help="accept associations only from these calling AE titles",
    )
    p.add_argument(
        "--no-index",
        action="store_true",
        help="only write files (when `dicomfs serve` already watches the store)",
    )
    _store_options(p)

    text = "retrieve what a plan's package is missing (and what names the plan) from a PACS"
    p = command(sub, "fetch", cmd_fetch, text)
    p.add_argument("plan_uid", nargs="?", metavar="PLAN_UID")
    p.add_argument(
        "--all-missing", action="store_true", help="every indexed plan with something missing"
    )
    p.add_argument(
        "--from",
        dest="pacs",
        required=True,
        metavar="PACS",
        help="AE@HOST:PORT, or a NAME from a [pacs.NAME] table of the config file",
    )
    p.add_argument(
        "--config", metavar="FILE", help="config file (default: /etc/dicomfs/dicomfs.toml)"
    )
    p.add_argument(
        "--store",
        metavar="DIR",
        help="folder retrieved files are written to (default: $DICOMFS_STORE)",
    )
    p.add_argument("--our-ae", default="DICOMFS", metavar="AE", help="our AE title")
    p.add_argument(
        "--method",
        choices=("auto", "get", "move"),
        default="auto",
        help="C-GET, C-MOVE, or auto: C-GET when the PACS accepts it (default)",
    )
    p.add_argument(
        "--move-port", type=int, metavar="N", help="port for C-MOVE deliveries to --our-ae"
    )
    p.add_argument(
        "--move-bind",
        default="0.0.0.0",
        metavar="ADDR",
        help="address the C-MOVE receiver listens on (default: all)",
    )
    p.add_argument(
        "--move-caller",
        action="append",
        default=[],
        metavar="AE",
        help="AE title the PACS sends C-MOVE deliveries from (default: its own title)",
    )
    p.add_argument(
        "--candidates",
        action="store_true",
        help="for a plan naming no structure set, retrieve every RTSTRUCT series of its study",
    )
    p.add_argument(
        "--forward-only",
        action="store_true",
        help="only what the package names; do not look for the doses, RT images, records "
        "and plans that name the plan",
    )
    p.add_argument(
        "--timeout", type=float, default=300.0, metavar="S", help="network timeout in seconds"
    )
    add_json_option(p, "machine-readable summary")
    _store_options(p)


def cmd_receive(args: argparse.Namespace) -> int:
    from functools import partial

    from dicomfs.net.receive import run_receiver, start_receiver

    # partial, not lambda: bad settings are refused before the receiver starts.
    return run_receiver(
        partial(
            start_receiver,
            Path(args.store),
            port=check_port(args.port, "--port"),
            ae_title=check_ae_title(args.ae_title, "--ae-title"),
            bind=args.bind,
            allowed_callers=[check_ae_title(a, "--allow") for a in args.allow],
            layout="flat" if args.flat else "series",
            index=None if args.no_index else index_path(args),
        )
    )


def cmd_fetch(args: argparse.Namespace) -> int:
    from dicomfs.net.fetch import FetchOptions, fetch
    from dicomfs.net.summary import format_report, report_dict

    if bool(args.plan_uid) == bool(args.all_missing):
        raise ConfigError("give either a PLAN_UID or --all-missing")
    store = args.store or os.environ.get("DICOMFS_STORE")
    if not store:
        raise ConfigError(
            "give --store DIR (or set DICOMFS_STORE): where retrieved files are written; "
            "best a folder inside a source that `dicomfs serve` watches"
        )
    pacs = resolve_pacs(args.pacs, args.config)
    options = FetchOptions(
        store=Path(store),
        index=index_path(args),
        our_ae=check_ae_title(args.our_ae, "--our-ae"),
        method=args.method,
        move_port=None if args.move_port is None else check_port(args.move_port, "--move-port"),
        move_bind=args.move_bind,
        move_callers=tuple(check_ae_title(a, "--move-caller") for a in args.move_caller),
        candidates=args.candidates,
        forward_only=args.forward_only,
        timeout=args.timeout,
        layout="flat" if args.flat else "series",
    )
    report = fetch(pacs, None if args.all_missing else [args.plan_uid], options)
    if args.json:
        print(json.dumps(report_dict(report), indent=2, sort_keys=True))
    else:
        print(format_report(report, options.store))
    sys.stdout.flush()
    return EXIT_OK if report.complete else EXIT_INCOMPLETE
