"""Walking source folders and bringing the index level with them (reconcile).

A file whose (size, mtime_ns, inode) match the index is skipped without
being opened; new and changed files are parsed in worker processes (pydicom
is pure Python, so threads would share one core); vanished files are
removed. Used by ``dicomfs index`` and by ``serve`` at start, on a timer and
after a lost event stream.

Memory is bounded whatever the archive (issue 13): the walk is compared
with the index folder by folder in path order (``sources.compare``), and
only the paths to parse or remove are kept, in spools that go to disk
beside the index past 100,000 rows (``spool.Spool``: a first index of ten
million files held 2.7 GB in a list); they are parsed in windows, so the
executor never holds them all either. A daemon passes its
:class:`ParserPool`, so its parse workers outlive one reconcile or one burst.

Safety rules (reliability.md A7, A8, A11):
- entries are looked at with ``lstat`` only: symlinks, FIFOs, sockets and
  devices are never opened nor followed (opening a FIFO blocks forever; a
  link could point outside the source). They are not skipped in silence
  either: each is recorded as rejected (``special_result``), so
  ``rejected.txt`` and ``dicomfs status`` show what was left out and why;
- a directory that cannot be read makes its files "unknown", never
  "deleted";
- when a scan finds a large share of the indexed files gone at once (an
  unmounted volume), the index is kept and an alarm is raised.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import stat
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from dicomfs.dicom.records import FileResult, FileStat, Rejection, RejectKind
from dicomfs.errors import SourceError
from dicomfs.index import ApplyStats, IndexWriter
from dicomfs.index.reader import REBUILDING
from dicomfs.index.schema import DETAILS_PENDING
from dicomfs.live.sources import (
    IGNORED_SUFFIXES,
    SPECIAL_KINDS,
    Tally,
    compare,
    is_ignored_name,
    is_special,
    is_under,
    walk_sorted,
)
from dicomfs.live.spool import Spool, chunks
from dicomfs.live.workers import die_with_parent

__all__ = [
    "IGNORED_SUFFIXES",
    "MASS_LOSS_FRACTION",
    "MASS_LOSS_MIN_FILES",
    "PARSE_WINDOW",
    "POOL_THRESHOLD",
    "SYMLINK_REASON",
    "ParserPool",
    "ProgressCallback",
    "ScanReport",
    "Walk",
    "default_workers",
    "file_digest",
    "is_ignored_name",
    "is_special",
    "is_under",
    "normalize_roots",
    "parse_many",
    "reconcile",
    "special_result",
    "walk",
]

log = logging.getLogger(__name__)

# Below this many files parsing in this process is faster, even with the
# workers of a daemon's pool already running (measured on 2 cores: 32 files
# 13 ms here, 15 ms through idle workers; 64 files 27 ms, 20 ms).
POOL_THRESHOLD = 64
# A scan that would remove more than this share of a root's indexed files
# (and at least MASS_LOSS_MIN_FILES) keeps them and raises an alarm instead.
MASS_LOSS_FRACTION = 0.5
MASS_LOSS_MIN_FILES = 20
# Paths handed to the parse workers at a time: enough that the workers never
# wait between windows for long (one chunk of 64 files at its end), few
# enough that the executor's futures stay small.
PARSE_WINDOW = 10_000


SYMLINK_REASON = "symbolic link: not followed (a link could point outside the source)"


def parse_file(path: str) -> FileResult | None:
    """``dicom.parse.parse_file``, imported at the first file to parse.

    A re-run that finds nothing changed, and every command that only reads
    the index, then never imports pydicom (a tenth of a second).
    """
    from dicomfs.dicom.parse import parse_file as parse

    return parse(path)


def special_result(st: FileStat) -> FileResult:
    """The rejection of a special entry, from its ``lstat`` alone: nothing is opened or followed.

    The scan and the watcher both record specials here, so a fresh index
    and a watching daemon say the same of them.
    """
    if stat.S_ISLNK(st.mode):
        return FileResult(st, Rejection(RejectKind.SYMLINK, SYMLINK_REASON))
    what = next((name for test, name in SPECIAL_KINDS if test(st.mode)), "special file")
    return FileResult(st, Rejection(RejectKind.NOT_REGULAR, f"not a regular file: {what}"))


def file_digest(path: str) -> str | None:
    """sha256 of a source file, or None when it cannot be read; never follows links."""
    try:
        fd = os.open(os.fsencode(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def normalize_roots(roots: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Absolute, symlink-free, de-duplicated roots; a missing root is an error."""
    result: list[str] = []
    for root in roots:
        real = os.path.realpath(os.fspath(root))
        if not os.path.isdir(real):
            raise SourceError(
                f"source folder {os.fspath(root)!r} does not exist or is not a folder"
            )
        if not os.access(real, os.R_OK | os.X_OK):
            raise SourceError(f"source folder {real!r} is not readable by this user")
        result.append(real)
    result = sorted(set(result))
    # A root inside another root would be walked twice.
    return [r for r in result if not any(r != o and r.startswith(o + os.sep) for o in result)]


