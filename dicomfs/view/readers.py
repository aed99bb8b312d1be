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
from dataclasses import dataclass

from dicomfs.index import IndexReader

log = logging.getLogger(__name__)

# How often a thread's reader checks that the index file is still the one it
# opened (deleted, replaced or rebuilt: reopen, never answer from the old file).
READER_CHECK_INTERVAL = 1.0


@dataclass(slots=True)
class _Slot:
    """One thread's reader and what is known of it."""

    reader: IndexReader
    opened: int  # the epoch it was opened in
    checked: float  # when it last checked that the index file is the one it opened
    rebuilding: bool  # its index is being rebuilt, or was replaced by an empty one


class ThreadReaders:
    """The readers of one view, one per thread."""

    def __init__(self, factory: Callable[[], IndexReader]) -> None:
        self._factory = factory
        self._slots: dict[int, _Slot] = {}  # by thread id
        self._origin: tuple[int, int] | None = None  # (dev, inode) of the first index file read
        # Moved by the first thread that finds the index file changed: every other
        # thread reopens at its next call, so no thread answers from the old file
        # (or the old state) for up to a check interval after another saw the new.
        self._epoch = 0
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
        slot = self._slots.get(ident)
        now = time.monotonic()
        if slot is not None:
            stale = slot.opened != self._epoch
            if stale or now - slot.checked >= READER_CHECK_INTERVAL:
                slot.checked = now
                if stale or not slot.reader.is_current():  # reliability.md E6
                    with self._lock:
                        if not stale:
                            log.warning("the index file %s changed: reopening it", slot.reader.path)
                            self._epoch += 1
                        self._slots.pop(ident, None)
                    slot.reader.close()
                    slot = None
        if slot is None:
            slot = self._adopt(ident)
        if slot is None:
            reader = self._factory()
            try:
                rebuilding = self._incomplete(reader)
            except BaseException:
                reader.close()
                raise
            with self._lock:
                slot = self._slots[ident] = _Slot(reader, self._epoch, now, rebuilding)
        elif slot.rebuilding:
            slot.rebuilding = self._incomplete(slot.reader)
        return slot.reader, slot.rebuilding

    def _adopt(self, ident: int) -> _Slot | None:
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
        adopted: _Slot | None = None
        old: list[IndexReader] = []
        with self._lock:
            for tid in [tid for tid in self._slots if tid not in alive]:
                if self._slots[tid].opened != self._epoch:
                    old.append(self._slots.pop(tid).reader)
                elif adopted is None:
                    adopted = self._slots[ident] = self._slots.pop(tid)
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
            slots, self._slots = list(self._slots.values()), {}
        for slot in slots:
            slot.reader.close()
