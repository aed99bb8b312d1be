"""Damaged-index recovery: notice that the index file is no longer sound, and replace it.

The index is a cache and is never trusted once damaged (reliability.md E6).
Every second the worker asks :class:`IndexGuard` to compare the index file
with what it last wrote: a file that vanished or was replaced, or that
changed behind our back and fails ``PRAGMA quick_check``, or SQLite reporting
SQLITE_CORRUPT/NOTADB during a write, makes the worker move the file aside,
open a new index and reconcile from scratch. Readers reopen by themselves
(``IndexReader.is_current``) and answer "rebuilding" until that reconcile
is complete (the new index is marked by ``set_aside``). Before the old
index is closed, the guard asks it which copies served duplicated UIDs:
the rebuild indexes those first, so a rebuild never swaps the copy a UID
serves while that file is still there (C2). The guard decides and swaps
files; what a rebuild means for the worker's queue and counters stays with
``ingest``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from dicomfs.errors import IndexCorruptError, IndexUnavailableError
from dicomfs.index import IndexReader, IndexWriter, is_damage, set_aside

log = logging.getLogger(__name__)

# (device, inode, size, mtime_ns) of the index file.
Fingerprint = tuple[int, int, int, int]


class IndexGuard:
    """What the index file looked like after our own last write, and a damage seen since.

    ``alarm`` reports a rebuild where operators look (status.json, the log).
    """

    def __init__(self, alarm: Callable[[str], None]) -> None:
        self._alarm = alarm
        self._seen: Fingerprint | None = None
        # Damage SQLite reported while writing: rebuild at the next check.
        self._pending: str | None = None
        # Paths of the copies that served duplicated UIDs in the index last replaced.
        self.served_copies: set[str] = set()

    def remember(self, writer: IndexWriter) -> None:
        """The index file as it is now is our own doing (called after each job)."""
        if writer.path is not None:  # a database has no file to watch
            self._seen = fingerprint(writer.path)

    def damaged(self, exc: BaseException) -> None:
        """A write failed with SQLITE_CORRUPT/NOTADB: the next check rebuilds."""
        self._pending = f"is damaged ({exc})"

    @staticmethod
    def problem_at_start(writer: IndexWriter) -> str | None:
        """The index may have been damaged while nobody ran: check it once, fully."""
        if writer.path is None:
            return None  # PostgreSQL keeps its own files sound
        verdict = verify(writer.path)
        return None if verdict is None else f"is damaged ({verdict})"

    def problem(self, writer: IndexWriter) -> str | None:
        """Why the index must be rebuilt (it vanished, was replaced or is damaged), or None."""
        if self._pending is not None:
            return self._pending
        path = writer.path
        if path is None:
            return None
        now = fingerprint(path)
        # Deletion and replacement are judged against the file the writer
        # opened, so one that happened during a job is not taken for our own.
        if now is None:
            return "was deleted"
        if now[:2] != writer.identity:
            return "was replaced by another file"
        if now == self._seen:
            return None
        verdict = verify(path)
        if verdict is None:
            self._seen = now  # another process wrote to it, correctly
            return None
        return f"was changed by another process and is damaged ({verdict})"

    def replace(self, writer: IndexWriter, problem: str) -> IndexWriter:
        """Close ``writer``, move its file aside and open a new, empty index in its place.

        When opening the new index fails, ``problem`` stays pending and the
        next check tries again.
        """
        path = writer.path
        assert path is not None, "only an index file is set aside and rebuilt"
        self._pending = problem
        self._alarm(f"the index {path} {problem}: rebuilding it from the source folders")
        self.served_copies = served_copies(writer)
        with contextlib.suppress(sqlite3.Error):
            writer.close()
        aside = set_aside(path)
        if os.path.lexists(aside):
            log.error("kept the old index as %s", aside)
        fresh = IndexWriter(path)
        self._pending = None
        self._seen = fingerprint(path)
        return fresh


def served_copies(writer: IndexWriter) -> set[str]:
    """Paths of the copies serving duplicated UIDs, as far as the old index can still tell.

    The writer's connection still reads the file it opened, even when that
    was deleted or replaced since. A damaged file may fail or answer
    nonsense: that costs only the order of the rebuild, since these paths
    never name a source, they only put files the walk found first.
    """
    try:
        return {row.kept_path for row in writer.conflicts()}
    except (sqlite3.Error, ValueError) as exc:
        log.warning("the old index cannot say which copies served duplicated UIDs: %s", exc)
        return set()


def fingerprint(path: Path) -> Fingerprint | None:
    """(device, inode, size, mtime_ns) of the index file, None when it is gone."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def verify(path: Path) -> str | None:
    """None when a fresh connection finds the index sound, else what is wrong.

    Busy or locked is not damage: that error propagates and the check runs again.
    """
    try:
        reader = IndexReader(path)
    except IndexUnavailableError:
        return "it vanished"
    except IndexCorruptError as exc:
        return str(exc)
    try:
        verdict = reader.quick_check()
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            return str(exc)
        raise
    finally:
        reader.close()
    if verdict == "ok":
        return None
    first = verdict.splitlines()[0] if verdict else "no answer"
    return first[:200]  # quick_check may list thousands of pages
