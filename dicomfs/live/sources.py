"""A source folder next to the index, path by path, in the order the index keeps paths.

Comparing a folder of ten million files with the index must not hold either
side whole (issue 13): the folder is walked in the order the index sorts
its paths, the bytes of ``os.fsencode(path)`` compared as memcmp, and
merged with the index's rows read in pages by path range
(``IndexReader.file_keys_under``). Memory then holds the folders on the
current path of the walk and one page of rows, whatever the archive's size;
the caller keeps only what differs.

Sorting a folder's entries by their encoded name, with ``/`` appended to
folder names, gives exactly that order for the full paths: every path under
a folder ``d`` starts with ``d/``, and a file name holds no ``/``.

Safety rules (reliability.md A7, A11): entries are looked at with ``lstat``
only, so symlinks, FIFOs, sockets and devices are reported as what they are
(never opened nor followed); a folder that cannot be read is reported, so
that its indexed files are "unknown", never "gone".
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from dicomfs.dicom.records import ChangeKey, FileStat, stat_change_key
from dicomfs.index import IndexReader

log = logging.getLogger(__name__)

IGNORED_SUFFIXES = (".part", ".tmp")
SPECIAL_KINDS = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


# One difference found by a comparison: a path, what the walk saw there (None:
# nothing) and the change key the index has for it (None: not indexed).
Compared = tuple[str, FileStat | None, ChangeKey | None]


@dataclass(slots=True)
class Tally:
    """What ``compare`` counts without yielding: files the index has as they are.

    At a million unchanged files, yielding each only for the caller to skip
    it (and decoding its path for that) was an eighth of a re-scan. An
    unchanged tree therefore yields nothing for minutes at ten million
    files: ``check``, called before each folder is read, is where a caller
    that must be able to stop (the daemon) raises to abandon the walk.
    """

    unchanged: int = 0
    check: Callable[[], None] | None = None


def is_ignored_name(name: str) -> bool:
    """Dotfiles and partial-download names are never indexed (reliability.md B2)."""
    return name.startswith(".") or name.endswith(IGNORED_SUFFIXES)


def is_special(mode: int) -> bool:
    """A symlink, FIFO, socket or device: recorded as rejected, never opened (A11)."""
    return stat.S_ISLNK(mode) or any(test(mode) for test, _ in SPECIAL_KINDS)


def is_under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r + os.sep) for r in roots)


def folder_prefix(folder: str) -> str:
    """What every path under ``folder`` starts with."""
    return folder if folder.endswith(os.sep) else folder + os.sep


def walk_sorted(folder: str, unreadable: list[str]) -> Iterator[FileStat]:
    """Regular files and special entries under ``folder``, in the index's path order.

    Links are not followed. A folder that cannot be read is appended to
    ``unreadable`` before any entry that sorts after it is yielded.
    """
    for key, st in _walk_keyed(folder, unreadable):
        yield FileStat.from_stat(_decoded(key), st)


def _decoded(raw: bytes) -> str:
    """``os.fsdecode`` of a path the walk holds as bytes, without its checks per call."""
    return raw.decode(_ENCODING, "surrogateescape")


_ENCODING = sys.getfilesystemencoding()
_IGNORED_BYTES = tuple(suffix.encode() for suffix in IGNORED_SUFFIXES)


def _walk_keyed(
    folder: str, unreadable: list[str], check: Callable[[], None] | None = None
) -> Iterator[tuple[bytes, os.stat_result]]:
    """``walk_sorted`` with each path as the index stores it (``os.fsencode``), and its lstat.

    The folders are read as bytes (``os.scandir`` of an encoded path), so a
    path is never encoded or decoded on the way: at a million unchanged
    files that was a fifth of a re-scan.
    """
    if check is not None:
        check()
    stack = [iter(_listing(os.fsencode(folder), unreadable))]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
        elif item[0][-1:] == b"/":
            if check is not None:
                check()
            stack.append(iter(_listing(item[0][:-1], unreadable)))
        else:
            yield item


def _listing(folder: bytes, unreadable: list[str]) -> list[tuple[bytes, os.stat_result]]:
    """The entries of one folder worth a look, sorted by their encoded paths (folders + "/")."""
    items: list[tuple[bytes, os.stat_result]] = []
    append, is_dir, is_regular = items.append, stat.S_ISDIR, stat.S_ISREG
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                if name[:1] == b"." or name.endswith(_IGNORED_BYTES):  # is_ignored_name
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # vanished between listing and stat
                mode = st.st_mode
                if is_dir(mode):
                    append((entry.path + b"/", st))
                elif is_regular(mode) or is_special(mode):
                    append((entry.path, st))
    except OSError as exc:
        log.warning("cannot read folder %s: %s", _decoded(folder), exc.strerror)
        unreadable.append(_decoded(folder))
        return []
    items.sort(key=_first)  # paths are unique: the stat results are never compared
    return items


def _first(item: tuple[bytes, os.stat_result]) -> bytes:
    return item[0]


def compare(
    reader: IndexReader, folder: str, unreadable: list[str], tally: Tally
) -> Iterator[Compared]:
    """Every path under ``folder`` where the walk and the index differ, in path order, once.

    Files whose change key the index has are only counted, in ``tally``. A
    path the index has but the walk did not see may be under a folder that
    could not be read: such folders are in ``unreadable`` by the time the
    path is yielded, so the caller can tell "gone" from "unknown" (A7).
    """
    walked = _walk_keyed(folder, unreadable, tally.check)
    indexed = reader.raw_file_keys_under(folder_prefix(folder))
    seen_key, seen = next(walked, (b"", None))
    row_key, row = next(indexed, (b"", None))
    while seen is not None or row is not None:
        if seen is not None and (row is None or seen_key < row_key):
            path = _decoded(seen_key)
            yield path, FileStat.from_stat(path, seen), None
            seen_key, seen = next(walked, (b"", None))
        elif row is not None and (seen is None or row_key < seen_key):
            yield _decoded(row_key), None, row
            row_key, row = next(indexed, (b"", None))
        elif seen is not None and row is not None:
            if stat_change_key(seen) == row:
                tally.unchanged += 1
            else:
                path = _decoded(seen_key)
                yield path, FileStat.from_stat(path, seen), row
            seen_key, seen = next(walked, (b"", None))
            row_key, row = next(indexed, (b"", None))
