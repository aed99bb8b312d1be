"""One index reader per thread (``view.readers``): readers of ended threads do not pile up.

libfuse ends idle workers past ``max_idle_threads`` and starts new ones at the
next burst. Real threads here play those workers over a real index in each
engine: once a burst's threads have ended, the next thread that opens a reader
closes theirs, and on PostgreSQL the server sees their connections go (a mount
kept one per ended worker, until the server refused clients). A reader whose
thread still runs is never touched.
"""

from __future__ import annotations

import threading
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


def test_readers_of_ended_threads_are_closed(index_at: Path | str) -> None:
    IndexWriter(index_at).close()  # an empty index of the current schema
    readers = ThreadReaders(lambda: IndexReader(index_at))
    shared = not isinstance(index_at, Path)
    baseline = _connections(index_at) if shared else 0
    hold = threading.Event()
    try:
        kept = _in_thread(readers, hold)  # a worker that stays
        barrier = threading.Barrier(BURST)
        burst: list[IndexReader] = []

        def worker() -> None:
            barrier.wait(30)  # all alive at once: each has a thread id of its own
            burst.append(readers.get()[0])

        threads = [threading.Thread(target=worker) for _ in range(BURST)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len({id(reader) for reader in burst}) == BURST
        assert len(readers._readers) == BURST + 1
        if shared:
            assert _connections(index_at) == baseline + BURST + 1

        after = _in_thread(readers)  # the next burst's first worker
        assert len(readers._readers) == 2  # the one that stays, and the new one
        for reader in burst:
            with pytest.raises(Exception, match="close"):
                reader.rows("SELECT 1")
        assert kept.rows("SELECT 1") == [(1,)]  # its thread still runs
        assert after.rows("SELECT 1") == [(1,)]
        if shared:
            assert _connections(index_at) == baseline + 2
    finally:
        hold.set()
        readers.close()
