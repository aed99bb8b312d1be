"""``dicomfs hosts`` and ``dicomfs forget``: the origins of an index's files, and dropping one.

A host reconciles only its own sources, so nothing else ever removes the
rows of a retired or renamed ingest host, or of a folder that is no longer
a source (``index.origins``). These two commands are how an administrator
sees and clears them; the sources are never touched, and a folder still
watched is indexed again by its host's next scan.
"""

from __future__ import annotations

import argparse
import os
import sys

from dicomfs.commands.common import (
    SubParsers,
    add_index_option,
    add_json_option,
    command,
    emit,
    index_path,
    open_reader,
)
from dicomfs.errors import EXIT_OK, IndexCorruptError
from dicomfs.index import IndexReader, IndexWriter
from dicomfs.index.origins import LOCAL, Target, origins

PAGE = 1000  # rows removed per transaction: mounts see the progress, no batch grows unbounded


def register(sub: SubParsers) -> None:
    """Add hosts and forget to the main parser."""
    p = command(
        sub,
        "hosts",
        cmd_hosts,
        "list where the index's files come from (hosts, roots) and whether this host reads them",
    )
    add_index_option(p)
    add_json_option(p)

    p = command(
        sub,
        "forget",
        cmd_forget,
        "drop the index's rows of a retired host (@name), a root (name) or a folder "
        "(the files themselves are not touched)",
    )
    p.add_argument(
        "target",
        metavar="WHAT",
        help="@host, a root's name, root:/folder, or a local folder or file (/path, ./path)",
    )
    p.add_argument("--dry-run", action="store_true", help="say how many files, drop nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_index_option(p)


def cmd_hosts(args: argparse.Namespace) -> int:
    reader = open_reader(args)
    try:
        found = origins(reader)
    finally:
        reader.close()
    data = [
        {"origin": _shown(o.name), "files": o.files, "here": o.here, "readable": o.readable}
        for o in found
    ]

    def text() -> str:
        if not found:
            return "the index holds no files"
        lines = [f"{'origin':<24} {'files':>12}  read on this host"]
        for o in found:
            here = o.here or "no: listed, not readable here"
            if o.name.startswith("@") and not o.readable:
                here += f" (a retired host? `dicomfs forget {o.name}`)"
            elif not o.readable:
                here += f" (map it: [roots] {o.name} = ...)"
            lines.append(f"{_shown(o.name):<24} {o.files:>12,}  {here}")
        return "\n".join(lines)

    emit(args, data, text)
    return EXIT_OK


def cmd_forget(args: argparse.Namespace) -> int:
    from dicomfs.live.progress import Progress
    from dicomfs.live.scan import file_digest

    path = index_path(args)
    reader = IndexReader(path)
    try:
        target = Target.parse(args.target, shared=reader.postgres)
        total = target.count(reader)
    finally:
        reader.close()
    if total == 0 or args.dry_run:
        word = "would drop" if args.dry_run and total else "drops"
        print(f"{args.target}: {word} {total:,} files from the index")
        if not total and target.exact is None and os.path.exists(args.target):
            print(
                f"note: {args.target!r} was read as a root's name; for the folder here, "
                f"give its path: dicomfs forget ./{args.target}",
                file=sys.stderr,
            )
        return EXIT_OK
    writer = IndexWriter(path)
    progress = None if args.quiet else Progress("forgetting", show_rejected=False)
    done = 0
    try:
        while page := target.first_paths(writer, PAGE):
            removed = writer.apply([], digest=file_digest, stored_removed=page).removed
            if not removed:  # never loop on rows the writer does not find
                raise IndexCorruptError(f"{args.target}: could not drop {page[0]!r}")
            done += removed
            if progress is not None:
                progress(min(done, total), total, 0)
    finally:
        if progress is not None:
            progress.close()
        writer.close()
    print(
        f"{args.target}: dropped {done:,} files from the index (a UID also indexed from "
        "another file is served from that copy now). The files themselves were not touched; "
        "a folder that a host still watches is indexed again at its next scan."
    )
    return EXIT_OK


def _shown(name: str) -> str:
    return "local" if name == LOCAL else name
