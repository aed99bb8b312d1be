"""``dicomfs export PLAN_UID DEST``: a plan's package as DICOM media (export.media writes it)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from dicomfs.commands.common import SubParsers, add_index_option, add_json_option, index_path
from dicomfs.errors import EXIT_OK
from dicomfs.export import BYTE_FOR_BYTE, GENERAL_PURPOSE, PROFILES
from dicomfs.index import IndexReader

_HELP = "copy a plan's package to a folder as DICOM media with a DICOMDIR"


def register(sub: SubParsers) -> None:
    """Add ``dicomfs export`` to the CLI's subcommands."""
    p = sub.add_parser("export", help=_HELP, description=_HELP)
    p.add_argument("plan_uid", metavar="PLAN_UID")
    p.add_argument("dest", metavar="DEST", help="new or empty folder for the File-set")
    add_index_option(p)
    p.add_argument(
        "--registrations",
        action="store_true",
        help="also export the plan's registrations and the images they register",
    )
    p.add_argument(
        "--profile",
        choices=PROFILES,
        default=BYTE_FOR_BYTE,
        help=f"media profile: {BYTE_FOR_BYTE} copies the files as they are (default); "
        f"{GENERAL_PURPOSE} (STD-GEN-CD, as `dcmmkdir -Pgp` checks) writes every file "
        "that is not Explicit VR Little Endian again in it, values unchanged",
    )
    add_json_option(p)
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from dicomfs.export.media import export_plan  # pydicom's writer: only for this command

    reader = IndexReader(index_path(args))
    try:
        result = export_plan(
            reader,
            args.plan_uid,
            args.dest,
            registrations=args.registrations,
            profile=args.profile,
        )
    finally:
        reader.close()
    if args.json:
        doc = {
            "plan_uid": result.plan_uid,
            "dest": str(result.dest),
            "dicomdir": str(result.dest / "DICOMDIR"),
            "files": [asdict(f) for f in result.files],
            "missing": result.missing,
            "invented": list(result.invented),
            "profile": result.profile,
        }
        print(json.dumps(doc, indent=2, sort_keys=True))
        return EXIT_OK
    print(
        f"exported {len(result.files)} objects ({result.bytes / 1e6:,.1f} MB) of plan "
        f"{result.plan_uid} to {result.dest}, listed in {result.dest / 'DICOMDIR'}"
    )
    wrapped = sum(f.wrapped for f in result.files)
    if wrapped:
        print(f"{wrapped} source files had no PS3.10 header: a preamble/File Meta was added")
    reencoded = sum(f.reencoded for f in result.files)
    if reencoded:
        print(
            f"{reencoded} files were written again as Explicit VR Little Endian for the "
            f"{result.profile} profile (values unchanged, each compared with its source)"
        )
    if result.invented:
        print(
            f"{len(result.invented)} DICOMDIR record values were missing in the files and "
            "were filled with stand-ins (--json lists them)"
        )
    if result.missing:
        print(
            f"warning: {result.missing} references of the package are not indexed "
            f"(see `dicomfs missing {result.plan_uid}`)",
            file=sys.stderr,
        )
    return EXIT_OK
