"""From "something changed at this path" to index batches, on one writer thread.

The watcher hands paths to :class:`Ingest` and returns at once (a slow parse
must never block the event thread, reliability.md A10). Paths wait in the
bounded, de-duplicated queue of ``pending``; when it is full the event is
dropped and a full reconcile is scheduled instead, so nothing is lost and
nothing blocks.

Every queued path is a question about the disk, "look at this path now",
answered in rounds by ``rounds``: gone files are removed, unchanged ones
skipped (A9), anything else parsed once it has settled (B1), each batch one
``IndexWriter.apply`` transaction. Full reconciles (start, timer, lost
events, observer restart) run on the same thread, so there is one writer
(E1).

The index is a cache and is never trusted once damaged (E6): before each job
the worker asks ``index_guard`` whether the index file is still the sound
file it writes, and on damage moves it aside, opens a new index and
reconciles from scratch, the copies that served duplicated UIDs first.
This module is the worker itself: its lifecycle, its loop, what it does on
failure, and the full reconcile.

The worker keeps no per-file structure: looks ask the index, reconciles
compare folders with it in path order (issue 13). It owns one
``scan.ParserPool`` for its life, shared by rounds and reconciles: their
forkserver starts with the worker (most of a pool's start), the parse
processes at the first batch big enough for them; they stay between bursts,
are started anew after one died, and end with the worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from dicomfs.errors import DicomfsError
from dicomfs.index import IndexWriter, index_errors, is_damage, is_disk_full
from dicomfs.live import scan
from dicomfs.live.index_guard import IndexGuard
from dicomfs.live.pending import (
    CREATED,
    DIR,
    FILE,
    Counters,
    PendingQueue,
    ProgressSink,
    ReconcileRequest,
)
from dicomfs.live.rounds import Looker

__all__ = ["Counters", "Ingest", "ProgressSink"]

log = logging.getLogger(__name__)

# After a failed reconcile or index write, wait before trying again: a full
# disk or a vanished volume would otherwise turn the worker into a busy loop.
RETRY_DELAY = 30.0


class _Stopping(Exception):
    """Raised from the progress callback to abandon a reconcile at shutdown."""


class Ingest:
    """The one writer thread: takes jobs from the queue and keeps the index current."""

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
        self.batch_size = batch_size
        self.workers = workers
        self.reconcile_interval = reconcile_interval
        self.counters = Counters()
        self._queue = PendingQueue(
            self.counters,
            settle=settle,
            batch_size=batch_size,
            batch_window=batch_window,
            queue_limit=queue_limit,
            clock=clock,
        )
        self._pool = scan.ParserPool(workers)
        self._looker = Looker(
            self._queue,
            self.counters,
            self.roots,
            settle=settle,
            batch_size=batch_size,
            workers=workers,
            pool=self._pool,
        )
        self._guard = IndexGuard(self._alarm)
        self._thread: threading.Thread | None = None
        self._own_writer = False  # True once the worker opened a writer of its own
        self._first: set[str] = set()  # indexed first by the next reconcile (a rebuild's)
        self.alarms: list[str] = []
        self.last_reconcile: scan.ScanReport | None = None
        self.last_reconcile_at: float | None = None

    # -- producers (any thread; never block) ------------------------------------

    def check_file(self, path: str) -> None:
        self._queue.put(FILE, path)

    def check_moved_in(self, path: str) -> None:
        """A file renamed into a source: looked at without the settle wait (``put``)."""
        self._queue.put(FILE, path, at_once=True)

    def check_created(self, path: str) -> None:
        self._queue.put(CREATED, path)

    def check_dir(self, path: str) -> None:
        self._queue.put(DIR, path)

    def recheck(self, path: str) -> None:
        """Look at ``path`` again (the mount found it changed, C5).

        Unlike an event, a repeat never postpones a look already queued: a
        reader retrying its open in a loop must not starve the re-index.
        """
        self._queue.recheck(path)

    def request_reconcile(
        self, reason: str, *, delay: float = 0.0, progress: ProgressSink | None = None
    ) -> None:
        self._queue.request_reconcile(reason, delay=delay, progress=progress)

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        self.request_reconcile("periodic", delay=self.reconcile_interval)
        self._thread = threading.Thread(target=self._run, name="dicomfs-ingest", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the batch in hand, drop the rest (the next start reconciles), join."""
        self._queue.stop()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is queued, due or running (deferred paths count as queued)."""
        return self._queue.wait_idle(timeout)

    def queue_length(self) -> int:
        return len(self._queue)

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
            self._prepare_workers()
            self._guard.remember(self._writer)
            while True:
                job = self._queue.next_job()
                if job is None:
                    return
                try:
                    self._check_index()
                    if isinstance(job, ReconcileRequest):
                        self._run_reconcile(job)
                    elif job:
                        self._looker.run_round(job, self._writer)
                    self._guard.remember(self._writer)  # our own writes
                except Exception as exc:
                    self.counters.errors += 1
                    self._failed(exc)
                finally:
                    self._queue.finished()
        except BaseException:
            log.critical("ingest worker died: the index is no longer updated", exc_info=True)
            raise
        finally:
            self._pool.close()
            if self._own_writer:
                with contextlib.suppress(*index_errors()):
                    self._writer.close()

    def _failed(self, exc: Exception) -> None:
        if is_damage(exc):
            self._guard.damaged(exc)
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

    def _prepare_workers(self) -> None:
        try:
            self._pool.prepare()
        except Exception:
            # Not fatal: the first burst starts the workers (and says why it cannot).
            log.warning("could not start the parse workers' forkserver", exc_info=True)

    # -- the index itself (reliability.md E6) ------------------------------------------

    def _verify_at_start(self) -> None:
        """The index may have been damaged while nobody ran: check it once, fully."""
        try:
            problem = self._guard.problem_at_start(self._writer)
            if problem is not None:
                self._rebuild(problem)
        except Exception:
            log.exception("could not check the index %s at start", self._writer.path)

    def _check_index(self) -> None:
        """Rebuild the index when its file vanished, was replaced or is damaged."""
        problem = self._guard.problem(self._writer)
        if problem is not None:
            self._rebuild(problem)

    def _rebuild(self, problem: str) -> None:
        """Put a new index in place of the old one and reconcile every source into it."""
        self._writer = self._guard.replace(self._writer, problem)
        self._own_writer = True
        # A rebuild cut short by another keeps what the first old index said.
        self._first |= self._guard.served_copies
        self.counters.rebuilds += 1
        self.request_reconcile("index rebuilt")

    # -- full reconcile -------------------------------------------------------------------

    def _run_reconcile(self, request: ReconcileRequest) -> None:
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
        missing = len(present) < len(self.roots)
        if not present:
            self._looker.keep_vanished = True
            return
        log.info("reconcile started (%s)", reason)

        def check() -> None:
            # An unchanged tree of ten million files takes minutes to walk;
            # systemd's TimeoutStopSec is 60 s.
            if self._queue.stopping:
                raise _Stopping

        def report_progress(done: int, total: int, rejected: int) -> None:
            check()
            if progress is not None:
                progress(done, total, rejected)

        report = scan.reconcile(
            self._writer,
            present,
            workers=self.workers,
            batch_size=self.batch_size,
            progress=report_progress,
            pool=self._pool,
            first=self._first,
            check=check,
        )
        self._first = set()
        self.counters.reconciles += 1
        self.last_reconcile = report
        self.last_reconcile_at = time.time()
        if report.mass_loss_alarm:
            self._alarm(report.mass_loss_alarm)
        # Until the next reconcile completes: one that fails or is stopped
        # leaves the rule as the last complete one set it.
        self._looker.keep_vanished = missing or bool(report.mass_loss_alarm)
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