@dataclass(slots=True)
class Walk:
    """What one walk saw: regular files, special entries and the folders it could not read."""

    files: list[FileStat] = field(default_factory=list)
    specials: list[FileStat] = field(default_factory=list)  # symlinks, FIFOs, sockets, devices
    unreadable_dirs: list[str] = field(default_factory=list)


def walk(root: str, walk_result: Walk | None = None) -> Walk:
    """Regular files and special entries under ``root``, in path order; links not followed.

    Holds the whole walk: for small folders and tests. ``reconcile`` and the
    live ingest compare a walk with the index as it goes (``sources.compare``).
    """
    result = walk_result if walk_result is not None else Walk()
    for st in walk_sorted(root, result.unreadable_dirs):
        (result.specials if is_special(st.mode) else result.files).append(st)
    return result


@dataclass(slots=True)
class ScanReport:
    """Counts for the summary line and for status.json."""

    seen: int = 0
    skipped: int = 0
    parsed: int = 0
    indexed: int = 0
    rejected: int = 0
    removed: int = 0
    benign_duplicates: int = 0
    conflicts: int = 0
    vanished: int = 0
    unreadable_dirs: list[str] = field(default_factory=list)
    mass_loss_alarm: str = ""
    elapsed: float = 0.0

    def add(self, stats: ApplyStats) -> None:
        self.indexed += stats.indexed
        self.rejected += stats.rejected
        self.removed += stats.removed
        self.benign_duplicates += stats.benign_duplicates
        self.conflicts += stats.conflicts


ProgressCallback = Callable[[int, int, int], None]  # (done, total, rejected so far)


