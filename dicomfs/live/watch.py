"""The inotify side: the only module that imports watchdog.

watchdog runs handlers on its observer thread with no exception guard, so
an exception escaping a handler silently ends watching (style.md). The
handler here only filters by name and event type and hands paths to a
:class:`Sink` (the ingest queue); every look at the disk happens on the
ingest worker. What watchdog cannot tell us, we check ourselves:

- reads must not produce events (reliability.md A1): the schedule uses a
  narrow ``event_filter``, from which watchdog 7.1 derives the kernel mask
  (``InotifyEmitter.get_event_mask_from_filter``): IN_CLOSE_WRITE, IN_MOVE,
  IN_DELETE, IN_CREATE and IN_DELETE_SELF; never IN_OPEN, IN_ACCESS or
  IN_CLOSE_NOWRITE, so a read through the mount is invisible to the kernel
  queue;
- a lost event stream (IN_Q_OVERFLOW, a failed re-watch) is only logged by
  watchdog: a logging handler on its loggers turns it into a reconcile (A4);
- the observer thread may die, and a source root may be swapped under us
  (renamed away, a volume mounted over it): :meth:`Watcher.check` notices
  both, restarts the observer and asks for a reconcile (A6, A8);
- the watch limit may be too small for the tree (A5): counted at start.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Protocol

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.inotify import InotifyObserver

from dicomfs.live.scan import is_ignored_name, is_under

log = logging.getLogger(__name__)

# FileCreatedEvent adds nothing to the kernel mask (a recursive watch asks for
# IN_CREATE anyway, to watch new folders) and is needed for one case: a file
# hard-linked into the tree (``ln``, ``cp -l``, rsync --link-dest) produces
# IN_CREATE and nothing else. The worker only acts on it when st_nlink > 1;
# a plain create is a half-written file and waits for its close.
EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]
# Where watchdog 7.1 reports lost events: "Inotify queue overflowed" (inotify_c)
# and "Unable to rebuild recursive inotify watches" (inotify).
LOST_EVENT_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")
MAX_USER_WATCHES = "/proc/sys/fs/inotify/max_user_watches"
RESTART_BACKOFF = 10.0


class Sink(Protocol):
    """What the watcher feeds; implemented by ingest.Ingest. Must never block."""

    def check_file(self, path: str) -> None: ...

    def check_created(self, path: str) -> None: ...

    def check_moved_in(self, path: str) -> None: ...

    def check_dir(self, path: str) -> None: ...

    def request_reconcile(self, reason: str) -> None: ...


def _decode(path: bytes | str) -> str:
    return os.fsdecode(path)


class _Handler(FileSystemEventHandler):
    """Filters and enqueues; never raises into watchdog's thread."""

    def __init__(self, roots: Sequence[str], sink: Sink) -> None:
        super().__init__()
        self._roots = list(roots)
        self._sink = sink
        self.events_seen = 0

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self.events_seen += 1
            self._route(event)
        except Exception:
            log.exception(
                "could not queue filesystem event %r; the next reconcile will catch up", event
            )

    def _route(self, event: FileSystemEvent) -> None:
        # Synthetic events are watchdog's own walk of a moved/created folder;
        # the folder check below walks it too, and de-duplicated.
        if event.is_synthetic:
            return
        src = _decode(event.src_path)
        dest = _decode(event.dest_path) if event.dest_path else ""
        if isinstance(event, DirCreatedEvent | DirDeletedEvent):
            self._enqueue(self._sink.check_dir, src)
        elif isinstance(event, DirMovedEvent):
            # Full events: src is "" when moved in from outside, dest "" when moved out.
            # A folder moved in is walked after the settle period, once: files
            # written just before the move are then settled, and parsed as one burst.
            self._enqueue(self._sink.check_dir, src)
            self._enqueue(self._sink.check_dir, dest)
        elif isinstance(event, FileMovedEvent):
            self._enqueue(self._sink.check_file, src)
            self._enqueue(self._sink.check_moved_in, dest)
        elif isinstance(event, FileCreatedEvent):
            self._enqueue(self._sink.check_created, src)
        elif isinstance(event, FileClosedEvent | FileDeletedEvent):
            self._enqueue(self._sink.check_file, src)

    def _enqueue(self, target: Callable[[str], None], path: str) -> None:
        if path and not self.ignored(path):
            target(path)

    def ignored(self, path: str) -> bool:
        """Outside every root, or any component below the root is a dotfile/partial name."""
        for root in self._roots:
            if is_under(path, [root]):
                relative = path[len(root) :].strip(os.sep)
                return any(is_ignored_name(part) for part in relative.split(os.sep) if part)
        return True


class _LostEventsHandler(logging.Handler):
    """Turns watchdog's "events were lost" log records into a reconcile request."""

    def __init__(self, sink: Sink) -> None:
        super().__init__(level=logging.WARNING)
        self._sink = sink
        self.seen = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.seen += 1
            self._sink.request_reconcile(f"watchdog reported lost events: {record.getMessage()}")
        except Exception:
            self.handleError(record)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def max_user_watches() -> int | None:
    try:
        with open(MAX_USER_WATCHES) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def count_dirs(roots: Sequence[str], stop_after: int) -> int:
    """Folders inotify will need a watch for (ignored names excluded), counting up to a cap."""
    count = 0
    stack = list(roots)
    while stack and count <= stop_after:
        folder = stack.pop()
        count += 1
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if not is_ignored_name(entry.name) and entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return count


