"""The FUSE adapter: view nodes to stat dicts, errno values and file handles.

The only module that imports mfusepy or knows errno. Everything else is in
``dicomfs.view``; this stays thin so that the tree is testable without FUSE
(style.md, ratarmount).

Decisions, each with its reason:

- What is about libfuse and mfusepy themselves (library choice, reply
  buffers, the listing fix, the loop and its options) is in ``binding.py``.
- Every callback is wrapped by ``_guard``: mfusepy turns any exception that
  is not an OSError into EINVAL (reliability.md G1), so each one is mapped
  here and anything unexpected becomes EIO after it is logged.
- Kernel caches (set in ``init_with_config``): ``negative_timeout=0`` so a
  path that failed a moment before it was indexed is not remembered as
  missing; no ``kernel_cache`` and no ``auto_cache``. A private mount keeps
  entries and attributes for an hour and pages across opens, and takes
  them back when the index moves (``held``: every answer records what it
  showed, a thread drops what changed); a shared one keeps one-second
  timeouts (the ``patients/`` rule below). An open keeps the kernel's pages
  only when it holds nothing of another source for the path; otherwise
  that handle reads with direct I/O, which the cached size does not cut,
  and the path is dropped. A handle opened on a changed source while an
  older handle is still open bypasses the page cache too, so neither sees
  the other's bytes (G2, G3). Generated files are always direct I/O: their
  size may change between ``stat`` and ``read``.
- ``readdir`` hands the kernel full attributes with every entry
  (READDIRPLUS), so ``ls -l`` of a thousand files costs one listing, not a
  thousand lookup callbacks. Three things stood in the way, each measured:
  mfusepy 3.1.1 passes fill flags 0 (``binding.ListingFUSE.readdir_fuse_3`` sets
  FUSE_FILL_DIR_PLUS); libfuse 3.14 sends ino=0, "ignore these attributes",
  for entries it buffers itself, so entries are filled with offsets
  (``fuse.listing``: one page per open folder); and READDIRPLUS_AUTO gives
  attributes with the first chunk only, so it is switched off in
  ``init_with_config``. The folders that grow with the archive (``by-sop/``
  and the like) are the exception: names and inode numbers only, a page at
  a time, so that neither libfuse nor the kernel keeps a node per entry of
  a million-entry listing (issue 13); ``ls -l`` there looks each file up.
- Real files are opened once, in ``open``, by ``opening.source`` (O_NOFOLLOW,
  fstat checked against the index) and read with ``os.pread`` on that
  descriptor: a handle opened before a source was replaced keeps reading the
  old bytes. With ``allow_other`` that open is made with the reader's own
  filesystem credentials (``caller.py``), so ACLs and closed folders refuse
  through the mount exactly as they refuse directly (F1, F2).
- With the view's ``part10`` setting a file may carry a prefix (a PS3.10
  header made from its index row, ``FileNode.prefix``): a read is answered
  from the prefix, then from the descriptor at the offset less the prefix's
  length; ``read_buf`` replies with a memory buffer and the descriptor in
  one vector, so the source's bytes are still spliced by libfuse. Under
  ``--symlinks`` such a file stays a regular file: a link cannot add bytes.
- A folder of ``patients/`` names patient data: with ``allow_other`` it
  exists for a reader only if they may read the file it stands for
  (``DirNode.witness``, checked by ``caller.shown_to``): ``getattr`` and
  ``opendir`` answer ENOENT, as for a path that does not exist, and
  ``readdir`` leaves it out, one open per such entry under one switch of
  credentials. Nothing is cached per reader; the kernel's dentry cache is
  shared by all readers, so a folder another reader looked up less than
  ENTRY_TIMEOUT ago may still be reached by name (README "Names in paths").
- ``use_ino`` with numbers from the path (``fsinfo``: stable across remounts,
  SMB file IDs); ``statfs`` gives the sources' filesystems (a real SMB drive
  size). No getxattr/listxattr: unimplemented, the kernel stops asking.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import itertools
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")  # binding.py says why

import mfusepy  # must follow the environment setting above

from dicomfs.errors import DicomfsError
from dicomfs.fuse import reply
from dicomfs.fuse.attrs import attributes, c_stat, is_link
from dicomfs.fuse.binding import (
    FUSE_CAP_CACHE_SYMLINKS,
    FUSE_CAP_READDIRPLUS_AUTO,
    FUSE_CAP_SPLICE_MOVE,
    FUSE_CAP_SPLICE_WRITE,
    invalidate_path,
    session_exited,
)
from dicomfs.fuse.caller import Caller, acting_as, groups_of, reveal_for, shown_to
from dicomfs.fuse.fsinfo import (
    child_path,
    file_inodes,
    inode_for,
    inode_of,
    inodes_of,
    parent_path,
    space,
)
from dicomfs.fuse.held import LONG_TIMEOUT, Held, Shown, shown
from dicomfs.fuse.listing import Entry, Listing
from dicomfs.fuse.opening import Opening
from dicomfs.index import index_errors
from dicomfs.view.nodes import (
    DirNode,
    FileNode,
    Identity,
    IsADirectory,
    Node,
    NotADirectory,
    NotFound,
    Rebuilding,
    SourceChanged,
    read_range,
)
from dicomfs.view.tree import View

log = logging.getLogger(__name__)


FUSE_MAJOR: int = mfusepy.fuse_version_major
FUSE_MINOR: int = mfusepy.fuse_version_minor
# Entries and attributes of a shared mount (allow_other); a private one keeps
# them for held.LONG_TIMEOUT and takes them back when the index moves (held.py).
ENTRY_TIMEOUT = 1.0
ATTR_TIMEOUT = 1.0
# The kernel asks for up to this much ahead of a sequential reader.
_MAX_READAHEAD = 1 << 20


_WRITE_FLAGS = os.O_TRUNC | os.O_APPEND | os.O_CREAT
_EARLY_READ = 1 << 20


def _inode(path: str, node: Node) -> int:
    """``fsinfo.inode_for``: by the file's index id under by-sop/, else by the path."""
    return inode_for(path, node.file_id if isinstance(node, FileNode) else 0)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guard(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Map every failure to a deliberate errno; nothing reaches mfusepy as EINVAL."""

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return func(*args, **kwargs)
        except mfusepy.FuseOSError:
            raise
        except NotFound:
            raise mfusepy.FuseOSError(errno.ENOENT) from None
        except NotADirectory:
            raise mfusepy.FuseOSError(errno.ENOTDIR) from None
        except IsADirectory:
            raise mfusepy.FuseOSError(errno.EISDIR) from None
        except Rebuilding:
            raise mfusepy.FuseOSError(errno.EAGAIN) from None  # the index is being rebuilt (E6)
        except PermissionError:
            # No path in the message: source folders may be named after patients.
            log.info("%s: permission denied to the reader", func.__name__)
            raise mfusepy.FuseOSError(errno.EACCES) from None
        except SourceChanged:
            raise mfusepy.FuseOSError(errno.EIO) from None  # logged by the view
        except index_errors(OSError, DicomfsError) as exc:
            log.error("%s failed: %s", func.__name__, exc)
            raise mfusepy.FuseOSError(errno.EIO) from None
        except Exception:
            log.exception("%s failed unexpectedly", func.__name__)
            raise mfusepy.FuseOSError(errno.EIO) from None

    return wrapper


def _caller() -> Caller:
    """The reader of the request this thread is answering (fuse_get_context).

    Without its groups (the process is gone, or lives in another pid
    namespace: pid 0) the reader is checked with none, which can only refuse more.
    """
    uid, gid, pid = mfusepy.fuse_get_context()
    groups: tuple[int, ...] = ()
    if pid > 0:
        with contextlib.suppress(OSError, ValueError):
            groups = groups_of(pid, uid, gid)
    return Caller(uid, gid, groups)


def _read_only(*_args: object, **_kwargs: object) -> int:
    raise mfusepy.FuseOSError(errno.EROFS)


@dataclass(slots=True)
class _Handle:
    path: str
    fd: int | None
    content: bytes | None
    identity: Identity
    prefix: bytes = b""  # served before the bytes of ``fd`` (the part10 setting)
    cached: bool = False  # read through the page cache (not direct I/O)


class DicomFS(mfusepy.Operations):  # type: ignore[misc]
    """mfusepy operations over a View; used with ``raw_fi=True`` (see ``open``)."""

    use_ns = True

    def __init__(
        self,
        view: View,
        *,
        on_init: Callable[[], None] | None = None,
        symlinks: bool = False,
        as_caller: bool = False,
        space_paths: tuple[str, ...] = (),
    ) -> None:
        self.view = view
        # statfs answers with the filesystems holding these (the sources).
        self.space_paths = space_paths
        # allow_other: sources are opened with the reader's credentials (caller.py).
        self.as_caller = as_caller
        # --symlinks: source files appear as symbolic links to their real
        # paths, so local readers that may see the sources read at native speed.
        self.symlinks = symlinks
        self._on_init = on_init
        self._handles: dict[int, _Handle] = {}
        self._dirs: dict[int, Listing | None] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._fuse_ptr: int | None = None
        # What the kernel may hold of each path, taken back when the index moves.
        self.held = Held(self._invalidate, self._resolve, view.generation)
        self.opening = Opening(view, self.held)

    # -- lifecycle ----------------------------------------------------------

    def init_with_config(self, conn: Any, config: Any) -> None:
        if config is not None:
            config.entry_timeout = ENTRY_TIMEOUT if self.as_caller else LONG_TIMEOUT
            config.attr_timeout = ATTR_TIMEOUT if self.as_caller else LONG_TIMEOUT
            config.negative_timeout = 0.0
            config.kernel_cache = 0
            config.auto_cache = 0
            config.use_ino = 1  # stable numbers from fsinfo.inode_of and file_inode
            config.direct_io = 0
        if conn is not None:
            # "auto" gives attributes only with the first chunk of a listing;
            # the rest would cost one lookup callback per entry.
            conn.want &= ~FUSE_CAP_READDIRPLUS_AUTO
            # read_buf hands libfuse our descriptor: let it splice the bytes
            # straight to the kernel instead of copying them through Python.
            conn.want |= conn.capable & (
                FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_CACHE_SYMLINKS
            )
            conn.max_readahead = min(conn.max_readahead, _MAX_READAHEAD) or _MAX_READAHEAD
        # The session pointer lets another thread end the loop (exit_loop).
        self._fuse_ptr = mfusepy._libfuse.fuse_get_context().contents.fuse
        self.held.start()
        if self._on_init is not None:
            try:
                self._on_init()
            except Exception:
                log.exception("on_init callback failed")

    def exit_loop(self) -> bool:
        """Ask libfuse to leave its loop (it then unmounts); False before init."""
        if self._fuse_ptr is None:
            return False
        mfusepy._libfuse.fuse_exit(ctypes.c_void_p(self._fuse_ptr))
        return True

    def destroy(self, path: str) -> None:
        self.held.stop()
        with self._lock:
            handles, self._handles = list(self._handles.values()), {}
        for handle in handles:
            if handle.fd is not None:
                with contextlib.suppress(OSError):
                    os.close(handle.fd)

    # -- what the kernel holds (held.py) ------------------------------------

    def stop_invalidating(self) -> None:
        """Stop ``held``'s thread; called before the mount is ended.

        libfuse frees the tables ``fuse_invalidate_path`` uses before it
        calls ``destroy``, so stopping the thread there was too late: an
        invalidation during an unmount crashed the daemon (SIGSEGV, seen
        after an index rebuild, when many paths are dropped at once).
        """
        self.held.stop()

    def _invalidate(self, path: str) -> None:
        ptr = self._fuse_ptr
        if ptr is not None and not session_exited(ptr):  # an unmount from outside
            invalidate_path(ptr, path)

    def _resolve(self, path: str) -> Shown | None:
        """What ``path`` shows now, for ``held``'s thread; None when it cannot say."""
        try:
            return shown(self.view.lookup(path))
        except Exception:
            return None

    # -- metadata -----------------------------------------------------------

    def _shown(self, node: Node) -> Node:
        """``node``, or ENOENT when it is a folder of patient data this reader may not see."""
        if not self._shown_entries([(node.name, node)]):
            raise mfusepy.FuseOSError(errno.ENOENT)
        return node

    def _shown_entries(self, listing: list[tuple[str, Node]]) -> list[tuple[str, Node]]:
        """``listing`` without the folders of patient data this reader may not see."""
        return shown_to(_caller, listing) if self.as_caller else listing

    @_guard
    def getattr(self, path: str, fh: Any = None) -> dict[str, int]:
        node = self.opening.attributes_of(path, self._shown(self.opening.lookup(path)))
        self.held.tell(path, shown(node))
        return attributes(node, self.symlinks, _inode(path, node))

    @_guard
    def opendir(self, path: str) -> int:
        if isinstance(self._shown(self.view.lookup(path)), FileNode):
            raise mfusepy.FuseOSError(errno.ENOTDIR)
        hid = next(self._ids)
        with self._lock:
            self._dirs[hid] = None
        return hid

    @_guard
    def readdir(self, path: str, fh: int, position: int = 0) -> tuple[int, list[Entry], int]:
        """(position, entries, plain mode) of one open folder from ``position`` to a page's end.

        ``fuse.listing`` keeps one page per open folder, so the kernel reads
        a folder of millions in chunks while the daemon holds a page; an
        entry added or removed meanwhile shows at most once (reliability.md
        G9). An entry is (name, struct stat), or (name, inode number) in a
        folder as big as the archive: those go without attributes, of the file
        type "plain mode", so that neither libfuse nor the kernel keeps a node
        per entry (``binding``). Called by ``binding.ListingFUSE.readdir_fuse_3``.
        """
        with self._lock:
            listing = self._dirs.get(fh)
            if listing is None:
                listing = Listing(functools.partial(self._pages, path))
                if fh in self._dirs:  # else not opened here: answered, not kept
                    self._dirs[fh] = listing
        return (*listing.window(position), self._plain_mode(path))

    def _pages(self, path: str) -> Iterator[list[Entry]]:
        # Both asked before the first page, so a folder that is gone fails at once.
        names = self.view.name_pages(path)
        entries = self.view.pages(path) if names is None else iter(())
        here = mfusepy.c_stat(st_mode=stat.S_IFDIR, st_ino=inode_of(path))
        up = mfusepy.c_stat(st_mode=stat.S_IFDIR, st_ino=inode_of(parent_path(path)))
        yield [(b".", here), (b"..", up)]
        by_sop = path.rstrip("/") == "/by-sop"
        for page, ids in names or ():  # by-sop/ and the like: names and inode numbers only
            inodes = file_inodes(ids) if by_sop else inodes_of(path, page)
            yield list(zip(page, inodes, strict=True))
        symlinks, attributes_of = self.symlinks, self.opening.attributes_of
        for nodes in entries:
            told = []
            for name, node in self._shown_entries(nodes):
                child = child_path(path, name)
                told.append((child, name, attributes_of(child, node)))
            self.held.tell_all([(child, shown(node)) for child, _, node in told])
            yield [
                (name.encode(), c_stat(node, symlinks, _inode(child, node)))
                for child, name, node in told
            ]

    def _plain_mode(self, path: str) -> int:
        """The file type of the entries of a names-only listing (their d_type)."""
        if path.rstrip("/") != "/by-sop":
            return stat.S_IFDIR
        if not self.symlinks:
            return stat.S_IFREG
        # With part10 a file served with a prefix stays a regular file: unknown (0) here.
        return 0 if self.view.part10 else stat.S_IFLNK

    @_guard
    def releasedir(self, path: str, fh: int) -> int:
        with self._lock:
            self._dirs.pop(fh, None)
        return 0

    @_guard
    def readlink(self, path: str) -> str:
        node = self.opening.lookup(path)
        if not isinstance(node, FileNode) or not is_link(node, self.symlinks):
            raise mfusepy.FuseOSError(errno.EINVAL)  # readlink(2) of a non-link
        assert node.real_path is not None
        self.held.tell(path, shown(node))  # the kernel keeps the target (CACHE_SYMLINKS)
        return node.real_path

    @_guard
    def statfs(self, path: str) -> dict[str, int]:
        return space(self.space_paths)

    # -- reading ------------------------------------------------------------

    @_guard
    def open(self, path: str, fi: Any) -> int:
        """Check the source against the index and keep its descriptor in a handle (C5, G3).

        Kernel FUSE passthrough (Linux >= 6.9 with libfuse >= 3.16; Debian
        12 has 3.14) would plug in here, and only here: the descriptor that
        ``opening.source`` opened and checked would be registered with the
        kernel (``fuse_passthrough_open``, ``fi->backing_id``), which would
        then read the source itself; ``read_buf`` would not be called for it.
        """
        flags = fi.flags
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & _WRITE_FLAGS:
            raise mfusepy.FuseOSError(errno.EROFS)
        node = self.opening.lookup(path)
        if isinstance(node, DirNode):
            raise mfusepy.FuseOSError(errno.EISDIR)
        if node.generated:
            if self.as_caller and node.render is not None:
                with acting_as(_caller()):
                    content = node.render(reveal_for(node))
            else:
                content = node.data()
            handle = _Handle(path, None, content, node.identity)
            fi.direct_io, fi.keep_cache = 1, 0
        else:
            as_reader = (lambda: acting_as(_caller())) if self.as_caller else contextlib.nullcontext
            node, fd = self.opening.source(path, node, as_reader)
            fi.direct_io, fi.keep_cache = self.opening.policy(path, node)
            # The disk starts on the first megabyte while the open is answered
            # and the READ comes back: +15 % on cold reads (BENCHMARKS.md).
            with contextlib.suppress(OSError):  # advice only
                os.posix_fadvise(fd, 0, _EARLY_READ, os.POSIX_FADV_WILLNEED)
            handle = _Handle(path, fd, None, node.identity, node.prefix, not fi.direct_io)
        hid = next(self._ids)
        with self._lock:
            self._handles[hid] = handle
        fi.fh = hid
        return 0

    def _source(self, fh: int) -> tuple[bytes | None, bytes, int]:
        """(content, prefix, descriptor) answering a read through handle ``fh``."""
        handle = self._handles.get(fh)
        if handle is None:
            raise mfusepy.FuseOSError(errno.EBADF)
        if handle.cached:  # these bytes go to the page cache of the path
            self.held.tell(handle.path, handle.identity)
        return handle.content, handle.prefix, -1 if handle.fd is None else handle.fd

    @_guard
    def read(self, path: str, size: int, offset: int, fi: Any) -> bytes:
        content, prefix, fd = self._source(fi.fh)
        if content is not None:
            return content[offset : offset + size]
        return read_range(prefix, fd, offset, size)

    @_guard
    def read_buf(self, path: str, bufpp: Any, size: int, offset: int, fi: Any) -> int:
        """Answer a read with a descriptor, not bytes: libfuse reads (or splices) it in C.

        This is what makes reading through the mount cost a callback per
        request instead of a Python copy of every byte (``reply``).
        """
        content, prefix, fd = self._source(fi.fh)
        parts = reply.segments(content, prefix, size, offset)
        try:
            vec_ptr = reply.reply_vector(parts, fd)
        except MemoryError:
            raise mfusepy.FuseOSError(errno.ENOMEM) from None
        bufpp[0] = ctypes.cast(vec_ptr, type(bufpp[0]))
        return 0

    @_guard
    def release(self, path: str, fi: Any) -> int:
        with self._lock:
            handle = self._handles.pop(fi.fh, None)
            if handle is None:
                return 0
        if handle.fd is not None:
            self.opening.closed(handle.path, handle.identity)
            os.close(handle.fd)
        return 0

    # -- everything that would write: EROFS (reliability.md F4) ----------------

    create = write = truncate = unlink = rename = mkdir = rmdir = _read_only
    chmod = chown = symlink = link = mknod = setxattr = removexattr = _read_only
    utimens = fallocate = _read_only
