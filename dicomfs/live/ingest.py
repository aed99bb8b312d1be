"""From "something changed at this path" to index batches, on one writer thread.

The watcher hands paths to :class:`Ingest` and returns at once (a slow parse
must never block the event thread, reliability.md A10). Paths wait in a
bounded, de-duplicated queue ordered by due time; when the queue is full the
event is dropped and a full reconcile is scheduled instead, so nothing is
lost and nothing blocks.

Every queued path is a question about the disk, not a verdict taken from the
event: "look at this path now". A look that finds the file gone removes it, a
regular file whose (size, mtime_ns, inode) match the index is skipped (so
repeated events cause no churn, A9), and anything else is parsed once it has
settled: its size and mtime have not changed for ``settle`` seconds (B1).
Because a look is idempotent, merging duplicate events and processing them
in any order gives the same index.

Parsing and writing happen on the worker thread, with the process pool of
``scan.parse_many`` for bursts; each batch is one ``IndexWriter.apply``
transaction. Full reconciles (start, timer, lost events, observer restart)
run on the same thread, so there is one writer (E1).

The index is a cache and is never trusted once damaged (E6). Every second
the worker compares the index file with what it last wrote: a file that
vanished or was replaced, or that changed behind our back and fails
``PRAGMA quick_check``, or SQLite reporting SQLITE_CORRUPT/NOTADB, makes the
worker move the file aside, open a new index and reconcile from scratch.
Readers reopen by themselves (``IndexReader.is_current``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dicomfs.dicom.records import ChangeKey, FileResult, Rejection, RejectKind
from dicomfs.errors import DicomfsError, IndexCorruptError, IndexUnavailableError
from dicomfs.index import IndexReader, IndexWriter, is_damage, is_disk_full, set_aside
from dicomfs.live import scan

log = logging.getLogger(__name__)

FILE = "file"
CREATED = "created"
DIR = "dir"
_GONE = (errno.ENOENT, errno.ENOTDIR)
# After a failed reconcile or index write, wait before trying again: a full
# disk or a vanished volume would otherwise turn the worker into a busy loop.
RETRY_DELAY = 30.0
# How often the idle worker checks that the index file is still the one it writes.
INDEX_CHECK_INTERVAL = 1.0
# One round takes up to this many batches of due paths: a burst is parsed by
# one process pool (its start-up is paid once) and written batch by batch.
ROUND_BATCHES = 8


class ProgressSink(Protocol):
    def __call__(self, done: int, total: int, rejected: int) -> None: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class _Entry:
    kind: str
    due: float
    seen: tuple[int, int] | None = None  # (size, mtime_ns) at the previous look


@dataclass(slots=True)
class _ReconcileRequest:
    reasons: list[str]
    not_before: float
    progress: ProgressSink | None = None


@dataclass(slots=True)
class Counters:
    """What the worker did, for tests, STATUS= lines and status.json.

    ``parsed`` counts files opened and parsed outside full reconciles: the
    re-index work that reading through the mount must never cause.
    """

    events: int = 0
    merged: int = 0
    dropped: int = 0
    looks: int = 0
    unchanged: int = 0
    deferred: int = 0
    parsed: int = 0
    indexed: int = 0
    rejected: int = 0
    removed: int = 0
    batches: int = 0
    reconciles: int = 0
    errors: int = 0
    rebuilds: int = 0


class _Stopping(Exception):
    """Raised from the progress callback to abandon a reconcile at shutdown."""


@dataclass(slots=True)
class _Round:
    """The outcome of looking at one round of queued paths."""

    to_parse: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


class Ingest:
    """The queue, the settle rule and the one writer thread."""

    def __init__(
        self,
        writer: IndexWriter,
        roots: Sequence[str],
        *,
        settle: float = 0.2,
        batch_size: int = 500,
        batch_window: float = 0.05,
        queue_limit: int = 100_000,
        workers: int = 1,
        reconcile_interval: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._writer = writer
        self.roots = list(roots)
        self.settle = settle
        self.batch_size = batch_size
        self.batch_window = batch_window
        self.queue_limit = queue_limit
        self.workers = workers
        self.reconcile_interval = reconcile_interval
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: dict[tuple[str, str], _Entry] = {}  # insertion order == due order
        self._reconcile: _ReconcileRequest | None = None
        self._busy = False
        self._last_put = float("-inf")
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._known: dict[str, ChangeKey] = {}
        self._index_seen: tuple[int, int, int, int] | None = None
        self._next_index_check = 0.0
        self._rebuild_pending: str | None = None
        self._own_writer = False  # True once the worker opened a writer of its own
        self.counters = Counters()
        self.alarms: list[str] = []
        self.last_reconcile: scan.ScanReport | None = None
        self.last_reconcile_at: float | None = None

    # -- producers (any thread; never block) ------------------------------------

    def check_file(self, path: str) -> None:
        self._put(FILE, path)

    def check_created(self, path: str) -> None:
        self._put(CREATED, path)

    def check_dir(self, path: str) -> None:
        self._put(DIR, path)

    def recheck(self, path: str) -> None:
        """Look at ``path`` again (the mount found it changed, C5).

        Unlike an event, a repeat never postpones a look already queued: a
        reader retrying its open in a loop must not starve the re-index.
        """
        with self._cond:
            if (FILE, path) in self._pending:
                return
        self._put(FILE, path)

    def _put(self, kind: str, path: str) -> None:
        with self._cond:
            # A close event answers what a create event asks (is it a hard link?).
            if kind == CREATED and (FILE, path) in self._pending:
                return
            if kind == FILE:
                self._pending.pop((CREATED, path), None)
            key = (kind, path)
            due = self._clock() + self.settle
            entry = self._pending.pop(key, None)
            if entry is None and len(self._pending) >= self.queue_limit:
                self.counters.dropped += 1
                if self._reconcile is None or self._reconcile.not_before > self._clock():
                    log.warning(
                        "event queue full (%d paths): scheduling a full reconcile", self.queue_limit
                    )
                self._request_locked("event queue full", 0.0, None)
                return
            self.counters.events += 1
            self._last_put = self._clock()
            if entry is not None:
                self.counters.merged += 1
            # Re-inserted at the end with a later due time: the dict stays sorted by due.
            self._pending[key] = _Entry(kind, due)
            self._cond.notify_all()

    def request_reconcile(
        self, reason: str, *, delay: float = 0.0, progress: ProgressSink | None = None
    ) -> None:
        with self._cond:
            self._request_locked(reason, delay, progress)

    def _request_locked(self, reason: str, delay: float, progress: ProgressSink | None) -> None:
        not_before = self._clock() + delay
        request = self._reconcile
        if request is None:
            self._reconcile = _ReconcileRequest([reason], not_before, progress)
        else:
            if reason not in request.reasons:
                request.reasons.append(reason)
            request.not_before = min(request.not_before, not_before)
            request.progress = request.progress or progress
        self._cond.notify_all()

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        self.request_reconcile("periodic", delay=self.reconcile_interval)
        self._thread = threading.Thread(target=self._run, name="dicomfs-ingest", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the batch in hand, drop the rest (the next start reconciles), join."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is queued, due or running (deferred paths count as queued)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._busy and not self._pending and not self._reconcile_due(), timeout
            )

    def _reconcile_due(self) -> bool:
        return self._reconcile is not None and self._reconcile.not_before <= self._clock()

    def queue_length(self) -> int:
        return len(self._pending)

    def status(self) -> dict[str, Any]:
        report = self.last_reconcile
        return {
            **asdict(self.counters),
            "queued": self.queue_length(),
            "last_reconcile_at": self.last_reconcile_at,
            "last_reconcile_seen": report.seen if report else None,
            "alarms": list(self.alarms[-5:]),
        }

    # -- the worker -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._verify_at_start()
            self._known = self._writer.file_keys()
            self._index_seen = _fingerprint(self._writer.path)
            while True:
                job = self._next_job()
                if job is None:
                    return
                try:
                    self._check_index()
                    if isinstance(job, _ReconcileRequest):
                        self._run_reconcile(job)
                    elif job:
                        self._run_round(job)
                    self._index_seen = _fingerprint(self._writer.path)  # our own writes
                except Exception as exc:
                    self.counters.errors += 1
                    self._failed(exc)
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
        except BaseException:
            log.critical("ingest worker died: the index is no longer updated", exc_info=True)
            raise
        finally:
            if self._own_writer:
                with contextlib.suppress(sqlite3.Error):
                    self._writer.close()

    def _failed(self, exc: Exception) -> None:
        if is_damage(exc):
            self._rebuild_pending = f"is damaged ({exc})"
            try:
                self._check_index()
            except Exception:
                log.exception("rebuilding the index failed; trying again at the next check")
            return
        if is_disk_full(exc):
            # The batch was rolled back as a whole; the reconcile redoes it.
            log.error(
                "cannot write the index %s: %s; nothing of this batch was applied, "
                "retrying in %.0f s",
                self._writer.path,
                exc,
                RETRY_DELAY,
            )
        else:
            log.exception("ingest round failed; a full reconcile will catch up")
        self.request_reconcile("ingest error", delay=RETRY_DELAY)

    # -- the index itself (reliability.md E6) ------------------------------------------

    def _verify_at_start(self) -> None:
        """The index may have been damaged while nobody ran: check it once, fully."""
        try:
            verdict = _verify(self._writer.path)
            if verdict is not None:
                self._rebuild(f"is damaged ({verdict})")
        except Exception:
            log.exception("could not check the index %s at start", self._writer.path)

    def _check_index(self) -> None:
        """Rebuild the index when its file vanished, was replaced or is damaged."""
        if self._rebuild_pending is not None:
            self._rebuild(self._rebuild_pending)
            return
        path = self._writer.path
        now = _fingerprint(path)
        # Deletion and replacement are judged against the file the writer
        # opened, so one that happened during a job is not taken for our own.
        if now is None:
            problem = "was deleted"
        elif now[:2] != self._writer.identity:
            problem = "was replaced by another file"
        elif now == self._index_seen:
            return
        else:
            verdict = _verify(path)
            if verdict is None:
                self._index_seen = now  # another process wrote to it, correctly
                return
            problem = f"was changed by another process and is damaged ({verdict})"
        self._rebuild(problem)

    def _rebuild(self, problem: str) -> None:
        """Move the old index aside, open a new one and reconcile every source into it."""
        path = self._writer.path
        self._rebuild_pending = problem
        self._alarm(f"the index {path} {problem}: rebuilding it from the source folders")
        with contextlib.suppress(sqlite3.Error):
            self._writer.close()
        aside = set_aside(path)
        if os.path.lexists(aside):
            log.error("kept the old index as %s", aside)
        self._writer = IndexWriter(path)
        self._own_writer = True
        self._rebuild_pending = None
        self._known = {}
        self._index_seen = _fingerprint(path)
        self.counters.rebuilds += 1
        self.request_reconcile("index rebuilt")

    def _next_job(self) -> _ReconcileRequest | list[tuple[str, _Entry]] | None:
        """The next reconcile or round of due paths; an empty round is the index check."""
        with self._cond:
            while not self._stopping:
                now = self._clock()
                if now >= self._next_index_check:
                    self._next_index_check = now + INDEX_CHECK_INTERVAL
                    self._busy = True
                    return []
                waits: list[float] = [self._next_index_check - now]
                request = self._reconcile
                if request is not None:
                    if request.not_before <= now:
                        self._reconcile = None
                        self._busy = True
                        return request
                    waits.append(request.not_before - now)
                if self._pending:
                    head = next(iter(self._pending.values()))
                    # While events keep arriving, wait up to a short window past
                    # the first due path so a burst becomes one batch instead of
                    # a transaction per file; once they stop, go at once.
                    ready_at = max(
                        head.due,
                        min(head.due, self._last_put) + self.batch_window,
                    )
                    if ready_at <= now:
                        self._busy = True
                        return self._take_due(now)
                    waits.append(ready_at - now)
                self._cond.wait(min(waits) if waits else None)
            return None

    def _take_due(self, now: float) -> list[tuple[str, _Entry]]:
        keys: list[tuple[str, str]] = []
        for key, entry in self._pending.items():
            if entry.due > now or len(keys) >= self.batch_size * ROUND_BATCHES:
                break
            keys.append(key)
        return [(key[1], self._pending.pop(key)) for key in keys]

    def _requeue(self, kind: str, path: str, seen: tuple[int, int] | None) -> None:
        """Look again one settle period from now, unless a newer event already queued it."""
        with self._cond:
            key = (kind, path)
            if key not in self._pending:
                self._pending[key] = _Entry(kind, self._clock() + self.settle, seen)
                self._cond.notify_all()

    # -- one round of looks ------------------------------------------------------------

    def _run_round(self, entries: list[tuple[str, _Entry]]) -> None:
        work = _Round()
        # Sorted by components, a folder's subfolders follow it directly: each
        # is walked with the folder and skipped here.
        dirs = sorted(
            (p for p, entry in entries if entry.kind == DIR), key=lambda p: p.split(os.sep)
        )
        walked: list[str] = []
        for path in dirs:
            if not scan.is_under(path, walked[-1:]):
                self._look_dir(path, work)
                walked.append(path)
        for path, entry in entries:
            if entry.kind != DIR:
                self._look_file(path, entry, work)
        self._parse_and_apply(work)

    def _lstat(self, path: str) -> os.stat_result | None:
        """lstat, or None when the path is gone; raises OSError when it is unknown (A7)."""
        self.counters.looks += 1
        try:
            return os.lstat(path)
        except OSError as exc:
            if exc.errno in _GONE:
                return None
            raise

    def _look_file(self, path: str, entry: _Entry, work: _Round) -> None:
        try:
            st = self._lstat(path)
        except OSError as exc:
            log.warning("cannot look at %s (%s); leaving it as it is", path, exc.strerror)
            return
        if st is None or not stat.S_ISREG(st.st_mode):
            # Gone, or a symlink/FIFO/folder now sits there: not an indexable file.
            if path in self._known:
                work.removed.append(path)
            return
        if entry.kind == CREATED and st.st_nlink < 2:
            return  # a new, probably half-written file: its close event will come
        self._consider(path, scan.file_stat(path, st).change_key, entry.seen, work)

    def _consider(
        self, path: str, key: ChangeKey, seen: tuple[int, int] | None, work: _Round
    ) -> None:
        """``key`` is ``FileStat.change_key``: size, mtime_ns, inode, mode, uid, gid."""
        if self._known.get(path) == key:
            self.counters.unchanged += 1
            return
        size, mtime_ns = key[0], key[1]
        if not self._settled(size, mtime_ns, seen):
            self.counters.deferred += 1
            self._requeue(FILE, path, (size, mtime_ns))
            return
        work.to_parse.append(path)

    def _settled(self, size: int, mtime_ns: int, seen: tuple[int, int] | None) -> bool:
        """Unchanged for ``settle`` seconds: by its mtime, or (clock skew, a future
        mtime) by being identical to the previous look one settle period ago."""
        if time.time_ns() - mtime_ns >= self.settle * 1e9:
            return True
        return seen == (size, mtime_ns)

    def _look_dir(self, path: str, work: _Round) -> None:
        try:
            st = self._lstat(path)
        except OSError as exc:
            log.warning("cannot look at folder %s (%s); leaving it as it is", path, exc.strerror)
            return
        if any(scan.is_under(root, [path]) for root in self.roots):
            # A source root itself vanished or was moved: never de-index a whole
            # source on one event (A8); the reconcile applies the mass-loss rule.
            self.request_reconcile(f"source folder {path} changed")
            return
        prefix = path + os.sep
        below = [p for p in self._known if p.startswith(prefix)]  # ~0.1 s per million files
        if st is None or not stat.S_ISDIR(st.st_mode):
            work.removed.extend(below)
            return
        seen = scan.walk(path)
        present = {f.path for f in seen.files}
        work.removed.extend(
            p for p in below if p not in present and not scan.is_under(p, seen.unreadable_dirs)
        )
        for f in seen.files:
            self.counters.looks += 1
            self._consider(f.path, f.change_key, None, work)

    # -- parse and write -------------------------------------------------------------------

    def _parse_and_apply(self, work: _Round) -> None:
        """Parse in the pool for bursts; write each batch as soon as it is complete."""
        batch: list[FileResult] = []
        removed = list(dict.fromkeys(work.removed))
        results = scan.parse_many(work.to_parse, self.workers) if work.to_parse else iter(())
        for path, result in zip(work.to_parse, results, strict=True):
            self.counters.parsed += 1
            if result is None:
                # Vanished or no longer a regular file between the look and the open.
                if path in self._known:
                    removed.append(path)
            elif not self._retry_truncated(result):
                batch.append(result)
            if len(batch) >= self.batch_size:
                self._apply(batch, removed[: self.batch_size])
                del removed[: self.batch_size]
                batch = []
        while batch or removed:
            self._apply(batch, removed[: self.batch_size])
            del removed[: self.batch_size]
            batch = []

    def _retry_truncated(self, item: FileResult) -> bool:
        """A truncated file that is still changing is being written: look again later.

        Only a file that stays truncated once stable is recorded as rejected (B1).
        """
        if not (isinstance(item.result, Rejection) and item.result.kind == RejectKind.TRUNCATED):
            return False
        path = item.stat.path
        try:
            st = os.lstat(path)
        except OSError:
            st = None
        if st is not None and (
            (st.st_size, st.st_mtime_ns, st.st_ino) == item.stat.skip_key
            and self._settled(st.st_size, st.st_mtime_ns, None)
        ):
            return False
        self.counters.deferred += 1
        self._requeue(FILE, path, None)
        return True

    def _apply(self, batch: list[FileResult], removed: list[str]) -> None:
        """One transaction; the known-keys cache follows only after it committed."""
        stats = self._writer.apply(batch, removed, digest=scan.file_digest)
        self.counters.batches += 1
        self.counters.indexed += stats.indexed
        self.counters.rejected += stats.rejected
        self.counters.removed += stats.removed
        for item in batch:
            self._known[item.stat.path] = item.stat.change_key
        for path in removed:
            self._known.pop(path, None)

    # -- full reconcile -------------------------------------------------------------------

    def _run_reconcile(self, request: _ReconcileRequest) -> None:
        reason = ", ".join(r for r in request.reasons if r != "periodic") or "periodic"
        try:
            self._reconcile_roots(reason, request.progress)
        except _Stopping:
            log.info("reconcile (%s) abandoned at shutdown", reason)
        except (DicomfsError, OSError) as exc:
            self.counters.errors += 1
            log.error("reconcile (%s) failed: %s; retrying in %.0f s", reason, exc, RETRY_DELAY)
            self.request_reconcile(reason, delay=RETRY_DELAY)
        finally:
            if request.progress is not None:
                request.progress.close()
            self.request_reconcile("periodic", delay=self.reconcile_interval)

    def _reconcile_roots(self, reason: str, progress: ProgressSink | None) -> None:
        present = [root for root in self.roots if os.path.isdir(root)]
        for root in self.roots:
            if root not in present:
                self._alarm(f"source folder {root} is missing: keeping its indexed files")
        if not present:
            return
        log.info("reconcile started (%s)", reason)

        def report_progress(done: int, total: int, rejected: int) -> None:
            if self._stopping:
                raise _Stopping
            if progress is not None:
                progress(done, total, rejected)

        report = scan.reconcile(
            self._writer,
            present,
            workers=self.workers,
            batch_size=self.batch_size,
            progress=report_progress,
        )
        self._known = self._writer.file_keys()
        self.counters.reconciles += 1
        self.last_reconcile = report
        self.last_reconcile_at = time.time()
        if report.mass_loss_alarm:
            self._alarm(report.mass_loss_alarm)
        log.info(
            "reconcile (%s) done in %.1f s: %d files seen, %d unchanged, %d indexed, "
            "%d rejected, %d removed",
            reason,
            report.elapsed,
            report.seen,
            report.skipped,
            report.indexed,
            report.rejected,
            report.removed,
        )

    def _alarm(self, message: str) -> None:
        log.error("ALARM: %s", message)
        self.alarms.append(message)
        del self.alarms[:-20]


def _fingerprint(path: Path) -> tuple[int, int, int, int] | None:
    """(device, inode, size, mtime_ns) of the index file, None when it is gone."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _verify(path: Path) -> str | None:
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
