"""Walking source folders and bringing the index level with them (reconcile).

A file whose (size, mtime_ns, inode) match the index is skipped without
being opened; new and changed files are parsed in worker processes (pydicom
is pure Python, so threads would share one core); vanished files are
removed. Used by ``dicomfs index`` and by ``serve`` at start, on a timer and
after a lost event stream.

Safety rules (reliability.md A7, A8, A11):
- entries are looked at with ``lstat`` only: symlinks, FIFOs, sockets and
  devices are skipped, never opened (opening a FIFO blocks forever);
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
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from dicomfs.dicom.parse import parse_file
from dicomfs.dicom.records import FileResult, FileStat, Rejection
from dicomfs.errors import SourceError
from dicomfs.index import ApplyStats, IndexWriter
from dicomfs.live.workers import die_with_parent

log = logging.getLogger(__name__)

IGNORED_SUFFIXES = (".part", ".tmp")
# Below this many files a process pool costs more to start than it saves.
POOL_THRESHOLD = 64
# A scan that would remove more than this share of a root's indexed files
# (and at least MASS_LOSS_MIN_FILES) keeps them and raises an alarm instead.
MASS_LOSS_FRACTION = 0.5
MASS_LOSS_MIN_FILES = 20


def is_ignored_name(name: str) -> bool:
    """Dotfiles and partial-download names are never indexed (reliability.md B2)."""
    return name.startswith(".") or name.endswith(IGNORED_SUFFIXES)


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


def is_under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r + os.sep) for r in roots)


@dataclass(slots=True)
class Walk:
    """What one walk saw: regular files and the folders it could not read."""

    files: list[FileStat] = field(default_factory=list)
    unreadable_dirs: list[str] = field(default_factory=list)


def walk(root: str, walk_result: Walk | None = None) -> Walk:
    """Regular files under ``root``, in sorted order."""
    result = walk_result if walk_result is not None else Walk()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                items = sorted(entries, key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot read folder %s: %s", folder, exc.strerror)
            result.unreadable_dirs.append(folder)
            continue
        subdirs: list[str] = []
        for entry in items:
            if is_ignored_name(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # vanished between listing and stat
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(entry.path)
            elif stat.S_ISREG(st.st_mode):
                result.files.append(FileStat.from_stat(entry.path, st))
        stack.extend(reversed(subdirs))
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
    a live burst arriving in many small rounds that cost would dominate.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def map(self, paths: Sequence[str]) -> Iterator[FileResult | None]:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=_worker_context(),
                initializer=die_with_parent,
                initargs=(os.getpid(),),
            )
        chunksize = max(1, min(64, len(paths) // (self.workers * 8) or 1))
        return self._pool.map(parse_file, paths, chunksize=chunksize)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def parse_many(
    paths: Sequence[str], workers: int, pool: ParserPool | None = None
) -> Iterator[FileResult | None]:
    """Parse in scan order, in worker processes when there are enough files."""
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
    context.set_forkserver_preload(["dicomfs.dicom.parse"])
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
) -> ScanReport:
    """Bring the index level with the source folders; the work of ``dicomfs index``."""
    started = time.monotonic()
    root_list = normalize_roots(roots)
    report = ScanReport()
    seen = Walk()
    for root in root_list:
        walk(root, seen)
    report.seen = len(seen.files)
    report.unreadable_dirs = seen.unreadable_dirs

    known = {p: k for p, k in writer.file_keys().items() if is_under(p, root_list)}
    present = {st.path for st in seen.files}
    # Oldest first: when two files claim one SOP UID, the copy that arrived
    # first serves it, as it would have if the daemon had been watching.
    changed = [st for st in seen.files if known.get(st.path) != st.change_key]
    changed.sort(key=lambda st: (st.mtime_ns, st.path))
    to_parse = [st.path for st in changed]
    report.skipped = report.seen - len(to_parse)

    gone = [p for p in known if p not in present and not is_under(p, seen.unreadable_dirs)]
    if gone and len(gone) >= MASS_LOSS_MIN_FILES and len(gone) > MASS_LOSS_FRACTION * len(known):
        report.mass_loss_alarm = (
            f"{len(gone)} of {len(known)} indexed files under {', '.join(root_list)} are gone "
            "at once; keeping them in the index (is a volume unmounted?)"
        )
        log.error("%s", report.mass_loss_alarm)
        gone = []
    if not remove_vanished:
        gone = []

    pending_removals: list[str] = sorted(gone)
    batch: list[FileResult] = []
    done = rejected = 0
    for result in parse_many(to_parse, workers or default_workers(), pool):
        done += 1
        if result is None:
            report.vanished += 1
        else:
            batch.append(result)
            rejected += isinstance(result.result, Rejection)
        if len(batch) >= batch_size:
            report.add(writer.apply(batch, pending_removals, digest=file_digest))
            pending_removals = []
            batch = []
        if progress is not None:
            progress(done, len(to_parse), rejected)
    if batch or pending_removals:
        report.add(writer.apply(batch, pending_removals, digest=file_digest))
    report.parsed = done
    writer.set_meta("last_scan", repr(time.time()))
    writer.checkpoint()
    report.elapsed = time.monotonic() - started
    return report