class ParserPool:
    """Parser processes kept between batches: a daemon pays their start once.

    Starting workers from a forkserver costs a few hundred milliseconds; for
    a live burst arriving in many small rounds that cost would dominate. The
    processes start at the first batch big enough for them (``prepare``
    starts their forkserver earlier) and stay until ``close``. One thread
    uses a pool at a time.

    A worker that dies (killed by the OOM killer or by hand) breaks the whole
    executor (``BrokenProcessPool``); the batch in hand then goes on in new
    workers, once: a file that kills every worker that parses it makes the
    second pool break as well, and the error goes to the caller (the live
    ingest retries with a reconcile later, ``dicomfs index`` fails). The next
    batch always starts new workers, so a daemon is never left without them.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self.starts = 0  # executors started: 1 for a daemon whose workers never died

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=_worker_context(),
                initializer=die_with_parent,
                initargs=(os.getpid(),),
            )
            self.starts += 1
        return self._pool

    def prepare(self) -> None:
        """Start the forkserver the workers will come from, not the workers themselves.

        The forkserver's start (a new interpreter importing the parser, about
        0.3 s) is most of a pool's start; paid here, at a daemon's start, it
        does not delay the first burst, while idle workers are not kept for a
        burst that may never come. A single-threaded process forks its
        workers and needs nothing.
        """
        if self.workers > 1 and _worker_context().get_start_method() == "forkserver":
            multiprocessing.forkserver.ensure_running()

    def map(self, paths: Sequence[str]) -> Iterator[FileResult | None]:
        """Parse ``paths`` in the workers; results in the order of ``paths``."""
        done = 0
        for attempt in (1, 2):
            left = paths[done:]
            chunksize = max(1, min(64, len(left) // (self.workers * 8) or 1))
            try:
                for result in self._executor().map(parse_file, left, chunksize=chunksize):
                    done += 1
                    yield result
                return
            except BrokenProcessPool:
                self.close()
                if attempt == 2:
                    raise
                log.warning(
                    "a parse worker died; parsing the %d files left in new workers",
                    len(paths) - done,
                )

    def worker_pids(self) -> list[int]:
        """The processes parsing now (none before the first batch or after ``close``)."""
        if self._pool is None:
            return []
        return sorted(self._pool._processes or {})

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=True, cancel_futures=True)


def parse_many(
    paths: Sequence[str], workers: int, pool: ParserPool | None = None
) -> Iterator[FileResult | None]:
    """Parse in scan order, in worker processes when there are enough files."""
    yield from map(_as_walked, _parse_many(paths, workers, pool))


def _parse_many(
    paths: Sequence[str], workers: int, pool: ParserPool | None
) -> Iterator[FileResult | None]:
    if workers <= 1 or len(paths) < POOL_THRESHOLD:
        yield from map(parse_file, paths)
        return
    if pool is not None:
        yield from pool.map(paths)
        return
    own = ParserPool(workers)
    try:
        yield from own.map(paths)
    finally:
        own.close()


def _as_walked(result: FileResult | None) -> FileResult | None:
    """A file that became a special entry between the look and the parse: as the walk says it."""
    if result is not None and is_special(result.stat.mode):
        return special_result(result.stat)
    return result


def _worker_context() -> multiprocessing.context.BaseContext:
    """Fork when this process has one thread; otherwise a clean forkserver.

    Forking is the cheapest start (no re-import) and is safe in a
    single-threaded process such as ``dicomfs index``. Under ``serve`` a
    forked worker would inherit the /dev/fuse descriptor and the locks of the
    FUSE, watchdog and writer threads: after ``kill -9`` an orphaned idle
    worker would keep the FUSE connection open, so the mount hangs instead of
    reporting "Transport endpoint is not connected". There, workers come
    from a forkserver that never saw those threads.
    """
    if threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["dicomfs.live.scan", "dicomfs.dicom.parse"])
    return context


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def reconcile(
    writer: IndexWriter,
    roots: Iterable[str | os.PathLike[str]],
    *,
    workers: int | None = None,
    batch_size: int = 500,
    progress: ProgressCallback | None = None,
    remove_vanished: bool = True,
    pool: ParserPool | None = None,
    first: Collection[str] = (),
    check: Callable[[], None] | None = None,
) -> ScanReport:
    """Bring the index level with the source folders; the work of ``dicomfs index``.

    Among new and changed files, those in ``first`` are indexed before the
    others: a rebuild names the copies that served duplicated UIDs in the
    old index, so they keep serving (reliability.md C2). Paths come only from
    the walk; ``first`` only orders them. A reconcile that completes also
    completes a rebuild: the index's rebuild mark is cleared (E6).
    ``check`` is called before each folder of the walk and ``progress``
    after each parsed batch; either may raise to abandon the reconcile.
    """
    started = time.monotonic()
    root_list = normalize_roots(roots)
    report = ScanReport()
    workers = workers or default_workers()
    # Only what differs from the index is kept, in spools that go to disk past
    # a bound: (not first, mtime_ns, path) of each file to parse, the paths gone.
    folder = writer.work_folder
    with Spool[tuple[bool, int, str]](folder) as changed, Spool[str](folder) as gone:
        specials: list[FileResult] = []
        known = 0  # indexed files under the roots that differ; the others are in tally
        tally = Tally(check=check)
        for root in root_list:
            for path, st, key in compare(writer, root, report.unreadable_dirs, tally):
                known += key is not None
                if st is None:
                    if not is_under(path, report.unreadable_dirs):
                        gone.add(path)
                    continue
                report.seen += 1
                if is_special(st.mode):
                    specials.append(special_result(st))
                else:
                    changed.add((path not in first, st.mtime_ns, path))
        report.seen += tally.unchanged
        known += tally.unchanged
        report.skipped = report.seen - len(changed) - len(specials)
        removals: Iterable[str] = gone
        if len(gone) >= MASS_LOSS_MIN_FILES and len(gone) > MASS_LOSS_FRACTION * known:
            report.mass_loss_alarm = (
                f"{len(gone)} of {known} indexed files under {', '.join(root_list)} are gone "
                "at once; keeping them in the index (is a volume unmounted?)"
            )
            log.error("%s", report.mass_loss_alarm)
            removals = ()
        if not remove_vanished:
            removals = ()
        for removed in chunks(removals, batch_size):
            report.add(writer.apply([], removed))
        for special in chunks(specials, batch_size):
            report.add(writer.apply(special, []))
        # Oldest first: when two files claim one SOP UID, the copy that arrived
        # first serves it, as it would have if the daemon had been watching; the
        # copies that served before a rebuild go before them all.
        to_parse = (path for _, _, path in changed)
        options = _Writing(batch_size, progress, len(changed), rejected=len(specials))
        _parse_and_write(writer, to_parse, options, report, workers, pool)
    writer.set_meta("last_scan", repr(time.time()))
    if writer.meta(DETAILS_PENDING):
        writer.set_meta(DETAILS_PENDING, "")  # every file read since the upgrade
    if writer.rebuilding_since() is not None:
        writer.set_meta(REBUILDING, "")  # complete: readers answer from it again
        log.info("the index %s is rebuilt: the mount answers from it again", writer.path)
    writer.checkpoint()
    report.elapsed = time.monotonic() - started
    return report


@dataclass(slots=True)
class _Writing:
    """How ``_parse_and_write`` writes and reports: batch size, progress, counts so far."""

    batch_size: int
    progress: ProgressCallback | None
    total: int
    rejected: int = 0


def _parse_and_write(
    writer: IndexWriter,
    paths: Iterable[str],
    options: _Writing,
    report: ScanReport,
    workers: int,
    pool: ParserPool | None,
) -> None:
    """Parse ``paths`` in windows, so the executor never holds them all; write in batches."""
    own = pool is None and workers > 1 and options.total >= POOL_THRESHOLD
    if own:
        pool = ParserPool(workers)  # one for all windows, not one per window
    batch: list[FileResult] = []
    try:
        for window in chunks(paths, PARSE_WINDOW):
            for result in parse_many(window, workers, pool):
                report.parsed += 1
                if result is None:
                    report.vanished += 1
                else:
                    batch.append(result)
                    options.rejected += isinstance(result.result, Rejection)
                if len(batch) >= options.batch_size:
                    report.add(writer.apply(batch, [], digest=file_digest))
                    batch = []
                if options.progress is not None:
                    options.progress(report.parsed, options.total, options.rejected)
    finally:
        if own and pool is not None:
            pool.close()
    if batch:
        report.add(writer.apply(batch, [], digest=file_digest))
