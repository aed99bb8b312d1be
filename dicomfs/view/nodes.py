"""What the mount's tree is made of: node types, errors, and safe access to a source file.

A :class:`FileNode` carries what the index saw of its source file; opening
the source (``open_source``) proves the file on disk is still that file
before a byte is served. The errors say why a path cannot be answered
without any errno: each front-end (the FUSE adapter, ``dicomfs ls``/``cat``)
maps them itself. Resolving paths to nodes is ``tree``'s job.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from dicomfs.errors import DicomfsError
from dicomfs.view.report import Reveal, display_path


class ViewError(DicomfsError):
    """A path the tree cannot answer as asked."""


class NotFound(ViewError):
    """No such path in the mount (also: any name that is not a safe name)."""


class NotADirectory(ViewError):
    """A path goes through a file as if it were a folder."""


class IsADirectory(ViewError):
    """File contents were asked of a folder."""


class SourceChanged(ViewError):
    """The source file no longer is the file the index describes: re-index it."""


class Rebuilding(ViewError):
    """The index is being rebuilt from the sources: its answers are not complete yet.

    An empty or partial listing would read as files gone (reliability.md E6);
    the FUSE adapter answers EAGAIN, "try again", until the rebuild is over.
    """


@dataclass(frozen=True, slots=True)
class DirNode:
    name: str
    uid: int
    gid: int
    mode: int
    mtime_ns: int
    # A folder of the patients/ tree names patient data: the source path of
    # one file it stands for, which a reader must be able to read to see the
    # folder on a shared mount (``fuse.fs``; README "Names in paths").
    witness: str | None = field(default=None, compare=False)


# What a file is, as far as serving it goes: its source's path, device, inode,
# size (with any prefix), mtime and ctime. Generated files have no path.
Identity = tuple[str | None, int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class FileNode:
    """A file of the mount: a real source file (``real_path``) or generated ``content``.

    ``inode``/``dev``/``mtime_ns``/``ctime_ns`` and ``source_size`` are what
    the index saw; opening the source checks them again so a swapped or
    rewritten file is never served under the identity it had. ``prefix``
    (the part10 setting, ``dicom.part10``) is served before the source's
    bytes: ``size`` is what a reader sees, the prefix and the source together.
    """

    name: str
    real_path: str | None
    size: int
    mtime_ns: int
    uid: int
    gid: int
    mode: int
    inode: int
    dev: int
    content: bytes | None = None
    indexed_at: float = field(default=0.0, compare=False)  # when the index wrote the row
    ctime_ns: int = 0
    # Generated files that name source paths (manifest.json, rejected.txt):
    # ``render(reveal)`` makes the content again for one reader, naming a
    # source path only where ``reveal(path)`` says that reader may see it.
    # ``content`` is the full version, for the daemon's own user.
    render: Callable[[Reveal], bytes] | None = field(default=None, compare=False)
    # What ``render``'s reveal is asked: False, may the reader list the
    # path's folder (a path is shown); True, may they read the file itself
    # (what is shown was read from it: plans.tsv's patient IDs and labels).
    reveal_files: bool = field(default=False, compare=False)
    # A PS3.10 header made from the index row, served before the source's bytes.
    prefix: bytes = b""
    # Generated content made only when read: a plan's manifest.json is
    # listed with its size (kept per index generation), made when opened.
    make: Callable[[], bytes] | None = field(default=None, compare=False)
    # The index's id of the source file (0: generated): what numbers a by-sop/
    # entry for the kernel and Samba without hashing its path (fuse.fsinfo).
    file_id: int = field(default=0, compare=False)

    @property
    def generated(self) -> bool:
        """Whether this file is made by dicomfs (``content`` or ``make``), not a source."""
        return self.content is not None or self.make is not None

    def data(self) -> bytes:
        """The content of a generated file (``make`` runs now); ValueError for a source."""
        if self.content is not None:
            return self.content
        if self.make is None:
            raise ValueError(f"{self.name} is a source file, not a generated one")
        return self.make()

    @property
    def source_size(self) -> int:
        """The size of the source file itself, as the index saw it."""
        return self.size - len(self.prefix)

    @property
    def identity(self) -> Identity:
        return (self.real_path, self.dev, self.inode, self.size, self.mtime_ns, self.ctime_ns)


Node = DirNode | FileNode


def open_source(node: FileNode) -> int:
    """Open the source of ``node`` read-only and prove it is the indexed file.

    O_NOFOLLOW refuses a symlink swapped in for the file, O_NONBLOCK keeps a
    FIFO swapped in from blocking, and fstat must match the index's inode,
    device, size, mtime and ctime (reliability.md C5, C7); otherwise SourceChanged.
    """
    if node.real_path is None:
        raise IsADirectory(f"{node.name} is generated, it has no source file")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(node.real_path, flags)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise SourceChanged(f"{display_path(node.real_path)} vanished") from exc
    except PermissionError:
        raise
    except OSError as exc:
        if os.path.islink(node.real_path):
            raise SourceChanged(f"{display_path(node.real_path)} is now a symlink") from exc
        raise
    try:
        st = os.fstat(fd)
        # Device 0: indexed under a root, maybe by another host, whose numbers differ.
        seen = (st.st_ino, st.st_dev if node.dev else 0, st.st_size, st.st_mtime_ns)
        indexed = (node.inode, node.dev, node.source_size, node.mtime_ns)
        if not stat.S_ISREG(st.st_mode) or seen != indexed:
            raise SourceChanged(f"{display_path(node.real_path)} changed since it was indexed")
        # chmod/chown since indexing: the kernel checked the mirrored, stale
        # mode and owner (default_permissions), so they must still hold (F1).
        access = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode) & 0o555)
        if access != (node.uid, node.gid, node.mode):
            raise SourceChanged(
                f"{display_path(node.real_path)} changed owner or mode since it was indexed"
            )
        # Same size, mtime and inode, yet the inode changed: rewritten in place
        # with the old mtime put back, or an ACL or link count changed (C7).
        if st.st_ctime_ns != node.ctime_ns:
            raise SourceChanged(
                f"{display_path(node.real_path)} changed since it was indexed (inode change time)"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_source(node: FileNode) -> bytes:
    """All bytes ``node`` serves (its prefix, then its source), checked as ``open_source`` does."""
    fd = open_source(node)
    try:
        chunks = [node.prefix]
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_range(prefix: bytes, fd: int, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` of ``prefix`` followed by the file open as ``fd``."""
    head = prefix[offset : offset + size]
    rest = size - len(head)
    if rest <= 0:
        return head
    return head + os.pread(fd, rest, max(offset - len(prefix), 0))