def check_watch_limit(roots: Sequence[str], reconcile_interval: float) -> bool:
    """Say loudly when the tree needs more inotify watches than the system allows (A5)."""
    limit = max_user_watches()
    if limit is None:
        return True
    needed = count_dirs(roots, stop_after=limit)
    if needed < limit:
        log.info("watching %d folders (fs.inotify.max_user_watches = %d)", needed, limit)
        return True
    log.error(
        "the sources hold more than %d folders, the inotify watch limit "
        "(fs.inotify.max_user_watches): new files in unwatched folders are found only by "
        "the periodic reconcile every %.0f s; raise the limit, e.g. "
        "`sysctl fs.inotify.max_user_watches=%d`",
        limit,
        reconcile_interval,
        limit * 4,
    )
    return False


class Watcher:
    """An inotify observer over the source roots, restarted when it dies or a root is swapped."""

    def __init__(self, roots: Sequence[str], sink: Sink, *, reconcile_interval: float = 600.0):
        self.roots = list(roots)
        self._sink = sink
        self._handler = _Handler(self.roots, sink)
        self._lost = _LostEventsHandler(sink)
        self._reconcile_interval = reconcile_interval
        self._observer: InotifyObserver | None = None
        self._identities: dict[str, tuple[int, int] | None] = {}
        self._next_attempt = 0.0
        self.restarts = 0

    @property
    def events_seen(self) -> int:
        """Every event watchdog delivered to the handler, before filtering by name."""
        return self._handler.events_seen

    @property
    def lost_event_reports(self) -> int:
        return self._lost.seen

    def start(self) -> None:
        # watchdog 7.1 warns (with the whole watch table in the message, so the
        # warnings registry never de-duplicates it) each time a folder created
        # by `mkdir -p` is watched twice: its own benign race, not ours to report.
        warnings.filterwarnings(
            "ignore", message="Callback with id", category=RuntimeWarning, module="watchdog"
        )
        for name in LOST_EVENT_LOGGERS:
            logger = logging.getLogger(name)
            logger.addHandler(self._lost)
            if logger.getEffectiveLevel() > logging.WARNING:
                logger.setLevel(logging.WARNING)
        check_watch_limit(self.roots, self._reconcile_interval)
        self._start_observer()

    def _start_observer(self) -> None:
        observer = InotifyObserver(generate_full_events=True)
        identities: dict[str, tuple[int, int] | None] = {}
        for root in self.roots:
            identities[root] = _identity(root)
            if identities[root] is None:
                log.error(
                    "source folder %s is missing: not watched, its index entries are kept", root
                )
                continue
            observer.schedule(self._handler, root, recursive=True, event_filter=EVENT_FILTER)
        try:
            observer.start()
        except OSError as exc:
            self._stop_observer(observer)
            self._observer = None
            # Retried by check(), but not on every tick: the log would drown.
            self._next_attempt = time.monotonic() + RESTART_BACKOFF
            if exc.errno == errno.ENOSPC:
                log.error("inotify watch limit reached: not watching (%s)", exc)
            else:
                log.error("cannot watch the sources: %s", exc)
            return
        self._observer = observer
        self._identities = identities
        self._next_attempt = 0.0

    @staticmethod
    def _stop_observer(observer: InotifyObserver) -> None:
        try:
            observer.stop()
            if observer.is_alive():
                observer.join(timeout=5)
        except Exception:  # a half-dead observer must not block the restart
            log.debug("stopping the old observer failed", exc_info=True)

    def alive(self) -> bool:
        """The observer, its emitters and the thread reading the inotify fd are all running."""
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        reader = getattr(observer, "_inotify_fd", None)
        if reader is not None and not reader.is_alive():
            return False
        return all(emitter.is_alive() for emitter in observer.emitters)

    def check(self) -> bool:
        """Restart the observer if it died or a root was swapped; True when nothing was wrong."""
        problems = []
        if not self.alive():
            problems.append("the inotify observer is not running")
        for root in self.roots:
            if _identity(root) != self._identities.get(root):
                problems.append(f"source folder {root} was replaced, mounted over or removed")
        if not problems:
            return True
        if time.monotonic() < self._next_attempt:
            return False
        log.error("%s: restarting the watch and reconciling", "; ".join(problems))
        if self._observer is not None:
            self._stop_observer(self._observer)
        self.restarts += 1
        self._start_observer()
        self._sink.request_reconcile("; ".join(problems))
        return False

    def stop(self) -> None:
        for name in LOST_EVENT_LOGGERS:
            logging.getLogger(name).removeHandler(self._lost)
        if self._observer is not None:
            self._stop_observer(self._observer)
            self._observer = None
