"""One index reader per thread (``view.readers``): readers of ended threads do not pile up.

libfuse ends idle workers past ``max_idle_threads`` and starts new ones at the
next burst. Real threads here play those workers over a real index in each
engine: a burst's new threads take over the readers the last burst's threads
left, so on PostgreSQL the server's sessions grow only when a burst has more
threads at once than any before (a mount kept one per ended worker, until the
server refused clients). A reader whose thread still runs is never handed on,
and one from before the index file changed is closed, not handed on.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psycopg
import pytest

from dicomfs.index import IndexReader, IndexWriter
from dicomfs.view.readers import ThreadReaders

BURST = 6


def _connections(url: str) -> int:
    """Sessions on the test's database, not counting the one asking."""
    with psycopg.connect(url, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid != pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _in_thread(readers: ThreadReaders, hold: threading.Event | None = None) -> IndexReader:
    """``readers.get()`` in a new thread, which then waits for ``hold`` (if given) and ends."""
    got: list[IndexReader] = []
    ready = threading.Event()

    def run() -> None:
        got.append(readers.get()[0])
        got[0].rows("SELECT 1")
        ready.set()
        if hold is not None:
            hold.wait(30)

    thread = threading.Thread(target=run)
    thread.start()
    assert ready.wait(30)
    if hold is None:
        thread.join()
    return got[0]


def _burst(readers: ThreadReaders, size: int) -> list[IndexReader]:
    """``size`` threads alive at once (each its own thread id) take a reader each and end."""
    barrier = threading.Barrier(size)
    taken: list[IndexReader] = []
    tids: list[int] = []

    def worker() -> None:
        barrier.wait(30)
        reader = readers.get()[0]
        reader.rows("SELECT 1")
        taken.append(reader)
        tids.append(threading.get_native_id())
        barrier.wait(30)  # none ends before all have theirs

    threads = [threading.Thread(target=worker) for _ in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == size
    # join() returns a moment before the kernel lets the task go; libfuse's workers
    # end long before the next burst.
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/self/task/{tid}") for tid in tids):
        assert time.monotonic() < deadline, "threads that ended are still tasks"
        time.sleep(0.01)
    return taken


def _ids(readers: list[IndexReader]) -> set[int]:
    return {id(reader) for reader in readers}


def test_new_threads_take_over_the_readers_of_ended_ones(index_at: Path | str) -> None:
    IndexWriter(index_at).close()  # an empty index of the current schema
    readers = ThreadReaders(lambda: IndexReader(index_at))
    shared = not isinstance(index_at, Path)
    baseline = _connections(index_at) if shared else 0
    hold = threading.Event()
    try:
        kept = _in_thread(readers, hold)  # a worker that stays
        first = _ids(_burst(readers, BURST))
        assert len(first) == BURST and id(kept) not in first
        assert len(readers._slots) == BURST + 1
        second = _ids(_burst(readers, BURST))  # new thread ids: the readers of the first
        assert second == first
        assert len(readers._slots) == BURST + 1
        if shared:
            assert _connections(index_at) == baseline + BURST + 1
        third = _ids(_burst(readers, BURST + 2))  # more at once than ever: two more readers
        assert first < third and id(kept) not in third
        assert len(readers._slots) == BURST + 3
        if shared:
            assert _connections(index_at) == baseline + BURST + 3
        assert kept.rows("SELECT 1") == [(1,)]  # its thread still runs
    finally:
        hold.set()
        readers.close()


def test_readers_from_before_the_index_changed_are_closed(index_at: Path | str) -> None:
    """A reader left by an ended thread of an older epoch (the index file was replaced) is
    closed when a new thread comes, never handed to it."""
    IndexWriter(index_at).close()
    readers = ThreadReaders(lambda: IndexReader(index_at))
    try:
        old = _burst(readers, 3)
        readers._epoch += 1  # what the first thread to see the file replaced does
        fresh = _in_thread(readers)
        assert id(fresh) not in _ids(old)
        assert len(readers._slots) == 1
        for reader in old:
            with pytest.raises(Exception, match="close"):
                reader.rows("SELECT 1")
    finally:
        readers.close()
