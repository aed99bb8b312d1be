"""``dicomfs graph PLAN_UID``: a plan's package as a picture (Graphviz DOT, SVG or PNG).

The DOT text comes from ``dicomfs.view.dot`` and needs nothing installed;
SVG and PNG are drawn by Graphviz's ``dot`` program, which stays optional at
run time: without it the command says how to install it and that
``--format dot`` works anyway. The module is not called ``graph`` so that it
never shadows ``dicomfs.index.graph``.

``dot`` reads only the text given on its standard input: every label is a
quoted, escaped string and no attribute names a file, so nothing from a
DICOM file can make Graphviz read or write anything else.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from dicomfs.commands.common import SubParsers, add_index_option, command
from dicomfs.commands.query import plan_package
from dicomfs.errors import EXIT_OK, ConfigError, ExternalToolError
from dicomfs.view.dot import clean, package_dot

FORMATS = ("dot", "svg", "png")
_SUFFIX_FORMATS = {".dot": "dot", ".gv": "dot", ".svg": "svg", ".png": "png"}
INSTALL_HINT = (
    "Graphviz's dot program is not installed (Debian/Ubuntu: apt install graphviz); "
    "--format dot writes the graph as text without it"
)


def register(sub: SubParsers) -> None:
    """Add the ``graph`` subcommand to the main parser."""
    p = command(
        sub,
        "graph",
        cmd_graph,
        "draw a plan's package: Graphviz DOT (always), SVG or PNG (with Graphviz installed)",
    )
    p.add_argument("plan_uid", metavar="PLAN_UID")
    add_index_option(p)
    p.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="write the picture here (default: DOT text on standard output)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="dot, svg or png (default: from the suffix of --output, else dot)",
    )
    p.add_argument("--any", action="store_true", help="accept any object, not only plans")


def output_format(fmt: str | None, output: str | None) -> str:
    """--format, else what the --output suffix says, else DOT."""
    if fmt:
        return fmt
    if output:
        return _SUFFIX_FORMATS.get(Path(output).suffix.lower(), "dot")
    return "dot"


def render(dot_text: str, fmt: str) -> bytes:
    """``dot_text`` as ``fmt`` bytes; SVG and PNG through Graphviz's ``dot``."""
    data = dot_text.encode("utf-8")
    if fmt == "dot":
        return data
    program = shutil.which("dot")
    if program is None:
        raise ExternalToolError(f"cannot write {fmt.upper()}: {INSTALL_HINT}")
    done = subprocess.run([program, f"-T{fmt}"], input=data, capture_output=True, check=False)
    if done.returncode != 0 or not done.stdout:
        said = clean(done.stderr.decode("utf-8", "replace"), limit=300)
        raise ExternalToolError(
            f"Graphviz's dot failed to draw {fmt.upper()} (exit {done.returncode}): {said}"
        )
    return done.stdout


def cmd_graph(args: argparse.Namespace) -> int:
    fmt = output_format(args.format, args.output)
    if not args.output and fmt == "png" and sys.stdout.isatty():
        raise ConfigError("PNG is binary: give -o FILE.png, or redirect standard output")
    picture = render(package_dot(plan_package(args)), fmt)
    if not args.output:
        sys.stdout.buffer.write(picture)
        sys.stdout.buffer.flush()
        return EXIT_OK
    try:
        Path(args.output).write_bytes(picture)
    except OSError as exc:
        raise ConfigError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    return EXIT_OK
