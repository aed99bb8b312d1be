"""The ``dicomfs`` command line: build the parser from the command modules, run one, report.

Each command module (``local``, ``query``, ``plans_cmd``, ``graph_cmd``, ``export``, ``net``,
``webdav``, ``find_cmd``, ``hosts_cmd``) adds its subcommands with ``register(sub)``; every
handler asks the core one question and prints the answer. A library exception becomes one
clear message and the documented exit code of ``dicomfs.errors`` (README "Commands").
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from dicomfs import __version__
from dicomfs.commands import (
    export,
    find_cmd,
    graph_cmd,
    hosts_cmd,
    local,
    net,
    plans_cmd,
    query,
    webdav,
)
from dicomfs.errors import EXIT_OK, DicomfsError, exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomfs",
        description="Index DICOM files by UID and mount them organized by what they reference.",
    )
    parser.add_argument("--version", action="version", version=f"dicomfs {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (local, query, find_cmd, graph_cmd, export, net, webdav, plans_cmd, hosts_cmd):
        module.register(sub)
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
        return exit_code(exc)
    except KeyboardInterrupt:
        print("dicomfs: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
