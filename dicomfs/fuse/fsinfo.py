"""What file servers read from the mount besides bytes: stable inode numbers and real free space.

A Samba share of the mount (Windows planning workstations) relies on two
figures the FUSE adapter would otherwise leave to libfuse or to zero:

- Inode numbers. Samba hands ``st_ino`` to clients as the SMB file ID
  (IndexNumber; ``get_FileIndex`` uses the bare inode number when the file is
  on the share's own device, as every file of the mount is), and keys its
  open-file records on it. libfuse numbers nodes in the order they are looked
  up, so the same path would get another number after every remount. Here
  every path gets a number that is a function of the path alone
  (``inode_of``): the root is 1, every other path the first 63 bits of its
  BLAKE2b digest. The same path has the same number across remounts and
  across daemons serving the same index; nothing is remembered.
- Free space. Samba answers "how big is this drive" from ``statvfs`` of the
  share path; a FUSE filesystem that reports zero blocks makes Samba log
  "dfree is broken" and Windows show a 0-byte drive. The mount holds no
  data of its own, so ``space`` reports the filesystems that hold the
  sources (or, when the mount does not know them, the one holding the index).

Collisions. A hash cannot rule out two paths sharing a number; with 63 bits
the chance that any two of ``n`` distinct paths collide is below
``n**2 / 2**64``: 5e-10 for the 100,000 paths of a mid-size clinic's view,
5e-6 for ten million (a million instances, each under by-sop, by-series,
by-study, objects and several plan packages). Were it to happen, the effect
is bounded because the mount is read-only: files have one link, so
``cp -a``, ``tar`` and ``rsync -H`` do not take the two for hard links, and
two read-only opens sharing one Samba share-mode record are compatible
(the example share turns oplocks and leases off). The numbers 0, 1 and
libfuse's FUSE_UNKNOWN_INO (0xffffffff) are never produced for a path
other than the root. Numbers of ``by-sop/`` files lie in one 256th of the
range; a path's number falls on one of ``f`` file numbers with a chance of
``n * f / 2**63``: 1e-5 at ten million each. ``tests/test_fs_for_smb.py``
checks that the demo and real data sets have no collision at all.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable

log = logging.getLogger(__name__)

ROOT_INO = 1
_UNKNOWN_INO = 0xFFFFFFFF  # libfuse: "ignore this inode number" in listings
_RESERVED = frozenset({0, ROOT_INO, _UNKNOWN_INO})
_FILE_INODES = 0x5A << 55  # by-sop files: this prefix or'ed with the file id
_FILE_ID_MASK = (1 << 55) - 1  # SQLite's row ids count up from 1: never reached
NAME_MAX = 255


def inode_of(path: str) -> int:
    """The inode number of the mount path ``path`` ("/" or "/a/b", as libfuse gives it)."""
    if path in ("/", ""):
        return ROOT_INO
    digest = hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    ino = int.from_bytes(digest, "big") >> 1  # 63 bits: positive as a signed 64-bit number too
    if ino in _RESERVED:
        ino ^= 1 << 62
    return ino


def file_inode(file_id: int) -> int:
    """The inode number of ``by-sop/<name>``: from the index's id of its file, no hash.

    A listing of ``by-sop/`` names every file of the archive; a hash per
    name was a fifth of its cost at a million (BENCHMARKS.md, scale). The
    id is stable while the index is, and a file that replaces another under
    the same name (a promoted copy) gets its own number, as on a disk.
    """
    return _FILE_INODES | (file_id & _FILE_ID_MASK)


def file_inodes(file_ids: Iterable[int]) -> list[int]:
    """``file_inode`` of a page of ids, without a call per id."""
    base, mask = _FILE_INODES, _FILE_ID_MASK
    return [base | (i & mask) for i in file_ids]


def inode_for(path: str, file_id: int) -> int:
    """The inode number of the mount path ``path`` showing the source file ``file_id`` (0: none)."""
    if file_id and parent_path(path) == "/by-sop":
        return file_inode(file_id)
    return inode_of(path)


def child_path(parent: str, name: str) -> str:
    """The libfuse form of ``parent/name``: one slash, none at the end."""
    return f"{parent.rstrip('/')}/{name}"


def parent_path(path: str) -> str:
    head = path.rstrip("/").rpartition("/")[0]
    return head or "/"


def space(paths: Iterable[str]) -> dict[str, int]:
    """statvfs figures for the mount: those of the filesystems holding ``paths``, added up.

    Each filesystem counts once however many paths lie on it (``st_dev``).
    Blocks are given in units of the largest fragment size among them, so
    a sum never overstates a filesystem. A path that cannot be examined is
    skipped (logged); with none left every count is 0, as before.
    """
    seen: set[int] = set()
    found: list[os.statvfs_result] = []
    for path in paths:
        try:
            dev = os.stat(path).st_dev
            if dev in seen:
                continue
            figures = os.statvfs(path)
        except OSError as exc:
            log.warning("free space of a source filesystem unknown: %s", exc.strerror)
            continue
        seen.add(dev)
        found.append(figures)
    frsize = max((f.f_frsize for f in found), default=4096) or 4096
    answer = {"f_bsize": frsize, "f_frsize": frsize, "f_namemax": NAME_MAX}
    for key in ("f_blocks", "f_bfree", "f_bavail"):
        answer[key] = sum(getattr(f, key) * f.f_frsize for f in found) // frsize
    for key in ("f_files", "f_ffree", "f_favail"):
        answer[key] = sum(getattr(f, key) for f in found)
    return answer


def inodes_of(parent: str, names: Iterable[bytes]) -> list[int]:
    """``inode_of`` of every ``parent/name`` at once: a page of a listing of millions.

    The same numbers as ``inode_of`` (a test compares them), without a call
    per name: the per-entry cost of a big listing is mostly Python calls.
    """
    head = f"{parent.rstrip('/')}/".encode("utf-8", "surrogateescape")
    blake2b, from_bytes = hashlib.blake2b, int.from_bytes
    out = [from_bytes(blake2b(head + n, digest_size=8).digest(), "big") >> 1 for n in names]
    return [ino ^ (1 << 62) if ino in _RESERVED else ino for ino in out]
