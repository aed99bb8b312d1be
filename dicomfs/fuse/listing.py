"""One open folder of the mount, read by the kernel in chunks from a page at a time.

The kernel reads a folder in requests of a few kilobytes, each starting
after the offset of the last entry it kept (``readdir(offset)``). A folder
of ten million entries must not be built whole before the first reply, nor
kept whole between replies (issue 13): a ``Listing`` holds the current page
of ``(name, struct stat)`` and the iterator of the pages after it
(``View.pages``). Offsets count entries from the start of the listing (the
entry at position p has offset p + 1), so a request in the middle of a page
(the kernel's buffer was full) is answered from the page in hand, the next
request past its end reads one more page, and a seek back (``rewinddir``,
``seekdir`` to an earlier offset) starts the pages again and skips forward.

The kernel sends one request at a time per open folder, but may send them
from different FUSE threads; a lock keeps the page and the iterator
together anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

Entry = tuple[bytes, Any]  # (name, mfusepy.c_stat), or (name, inode number): names only


class Listing:
    """The current page of one open folder; ``start`` makes a fresh iterator of its pages."""

    def __init__(self, start: Callable[[], Iterator[list[Entry]]]) -> None:
        self._start = start
        self._lock = threading.Lock()
        self._pages = start()
        self._base = 0  # position of _entries[0] in the listing
        self._entries: list[Entry] = []

    def window(self, position: int) -> tuple[int, list[Entry]]:
        """Entries from ``position`` (the kernel's offset) to the end of their page.

        Returns (position, entries); no entries at the end of the listing.
        Exceptions of the page iterator (the index is rebuilt, a query fails)
        go to the caller; the listing can be read again from its start.
        """
        with self._lock:
            if position < self._base:  # a seek back: read the pages again from the start
                self._pages, self._base, self._entries = self._start(), 0, []
            while position >= self._base + len(self._entries):
                try:
                    page = next(self._pages, None)
                except BaseException:
                    # A failed generator is finished: start again at the next request,
                    # or a retry would take the rest of the listing for its end.
                    self._pages, self._base, self._entries = self._start(), 0, []
                    raise
                if page is None:
                    return position, []
                self._base += len(self._entries)
                self._entries = page
            return position, self._entries[position - self._base :]
