"""Walking source folders and bringing the index level with them (reconcile).

A file whose (size, mtime_ns, inode) match the index is skipped without
being opened; new and changed files are parsed in worker processes (pydicom
is pure Python, so threads would share one core); vanished files are
removed. Used by ``dicomfs index`` and by ``serve`` at start, on a timer and
after a lost event stream.

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
import os
import stat
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from dicomfs.dicom.parse import parse_file
from dicomfs.dicom.records import FileResult, FileStat, Rejection, RejectKind
from dicomfs.errors import SourceError
from dicomfs.index import ApplyStats, IndexWriter
from dicomfs.index.reader import REBUILDING
from dicomfs.index.schema import DETAILS_PENDING
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


SYMLINK_REASON = "symbolic link: not followed (a link could point outside the source)"
_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


def is_special(mode: int) -> bool:
    """A symlink, FIFO, socket or device: recorded as rejected, never opened (A11)."""
    return stat.S_ISLNK(mode) or any(test(mode) for test, _ in _SPECIAL_KINDS)


def special_result(st: FileStat) -> FileResult:
    """The rejection of a special entry, from its ``lstat`` alone: nothing is opened or followed.

    The scan and the watcher both record specials here, so a fresh index
    and a watching daemon say the same of them.
    """
    if stat.S_ISLNK(st.mode):
        return FileResult(st, Rejection(RejectKind.SYMLINK, SYMLINK_REASON))
    what = next((name for test, name in _SPECIAL_KINDS if test(st.mode)), "special file")
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


def is_under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r + os.sep) for r in roots)


@dataclass(slots=True)
class Walk:
    """What one walk saw: regular files, special entries and the folders it could not read."""

    files: list[FileStat] = field(default_factory=list)
    specials: list[FileStat] = field(default_factory=list)  # symlinks, FIFOs, sockets, devices
    unreadable_dirs: list[str] = field(default_factory=list)

    def paths(self) -> set[str]:
        """Every entry seen that the index records (files and specials)."""
        return {st.path for st in self.files} | {st.path for st in self.specials}


def walk(root: str, walk_result: Walk | None = None) -> Walk:
    """Regular files and special entries under ``root``, in sorted order; links not followed."""
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
            elif is_special(st.st_mode):
                result.specials.append(FileStat.from_stat(entry.path, st))
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
    first: Collection[str] = (),
) -> ScanReport:
    """Bring the index level with the source folders; the work of ``dicomfs index``.

    Among new and changed files, those in ``first`` are indexed before the
    others: a rebuild names the copies that served duplicated UIDs in the
    old index, so they keep serving (reliability.md C2). Paths come only from
    the walk; ``first`` only orders them. A reconcile that completes also
    completes a rebuild: the index's rebuild mark is cleared (E6).
    """
    started = time.monotonic()
    root_list = normalize_roots(roots)
    report = ScanReport()
    seen = Walk()
    for root in root_list:
        walk(root, seen)
    report.seen = len(seen.files) + len(seen.specials)
    report.unreadable_dirs = seen.unreadable_dirs

    known = {p: k for p, k in writer.file_keys().items() if is_under(p, root_list)}
    present = seen.paths()
    # Oldest first: when two files claim one SOP UID, the copy that arrived
    # first serves it, as it would have if the daemon had been watching; the
    # copies that served before a rebuild go before them all.
    changed = [st for st in seen.files if known.get(st.path) != st.change_key]
    changed.sort(key=lambda st: (st.path not in first, st.mtime_ns, st.path))
    to_parse = [st.path for st in changed]
    specials = [special_result(st) for st in seen.specials if known.get(st.path) != st.change_key]
    report.skipped = report.seen - len(to_parse) - len(specials)

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
    for start in range(0, len(specials), batch_size):
        report.add(writer.apply(specials[start : start + batch_size], pending_removals))
        pending_removals = []
    batch: list[FileResult] = []
    done = 0
    rejected = len(specials)
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
    if writer.meta(DETAILS_PENDING):
        writer.set_meta(DETAILS_PENDING, "")  # every file read since the upgrade
    if writer.rebuilding_since() is not None:
        writer.set_meta(REBUILDING, "")  # complete: readers answer from it again
        log.info("the index %s is rebuilt: the mount answers from it again", writer.path)
    writer.checkpoint()
    report.elapsed = time.monotonic() - started
    return report
