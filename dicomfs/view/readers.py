"""One index reader per OS thread, reopened when the index file is replaced or rebuilt.

FUSE worker threads are foreign to Python, so ``threading.local`` would be
reset on every callback; readers are kept per thread id (``gettid``)
instead, and an sqlite3 connection is never used by two threads at once
(reliability.md E2). Each reader also knows whether its index is complete:
a view must never answer from an index being rebuilt (E6).

libfuse ends idle workers past ``max_idle_threads`` and starts new ones at
the next burst. A new thread takes over the reader of a thread that has
ended (``_adopt``) before it opens one: left behind, each held a database
connection, and a mount on PostgreSQL gained one with every burst until the
server refused clients; closed, every burst's new workers would pay a new
connection (about 4 ms on PostgreSQL). So a view holds at most as many
readers as it ever had threads at once. Thread ids, unlike ``get_ident()``
(a pthread address that a new thread may take over), are not handed out
again until the kernel's counter wraps, so a thread that is gone is told
apart from one that runs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from dicomfs.index import IndexReader

log = logging.getLogger(__name__)

# How often a thread's reader checks that the index file is still the one it
# opened (deleted, replaced or rebuilt: reopen, never answer from the old file).
READER_CHECK_INTERVAL = 1.0


class ThreadReaders:
    """The readers of one view, one per thread."""

    def __init__(self, factory: Callable[[], IndexReader]) -> None:
        self._factory = factory
        self._readers: dict[int, IndexReader] = {}
        self._checked: dict[int, float] = {}
        self._rebuilding: dict[int, bool] = {}  # per thread: is its reader's index being rebuilt
        self._origin: tuple[int, int] | None = None  # (dev, inode) of the first index file read
        # Moved by the first thread that finds the index file changed: every other
        # thread reopens at its next call, so no thread answers from the old file
        # (or the old state) for up to a check interval after another saw the new.
        self._epoch = 0
        self._opened: dict[int, int] = {}  # the epoch each thread's reader was opened in
        self._lock = threading.Lock()

    def get(self) -> tuple[IndexReader, bool]:
        """This thread's reader, reopened when the index file changed, and its rebuild state.

        Whether the index is complete is read when the reader opens, and on
        every call while it is not (a meta lookup; the mount has nothing else
        to do then), so every thread answers again as soon as the rebuild
        commits. A rebuild mark, once cleared, never comes back in the same
        file (``index.reader.REBUILDING``), so a reader never answers from a
        half-built index.
        """
        ident = threading.get_native_id()
        reader = self._readers.get(ident)
        now = time.monotonic()
        stale = reader is not None and self._opened.get(ident) != self._epoch
        if reader is not None and (
            stale or now - self._checked.get(ident, now) >= READER_CHECK_INTERVAL
        ):
            self._checked[ident] = now
            if stale or not reader.is_current():  # reliability.md E6
                with self._lock:
                    if not stale:
                        log.warning("the index file %s changed: reopening it", reader.path)
                        self._epoch += 1
                    self._readers.pop(ident, None)
                reader.close()
                reader = None
        if reader is None:
            reader = self._adopt(ident)
        if reader is None:
            reader = self._factory()
            try:
                self._rebuilding[ident] = self._incomplete(reader)
            except BaseException:
                reader.close()
                raise
            with self._lock:
                self._readers[ident] = reader
                self._opened[ident] = self._epoch
            self._checked[ident] = now
        elif self._rebuilding.get(ident):
            self._rebuilding[ident] = self._incomplete(reader)
        return reader, self._rebuilding[ident]

    def _adopt(self, ident: int) -> IndexReader | None:
        """The reader of a thread that has ended, now this thread's (module docstring).

        Only a reader's own thread uses it, so one whose thread id is no
        longer among the process's tasks is idle for good. One opened before
        the index file changed is closed instead.
        """
        try:
            alive = {int(name) for name in os.listdir("/proc/self/task")}
        except OSError:
            return None
        alive.add(ident)
        adopted: IndexReader | None = None
        old: list[IndexReader] = []
        with self._lock:
            for tid in [tid for tid in self._readers if tid not in alive]:
                current = self._opened.get(tid) == self._epoch
                if current and adopted is not None:
                    continue  # left for the next new thread
                reader = self._readers.pop(tid)
                self._opened.pop(tid, None)
                checked = self._checked.pop(tid, 0.0)
                rebuilding = self._rebuilding.pop(tid, True)
                if not current:
                    old.append(reader)
                    continue
                adopted = self._readers[ident] = reader
                self._opened[ident] = self._epoch
                self._checked[ident] = checked
                self._rebuilding[ident] = rebuilding
        for reader in old:
            reader.close()
        return adopted

    def _incomplete(self, reader: IndexReader) -> bool:
        """The index is being rebuilt, or an empty one replaced the index this view began with.

        A first index fills while its first scan runs, and the mount shows it
        filling (README). An empty index found at the path later, one no scan
        ever completed into (a new index moved there by hand, ``dicomfs
        index`` started over), would list nothing where files were listed a
        moment before; ``serve`` rebuilds such a replacement anyway.
        """
        if reader.rebuilding_since() is not None:
            return True
        with self._lock:
            if self._origin is None:
                self._origin = reader.identity
            origin = self._origin
        if reader.identity == origin:
            return False
        return reader.meta("last_scan") is None and reader.is_empty()

    def close(self) -> None:
        with self._lock:
            readers, self._readers = list(self._readers.values()), {}
        for reader in readers:
            reader.close()
