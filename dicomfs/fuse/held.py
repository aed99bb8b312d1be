"""What the kernel may hold of each path, and taking it back when the index moves (issue 14).

Every request that reaches this daemon costs a round trip through libfuse
and mfusepy: about 0.1 ms for an empty callback, 0.25 ms for a lookup,
where a page-cache hit costs 5 µs (BENCHMARKS.md, mount table). So a
private mount lets the kernel keep entries and attributes for
``LONG_TIMEOUT``, and pages across opens, and takes them back explicitly
instead of letting them expire every second:

- every answer that hands the kernel the attributes or bytes of a path
  records what it showed (``tell``): the source file's identity (path,
  device, inode, size, mtime, ctime), a generated file, or a folder;
- a thread (``run``) watches the index generation; when it moves, every
  held path is resolved again and, where the answer differs or is gone,
  ``fuse_invalidate_path`` (libfuse 3 high-level API) drops the kernel's
  attributes and pages of it. Generated files are dropped at every tick:
  status.json changes without the index changing;
- an open keeps the kernel's pages only when the kernel holds nothing else
  for the path (``consistent``); otherwise it reads with direct I/O and the
  path is dropped, so a reader gets the old file or the new one, never a
  mix (reliability.md C5, G2);
- memory is bounded: past ``LIMIT`` paths the oldest are dropped and
  forgotten, which costs each of them one lookup later, nothing else.

The open itself stays a round trip: it is where the source is checked
against the index (C5), and where a handle gets the descriptor that keeps
serving the old bytes after a source is replaced (G3). libfuse's no-open
mode would save it, but its reads come by path: when it was tried, a
reader half-way through a file replaced meanwhile got the new file's tail
(what it would save: BENCHMARKS.md, mount table, "no-open").

A shared mount (``allow_other``) keeps one-second timeouts: a long-lived
entry would let one reader reach a folder of ``patients/`` that another
looked up (``fs.py``). The same record then decides at each open whether
the kernel may keep its pages.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable

from dicomfs.view.nodes import DirNode, Node

log = logging.getLogger(__name__)

LONG_TIMEOUT = 3600.0  # entries and attributes of a private mount; invalidated explicitly
TICK = 0.25  # seconds between two looks at the index generation
LIMIT = 20_000  # paths remembered; each costs one resolve when the index moves

# What a path showed: a source's identity tuple, or one of these.
Shown = Hashable
FOLDER: Shown = ("folder",)
GENERATED: Shown = ("generated",)  # dropped at every tick, whatever it showed


def shown(node: Node) -> Shown:
    """What the kernel is shown of ``node``: its source's identity, or what kind it is."""
    if isinstance(node, DirNode):
        return FOLDER
    return GENERATED if node.generated else node.identity


class Held:
    """Paths whose attributes or bytes the kernel may hold, with what each showed.

    ``invalidate(path)`` asks the kernel to drop a path (called from this
    object's own thread only, never from a FUSE request: libfuse forbids it
    there); ``resolve(path)`` answers what the path shows now (None: gone,
    or unknown); ``generation()`` changes whenever the index does.
    """

    def __init__(
        self,
        invalidate: Callable[[str], None],
        resolve: Callable[[str], Shown | None],
        generation: Callable[[], object],
        *,
        limit: int = LIMIT,
        tick: float = TICK,
    ) -> None:
        self._invalidate = invalidate
        self._resolve = resolve
        self._generation = generation
        self._limit = limit
        self._tick = tick
        self._lock = threading.Lock()
        self._paths: dict[str, set[Shown]] = {}  # oldest first
        self._generated: set[str] = set()
        self._dropped: set[str] = set()
        self._spilling = False  # the oldest are being dropped already
        self._not_before = 0.0  # monotonic time before which the index is not looked at again
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.seen: object = None  # the generation of the last look

    def tell(self, path: str, shown: Shown) -> None:
        """The kernel is about to get ``path`` showing ``shown``."""
        self.tell_all([(path, shown)])

    def tell_all(self, answers: list[tuple[str, Shown]]) -> None:
        """``tell`` for every (path, shown) of a listing page, under one lock."""
        mixed = False
        with self._lock:
            paths = self._paths
            for path, shown in answers:
                held = paths.get(path)
                if held is None:
                    paths[path] = {shown}
                else:
                    held.add(shown)
                    if len(held) > 1:
                        self._dropped.add(path)
                        mixed = True
                if shown == GENERATED:
                    self._generated.add(path)
            if len(paths) > self._limit and not self._spilling:
                self._spilling = True  # the next round drops the oldest
                mixed = True
        if mixed:
            self._wake.set()

    def consistent(self, path: str, shown: Shown) -> bool:
        """Whether the kernel holds nothing of ``path`` but ``shown`` (or nothing at all)."""
        with self._lock:
            held = self._paths.get(path)
            return held is None or held == {shown}

    def drop(self, path: str) -> None:
        """Have the kernel forget ``path`` soon (this object's thread does it)."""
        with self._lock:
            self._dropped.add(path)
        self._wake.set()

    def __len__(self) -> int:
        return len(self._paths)

    # -- the thread -----------------------------------------------------------

    def start(self) -> None:
        self.seen = self._look()
        self._thread = threading.Thread(target=self.run, name="dicomfs-held", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._tick)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.round()
            except Exception:
                log.exception("dropping changed paths from the kernel's caches failed")

    def round(self) -> int:
        """One look: drop what changed, generated files, and what was asked; how many.

        Resolving every held path again costs up to ``LIMIT`` lookups; while
        the index moves at every batch (a burst of ingest) that is done at
        most half the time, so the daemon's other threads keep the rest.
        """
        now = self._look()
        changed = now != self.seen and time.monotonic() >= self._not_before
        if changed:
            self.seen = now
        with self._lock:
            wanted = self._dropped | self._generated
            self._dropped, self._generated, self._spilling = set(), set(), False
            excess = len(self._paths) - self._limit * 9 // 10  # room for a tenth more
            if len(self._paths) > self._limit:
                wanted.update(itertools.islice(self._paths, excess))
            candidates = list(self._paths.items()) if changed else []
        started = time.monotonic()
        for path, shows in candidates:
            if path not in wanted and (len(shows) != 1 or self._resolve(path) not in shows):
                wanted.add(path)
        self._not_before = 2 * time.monotonic() - started  # as long again before the next
        for path in wanted:
            with self._lock:
                snapshot = set(self._paths.get(path, ()))
            self._invalidate(path)
            with self._lock:
                after = self._paths.get(path)
                if after is not None:
                    after -= snapshot  # what was told meanwhile stays held
                    if not after:
                        del self._paths[path]
        return len(wanted)

    def _look(self) -> object:
        try:
            return self._generation()
        except Exception as exc:  # the index being rebuilt, or unreadable: all changed
            return ("unknown", type(exc).__name__, id(exc))
