"""The queue between "something changed at this path" and the ingest worker.

Producers (the watcher's event thread, readers of the mount) put a path here
and return at once: the queue is bounded, de-duplicated and kept in due
order, and a path that finds it full is dropped in favour of one full
reconcile, so nothing blocks and nothing is lost (reliability.md A10). The
worker takes its next job from here: a full reconcile that has come due, a
round of due paths, or (an empty round) the periodic check of the index
file. This module owns the only state shared between threads, behind one
condition variable, and the settle rule that says when a queued file is
still being written (``settled``); what a look at a path does is ``rounds``'
job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

# What a queued path asks: look at a file (a close or change event), at a
# file just created (only a hard link is complete at once), or at a folder.
FILE = "file"
CREATED = "created"
DIR = "dir"
# How often the idle worker checks that the index file is still the one it writes.
INDEX_CHECK_INTERVAL = 1.0
# One round takes up to this many batches of due paths: a burst is parsed by
# one process pool (its start-up is paid once) and written batch by batch.
ROUND_BATCHES = 8


def settled(size: int, mtime_ns: int, seen: tuple[int, int] | None, settle: float) -> bool:
    """The settle rule (B1): unchanged for ``settle`` seconds, by its mtime, or
    (clock skew, a future mtime) by being identical to the previous look one
    settle period ago (``seen``: its (size, mtime_ns) then)."""
    if time.time_ns() - mtime_ns >= settle * 1e9:
        return True
    return seen == (size, mtime_ns)


class ProgressSink(Protocol):
    """Where a full reconcile reports how far it got; closed when it ends."""

    def __call__(self, done: int, total: int, rejected: int) -> None: ...

    def close(self) -> None: ...


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
    kept: int = 0  # vanished files not removed while a mass-loss alarm stands
    batches: int = 0
    reconciles: int = 0
    errors: int = 0
    rebuilds: int = 0


@dataclass(slots=True)
class Entry:
    """One queued path: what to look for, when, and what the previous look saw."""

    kind: str
    due: float
    seen: tuple[int, int] | None = None  # (size, mtime_ns) at the previous look


@dataclass(slots=True)
class ReconcileRequest:
    """The one pending full reconcile: every reason asked for it, the earliest time wins."""

    reasons: list[str]
    not_before: float
    progress: ProgressSink | None = None


class _Queued:
    """Queued paths in two dicts, each in due order as well as insertion order.

    ``later``: looks due one settle period after their event; ``now``: paths
    renamed in, due at once. Each dict's first entry is its earliest, so the
    worker finds the next due look without sorting or scanning the queue.
    """

    def __init__(self) -> None:
        self.later: dict[tuple[str, str], Entry] = {}
        self.now: dict[tuple[str, str], Entry] = {}

    def __len__(self) -> int:
        return len(self.later) + len(self.now)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self.later or key in self.now

    def pop(self, key: tuple[str, str]) -> Entry | None:
        entry = self.now.pop(key, None)
        return self.later.pop(key, None) if entry is None else entry

    def add(self, key: tuple[str, str], entry: Entry, *, at_once: bool = False) -> None:
        (self.now if at_once else self.later)[key] = entry

    def first_due(self) -> float | None:
        heads = [next(iter(d.values())).due for d in (self.now, self.later) if d]
        return min(heads) if heads else None

    def take_due(self, now: float, limit: int) -> list[tuple[str, Entry]]:
        keys: list[tuple[tuple[str, str], dict[tuple[str, str], Entry]]] = []
        for queue in (self.now, self.later):
            for key, entry in queue.items():
                if entry.due > now or len(keys) >= limit:
                    break
                keys.append((key, queue))
        return [(key[1], queue.pop(key)) for key, queue in keys]


# The worker's next job: a full reconcile, or a round of due (path, entry)
# pairs; an empty round means "check the index file".
Job = ReconcileRequest | list[tuple[str, Entry]]


class PendingQueue:
    """Paths waiting for a look and the pending reconcile, shared by producers and the worker.

    Producers call ``put``, ``recheck`` and ``request_reconcile`` from any
    thread and never block. The worker alone calls ``next_job``, ``requeue``
    and ``finished``; ``busy`` is true from ``next_job`` handing out a job
    until ``finished``, so ``wait_idle`` sees a job in hand as work.
    """

    def __init__(
        self,
        counters: Counters,
        *,
        settle: float,
        batch_size: int,
        batch_window: float,
        queue_limit: int,
        clock: Callable[[], float],
    ) -> None:
        self.counters = counters
        self.settle = settle
        self.batch_size = batch_size
        self.batch_window = batch_window
        self.queue_limit = queue_limit
        self._clock = clock
        self._cond = threading.Condition()
        self._pending = _Queued()
        self.reconcile: ReconcileRequest | None = None
        self.busy = False
        self.stopping = False
        self._last_put = float("-inf")
        self._next_index_check = 0.0

    def __len__(self) -> int:
        return len(self._pending)

    # -- producers (any thread; never block) ------------------------------------

    def recheck(self, path: str) -> None:
        """Queue a look at ``path`` unless one is queued already (never postpone it)."""
        with self._cond:
            if (FILE, path) in self._pending:
                return
        self.put(FILE, path)

    def put(self, kind: str, path: str, *, at_once: bool = False) -> None:
        """Queue a look one settle period from now; a repeat postpones the queued one.

        ``at_once``: due now. For a path renamed into a source: a rename
        is complete when it is seen, so waiting before the first look only
        delays a burst moved in; the look still applies the settle rule to
        the file's mtime (B1), so a file written a moment before its rename
        is looked at again one settle period later, as before.
        """
        with self._cond:
            # A close event answers what a create event asks (is it a hard link?).
            if kind == CREATED and (FILE, path) in self._pending:
                return
            if kind == FILE:
                self._pending.pop((CREATED, path))
            key = (kind, path)
            due = self._clock() + (0.0 if at_once else self.settle)
            entry = self._pending.pop(key)
            if entry is None and len(self._pending) >= self.queue_limit:
                self.counters.dropped += 1
                if self.reconcile is None or self.reconcile.not_before > self._clock():
                    log.warning(
                        "event queue full (%d paths): scheduling a full reconcile", self.queue_limit
                    )
                self._request_locked("event queue full", 0.0, None)
                return
            self.counters.events += 1
            self._last_put = self._clock()
            if entry is not None:
                self.counters.merged += 1
            # Re-inserted at the end, with a later due time: due order is kept.
            self._pending.add(key, Entry(kind, due), at_once=at_once)
            self._cond.notify_all()

    def request_reconcile(
        self, reason: str, *, delay: float = 0.0, progress: ProgressSink | None = None
    ) -> None:
        with self._cond:
            self._request_locked(reason, delay, progress)

    def _request_locked(self, reason: str, delay: float, progress: ProgressSink | None) -> None:
        not_before = self._clock() + delay
        request = self.reconcile
        if request is None:
            self.reconcile = ReconcileRequest([reason], not_before, progress)
        else:
            if reason not in request.reasons:
                request.reasons.append(reason)
            request.not_before = min(request.not_before, not_before)
            request.progress = request.progress or progress
        self._cond.notify_all()

    # -- lifecycle ----------------------------------------------------------------

    def stop(self) -> None:
        """Make ``next_job`` return None from now on (what is queued is dropped)."""
        with self._cond:
            self.stopping = True
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is queued, due or running (deferred paths count as queued)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self.busy and not len(self._pending) and not self._reconcile_due(),
                timeout,
            )

    def _reconcile_due(self) -> bool:
        return self.reconcile is not None and self.reconcile.not_before <= self._clock()

    # -- the worker's side ------------------------------------------------------------

    def next_job(self) -> Job | None:
        """Wait for the next reconcile or round of due paths; None once stopping."""
        with self._cond:
            while not self.stopping:
                now = self._clock()
                if now >= self._next_index_check:
                    self._next_index_check = now + INDEX_CHECK_INTERVAL
                    self.busy = True
                    return []
                waits: list[float] = [self._next_index_check - now]
                request = self.reconcile
                if request is not None:
                    if request.not_before <= now:
                        self.reconcile = None
                        self.busy = True
                        return request
                    waits.append(request.not_before - now)
                first = self._pending.first_due()
                if first is not None:
                    # While events keep arriving, wait until a short window without
                    # one (at most a settle period past the first due path), so a
                    # burst becomes one round instead of a round per few files.
                    quiet = self._last_put + self.batch_window
                    ready_at = max(first, min(quiet, first + self.settle))
                    if ready_at <= now:
                        self.busy = True
                        return self._take_due(now)
                    waits.append(ready_at - now)
                self._cond.wait(min(waits) if waits else None)
            return None

    def _take_due(self, now: float) -> list[tuple[str, Entry]]:
        return self._pending.take_due(now, self.batch_size * ROUND_BATCHES)

    def requeue(self, kind: str, path: str, seen: tuple[int, int] | None) -> None:
        """Look again one settle period from now, unless a newer event already queued it."""
        with self._cond:
            key = (kind, path)
            if key not in self._pending:
                self._pending.add(key, Entry(kind, self._clock() + self.settle, seen))
                self._cond.notify_all()

    def finished(self) -> None:
        """The job ``next_job`` handed out is done (or failed): wake ``wait_idle``."""
        with self._cond:
            self.busy = False
            self._cond.notify_all()
