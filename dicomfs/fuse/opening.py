"""How a file of the mount is opened: the node, the checked source, and the kernel's pages.

Apart from ``fs.py`` (which maps callbacks to answers) because it is one
decision made at every open, measured in issue 14:

- ``lookup``: the node of a path, remembered while the index generation
  ``held`` saw stays. An open follows the lookup of the same path, so this
  saves a query (0.1 ms of a 0.4 ms open and close). Generated files are
  never remembered: status.json changes without the index changing.
- ``source``: the source opened and checked against the node (C5). A
  remembered node may be one tick older than the index (a source replaced
  and re-indexed a moment ago): when it no longer matches its file, the
  index is asked again before the source is called changed.
- ``policy``: whether the kernel may keep the pages it holds for the path
  (``keep_cache``) or must read this handle with direct I/O.
- ``attributes_of``: while a handle of an older source reads through the
  page cache, the path keeps showing that source's size and times. The
  kernel cuts page-cache reads at the size it holds for the file, and
  every handle of a path shares it: told the new, longer file's size, the
  old handle read its file followed by zeros (seen, G3). Handles of the
  new source read with direct I/O meanwhile, which that size does not
  limit; once the old handles are closed the path is dropped and shows
  the new file.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager

from dicomfs.fuse.held import Held
from dicomfs.view.cache import VersionedCache
from dicomfs.view.nodes import (
    FileNode,
    Identity,
    IsADirectory,
    Node,
    SourceChanged,
    open_source,
)
from dicomfs.view.tree import View

NODES_KEPT = 10_000


def _remembered(node: Node) -> bool:
    """Source files only: a generated file (status.json) changes without the index."""
    return isinstance(node, FileNode) and not node.generated


class Opening:
    """Opens of one mount: remembered nodes, and the sources of the handles open now."""

    def __init__(self, view: View, held: Held) -> None:
        self.view = view
        self.held = held
        self._lock = threading.Lock()
        self._nodes = VersionedCache(NODES_KEPT)
        self._open: dict[str, Counter[Identity]] = {}
        self._paged: dict[str, FileNode] = {}  # the source cached handles of a path read
        # Paths the kernel may have been shown an older source than the index
        # shows (handles of two sources, or ``attributes_of`` answering with
        # the older): dropped once no handle of the older source is left.
        self._behind: set[str] = set()

    def lookup(self, path: str) -> Node:
        """``view.lookup``, remembered while ``held.seen`` stays (see the module)."""
        return self._nodes.get(
            path, self.held.seen, functools.partial(self.view.lookup, path), _remembered
        )

    def source(
        self, path: str, node: FileNode, as_reader: Callable[[], AbstractContextManager[None]]
    ) -> tuple[FileNode, int]:
        """(node, descriptor) of ``path``'s source, checked against the index (C5).

        The source is opened inside ``as_reader()`` (the reader's credentials
        on a shared mount); the index is asked again outside it, as the
        daemon: the index is private to the daemon's user.
        """
        try:
            with as_reader():
                return node, open_source(node)
        except SourceChanged:
            self._nodes.forget(path)
        fresh = self.view.lookup(path)
        if not isinstance(fresh, FileNode):
            raise IsADirectory(path)
        with as_reader():
            return fresh, self.view.open_file(fresh)

    def attributes_of(self, path: str, node: Node) -> Node:
        """What ``path`` shows the kernel: ``node``, or the older source its open handles read."""
        if path not in self._paged:  # the common case, without the lock
            return node
        with self._lock:
            paged = self._paged.get(path)  # there only while a handle of it is open
            if paged is None or not isinstance(node, FileNode) or paged.identity == node.identity:
                return node
            self._behind.add(path)
            return paged

    def policy(self, path: str, node: FileNode) -> tuple[int, int]:
        """(direct_io, keep_cache) for a new handle on ``path``; records it as open.

        Pages are kept when the kernel holds nothing of the path but this
        source (``held``). Otherwise it may still hold an older source's size
        and would cut cached reads at it (seen: a replaced file read back at
        the old length, new bytes): this handle reads with direct I/O, which
        the cached size does not limit, and the path is dropped. While a
        handle on an older source is open, its pages are left alone (G2, G3).
        """
        identity = node.identity
        with self._lock:
            others = self._open.setdefault(path, Counter())
            others[identity] += 1
            if any(ident != identity for ident in others):
                self._behind.add(path)
                return 1, 1
            if self.held.consistent(path, identity):
                self.held.tell(path, identity)
                self._paged[path] = node
                return 0, 1
        self.held.drop(path)
        return 1, 0

    def closed(self, path: str, identity: Identity) -> None:
        """A handle ``policy`` recorded was released."""
        settled = False
        with self._lock:
            counts = self._open.get(path)
            if counts is not None:
                counts[identity] -= 1
                if counts[identity] <= 0:
                    del counts[identity]
                    paged = self._paged.get(path)
                    if paged is not None and paged.identity == identity:
                        del self._paged[path]
                if not counts:
                    del self._open[path]
                paged = self._paged.get(path)
                if path in self._behind and (paged is None or paged.identity not in counts):
                    # No handle of the older source is left: the path may
                    # show the newer one now.
                    self._behind.discard(path)
                    settled = True
        if settled:
            self.held.drop(path)
