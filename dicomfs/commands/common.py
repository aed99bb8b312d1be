"""What every command module shares: the index option, JSON or text output, subcommand wiring."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicomfs.index import IndexReader, default_index_path, is_url
from dicomfs.view.paths import NAMES
from dicomfs.view.tree import View

Handler = Callable[[argparse.Namespace], int]
if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:  # not subscriptable at run time
    SubParsers = argparse._SubParsersAction


def command(sub: SubParsers, name: str, func: Handler, help: str) -> argparse.ArgumentParser:
    """Add one subcommand whose help text is also its description."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    p.set_defaults(func=func)
    return p


def add_index_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--index",
        metavar="PATH",
        help="index file (default: $DICOMFS_INDEX, else ~/.local/share/dicomfs/index.sqlite)",
    )


def add_json_option(p: argparse.ArgumentParser, help: str = "machine-readable output") -> None:
    p.add_argument("--json", action="store_true", help=help)


def add_names_option(p: argparse.ArgumentParser, what: str) -> None:
    """``--names uid|id|name``, default id: as a private mount (README "Names in paths")."""
    p.add_argument("--names", choices=NAMES, default="id", help=f"as the mount's setting: {what}")


def index_path(args: argparse.Namespace) -> Path | str:
    """--index, then DICOMFS_INDEX, then the user's data directory: a file, or a database URL."""
    given = getattr(args, "index", None) or os.environ.get("DICOMFS_INDEX")
    if not given:
        return default_index_path()
    return str(given) if is_url(given) else Path(given)


def open_reader(args: argparse.Namespace) -> IndexReader:
    return IndexReader(index_path(args))


def open_view(
    args: argparse.Namespace, names: str, *, cache_ttl: float = 1.0, part10: bool = False
) -> View:
    """The mount's view of ``--index`` for this user, without mounting (ls, cat, find, plans).

    The index is opened once first, so a missing or foreign file fails here
    with the index's own message. ``cache_ttl``: one command may keep its
    listings for as long as it runs.
    """
    path = index_path(args)
    IndexReader(path).close()
    return View(
        lambda: IndexReader(path),
        dir_uid=os.getuid(),
        dir_gid=os.getgid(),
        mount_time_ns=time.time_ns(),
        names=names,
        cache_ttl=cache_ttl,
        part10=part10,
    )


def emit(args: argparse.Namespace, data: Any, text: Callable[[], str]) -> None:
    """Print ``data`` as JSON with --json, else the text ``text()`` makes (nothing if empty)."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        out = text()
        if out:
            print(out)
