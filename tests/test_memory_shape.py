"""Memory that does not grow with the archive (issue 13): a shape, never a timing.

The same measure is taken on a source of N files and of 4N files, and the
difference divided by the 3N files more: what each extra file costs. Held
per file (a dict of every change key, a walk list, a set of paths), that
is about 1 KB for a re-scan and 350 bytes kept by the daemon; compared with
the index in path order it is a few bytes (the listing of the folders,
which here grow with N). The bounds sit between the two, far from both.

tracemalloc counts Python objects only (SQLite's page cache is not among
them), so what is measured is what the code holds, not what the library
caches. The files are not DICOM: each is indexed as rejected, a row with
its change key like any other, and they are fast to make and to parse.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dicomfs.index import IndexWriter
from dicomfs.live import scan, spool
from dicomfs.live.ingest import Ingest
from dicomfs.live.scan import ScanReport, reconcile

# Both sizes fill the index's pages of rows (1,000), so only per-file costs differ.
SMALL = 2500
LARGE = 4 * SMALL
PER_FOLDER = 50
RESCAN_BYTES_PER_FILE = 200
DAEMON_BYTES_PER_FILE = 50
FIRST_INDEX_BYTES_PER_FILE = 100


Make = Callable[[int], tuple[IndexWriter, Path]]


def make_source(root: Path, count: int) -> Path:
    for i in range(count):
        folder = root / f"d{i // PER_FOLDER:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:06d}.dcm").write_bytes(b"not a DICOM file")
    return root


@pytest.fixture
def indexed(tmp_path: Path) -> Iterator[Make]:
    """A source of ``count`` files and a writer on its index, reconciled once."""
    writers: list[IndexWriter] = []

    def make(count: int) -> tuple[IndexWriter, Path]:
        root = make_source(tmp_path / f"src{count}", count)
        writer = IndexWriter(tmp_path / f"i{count}.sqlite")
        writers.append(writer)
        assert reconcile(writer, [root], workers=1).parsed == count
        return writer, root

    yield make
    for writer in writers:
        writer.close()


def per_extra_file(measure: Callable[[IndexWriter, Path], int], make: Make) -> float:
    small = measure(*make(SMALL))
    large = measure(*make(LARGE))
    return (large - small) / (LARGE - SMALL)


def reconcile_peak(writer: IndexWriter, root: Path) -> tuple[ScanReport, int]:
    """A reconcile of ``root``, and the peak of Python memory above where it started."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        report = reconcile(writer, [root], workers=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return report, peak - base


def rescan_peak(writer: IndexWriter, root: Path) -> int:
    """The peak of Python memory during a re-scan that finds nothing changed."""
    report, peak = reconcile_peak(writer, root)
    assert report.skipped == report.seen and report.parsed == 0
    return peak


def daemon_keeps(writer: IndexWriter, root: Path) -> int:
    """Python memory the running ingest holds once idle after its start-up reconcile."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        ingest = Ingest(writer, [str(root)], workers=1)
        ingest.start()
        try:
            ingest.request_reconcile("start")
            deadline = time.monotonic() + 60
            while ingest.counters.reconciles < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert ingest.counters.reconciles == 1 and ingest.wait_idle(60)
            assert ingest.last_reconcile is not None and ingest.last_reconcile.parsed == 0
            gc.collect()
            kept = tracemalloc.get_traced_memory()[0] - base
        finally:
            ingest.stop()
    finally:
        tracemalloc.stop()
    return kept


def test_a_rescan_holds_no_per_file_structure(indexed: Make) -> None:
    cost = per_extra_file(rescan_peak, indexed)
    assert cost < RESCAN_BYTES_PER_FILE, f"a re-scan holds {cost:.0f} bytes per file"


def test_the_daemon_keeps_no_per_file_structure_after_start_up(indexed: Make) -> None:
    cost = per_extra_file(daemon_keeps, indexed)
    assert cost < DAEMON_BYTES_PER_FILE, f"the daemon keeps {cost:.0f} bytes per file"


def first_index_peak(tmp_path: Path, count: int) -> int:
    """The peak of Python memory while a first reconcile indexes ``count`` new files."""
    root = make_source(tmp_path / f"new{count}", count)
    writer = IndexWriter(tmp_path / f"new{count}.sqlite")
    try:
        report, peak = reconcile_peak(writer, root)
    finally:
        writer.close()
    assert report.parsed == count == report.rejected
    return peak


def test_a_first_index_holds_no_per_file_structure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first index of ten million files, scaled down: its to-do list spills, parsed in windows.

    The bounds are set so that both sizes spill, as 10M files spill 100
    runs of 100,000 rows. Held in memory instead, the list costs 260 bytes
    per file here (and was 2.7 GB at 10M); spilled, 35.
    """
    monkeypatch.setattr(spool, "RUN_ROWS", SMALL // 5)
    monkeypatch.setattr(spool, "BLOCK_ROWS", 50)
    monkeypatch.setattr(scan, "PARSE_WINDOW", SMALL // 5)
    small = first_index_peak(tmp_path, SMALL)
    large = first_index_peak(tmp_path, LARGE)
    cost = (large - small) / (LARGE - SMALL)
    assert cost < FIRST_INDEX_BYTES_PER_FILE, f"a first index holds {cost:.0f} bytes per file"
