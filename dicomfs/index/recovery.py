"""The index file on disk: where it lives, and what happens when SQLite calls it damaged.

The index is a cache of the source folders (reliability.md E6), so a
damaged one is never repaired: callers ask ``is_damage`` whether an error
means the file itself is bad (rather than busy, full or unreadable), and
``set_aside`` swaps in a new, empty index to be rebuilt by a full scan
(marked as being rebuilt, so readers do not take it for the truth). The
old file is kept for inspection, but only the newest few such copies: a
recurring fault must not fill the disk with old indexes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from pathlib import Path

from dicomfs.errors import IndexCorruptError
from dicomfs.index.reader import REBUILDING
from dicomfs.index.writer import IndexWriter

log = logging.getLogger(__name__)

# How many damaged copies (``index.sqlite.damaged-<time>``) set_aside keeps.
KEEP_DAMAGED = 3

# Primary result codes (sqlite3.h) of a damaged file, as opposed to a busy,
# full or unreadable one: only these make the index untrustworthy.
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_SQLITE_FULL = 13

_SIDECARS = ("", "-wal", "-shm")


def is_damage(exc: BaseException) -> bool:
    """True when SQLite says the index file is damaged (SQLITE_CORRUPT, SQLITE_NOTADB)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, IndexCorruptError) and exc.__cause__ is not None:
        code = getattr(exc.__cause__, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def is_disk_full(exc: BaseException) -> bool:
    """True for SQLITE_FULL: the batch is retried later, the index is not damaged."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == _SQLITE_FULL


def set_aside(path: Path) -> Path:
    """Replace the index at ``path`` by a new, empty one; return where the old one went.

    The old file is kept for inspection (a hard link) with its -wal/-shm
    renamed beside it: connections still open on it keep a consistent file,
    and the new index never shares their WAL. The new index gets its schema
    under a temporary name and is renamed over ``path``, so a reader that
    opens ``path`` meanwhile finds the old file or the new one, never none.
    Older damaged copies beyond ``KEEP_DAMAGED`` are deleted afterwards.
    """
    stamp = time.strftime("%Y%m%dT%H%M%S")
    # Numbered past every copy of this second, not into a gap that pruning
    # left: the number orders the copies of one second.
    try:
        taken = [n for s, n in _damaged_copies(path) if s == stamp]
    except OSError:
        taken = []
    number = max(taken, default=-1) + 1
    for _ in range(1000):  # another process may be setting a copy aside too
        target = _copy_name(path, stamp, number)
        if not any(os.path.lexists(f"{target}{s}") for s in _SIDECARS):
            break
        number += 1
    fresh = path.with_name(f".{path.name}.new-{os.getpid()}")
    for suffix in _SIDECARS:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{fresh}{suffix}")
    new = IndexWriter(fresh)
    # Marked before it takes the old one's place: readers answer "rebuilding"
    # until a full reconcile has filled it, never an empty tree (E6).
    new.set_meta(REBUILDING, repr(time.time()))
    new.close()  # the last connection: its -wal and -shm go with it
    with contextlib.suppress(FileNotFoundError):
        os.link(path, target)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.rename(f"{path}{suffix}", f"{target}{suffix}")
    os.replace(fresh, path)
    _prune_damaged(path, keep=(stamp, number))
    return target


def _copy_name(path: Path, stamp: str, n: int) -> Path:
    """``index.sqlite.damaged-<time>``, then ``-<n>`` for more copies in the same second."""
    return path.with_name(f"{path.name}.damaged-{stamp}" + (f"-{n}" if n else ""))


def _damaged_copies(path: Path) -> dict[tuple[str, int], list[Path]]:
    """The damaged copies of ``path`` by (time, number), each with its -wal/-shm files."""
    pattern = re.compile(
        rf"{re.escape(path.name)}\.damaged-(\d{{8}}T\d{{6}})(?:-(\d+))?(?:-wal|-shm)?"
    )
    copies: dict[tuple[str, int], list[Path]] = {}
    for entry in path.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match is not None:
            copies.setdefault((match[1], int(match[2] or 0)), []).append(entry)
    return copies


def _prune_damaged(path: Path, keep: tuple[str, int]) -> None:
    """Delete all but the newest ``KEEP_DAMAGED`` damaged copies of ``path``; ``keep`` stays.

    Copies are ordered by the time in their name and then their number, not
    by file times: the kept file is a hard link whose times are those of the
    old index. The copy just set aside (``keep``) stays even when the clock
    went back, so the caller can report where it is. A copy that cannot be
    deleted is only logged: rebuilding the index matters more.
    """
    try:
        copies = _damaged_copies(path)
    except OSError as exc:
        log.warning("cannot list %s to remove old damaged index copies: %s", path.parent, exc)
        return
    others = sorted((key for key in copies if key != keep), reverse=True)
    room = KEEP_DAMAGED - 1 if keep in copies else KEEP_DAMAGED
    doomed = others[max(room, 0) :]
    for key in doomed:
        for file in copies[key]:
            try:
                os.unlink(file)
            except FileNotFoundError:
                pass  # another process pruned it first
            except OSError as exc:
                log.warning("cannot remove old damaged index copy %s: %s", file, exc)
    if doomed:
        log.info(
            "removed %d older damaged index cop%s next to %s (the newest %d are kept)",
            len(doomed),
            "y" if len(doomed) == 1 else "ies",
            path,
            KEEP_DAMAGED,
        )
