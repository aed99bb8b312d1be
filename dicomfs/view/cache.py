"""Small thread-safe LRU caches: how the tree answers repeated questions.

The kernel asks for the attributes of every entry it lists, so the tree
keeps folder listings and generated files for a TTL (``TTLCache``; design.md,
"The mount"): nothing is served older than the TTL, and a TTL of 0 caches
nothing. Plan packages depend on the index alone and are kept for as long
as it does not change (``VersionedCache``, ``view.packages``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar, cast

_T = TypeVar("_T")


class TTLCache:
    """A small LRU whose entries expire; shared by all threads."""

    def __init__(self, ttl: float, maxsize: int) -> None:
        self.ttl = ttl
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, tuple[float, object]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], _T]) -> _T:
        """The cached value of ``key``, or ``compute()`` (run outside the lock) stored."""
        now = time.monotonic()
        with self._lock:
            hit = self._data.get(key)
            if hit is not None and now - hit[0] < self.ttl:
                self._data.move_to_end(key)
                return cast(_T, hit[1])
        value = compute()
        if self.ttl > 0:
            with self._lock:
                self._data[key] = (now, value)
                self._data.move_to_end(key)
                # Expired entries go now: a by-sop listing can be the whole index.
                stale = [k for k, (t, _) in self._data.items() if now - t >= self.ttl]
                for k in stale:
                    del self._data[k]
                while len(self._data) > self.maxsize:
                    self._data.popitem(last=False)
        return value


class VersionedCache:
    """A bounded LRU whose entries stay valid while the index is at the version they were made at.

    Plan packages are costly (many queries, a JSON document) and depend on
    what the index holds, not on the clock: kept with the index's generation
    (``IndexWriter.apply`` moves it), one stays valid until ingest writes
    again, however long that is, instead of for a TTL. The version is read
    before computing, so a write during the computation makes the entry old
    at once. ``version`` None (an index older than the generation) keeps nothing.
    A caller that knows what a value depends on passes ``still`` to keep it
    across versions that did not touch that (packages: ``index.changes``).
    The FUSE adapter keeps the nodes opens ask for the same way (``fuse.opening``).
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, tuple[Hashable, object]] = OrderedDict()
        self._lock = threading.Lock()

    def get(
        self,
        key: Hashable,
        version: Hashable | None,
        compute: Callable[[], _T],
        keep: Callable[[_T], bool] | None = None,
        still: Callable[[Hashable, Hashable, _T], bool] | None = None,
    ) -> _T:
        """The value for ``key`` made at ``version``; ``keep(value)`` False: not kept.

        ``still(kept_version, version, value)`` True: a value kept from an
        older version is valid at ``version`` too, and is kept as of it.
        """
        hit: tuple[Hashable, object] | None = None
        if version is not None:
            with self._lock:
                hit = self._data.get(key)
                if hit is not None and hit[0] == version:
                    self._data.move_to_end(key)
                    return cast(_T, hit[1])
        if hit is not None and still is not None and still(hit[0], version, cast(_T, hit[1])):
            value = cast(_T, hit[1])
        else:
            value = compute()
            if keep is not None and not keep(value):
                return value
        if version is not None:
            with self._lock:
                self._data[key] = (version, value)
                self._data.move_to_end(key)
                while len(self._data) > self.maxsize:
                    self._data.popitem(last=False)
        return value

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._data.pop(key, None)
