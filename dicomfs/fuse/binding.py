"""The libfuse glue under the adapter: library choice, reply buffers, listings, the loop.

Kept apart from ``fs.py`` (which maps view nodes to answers) because all of
it is about libfuse 3.14 and mfusepy 3.1.1 themselves, each piece measured
or read in their headers:

- ``FUSE_LIBRARY_NAME=fuse3`` before mfusepy is imported: mfusepy loads
  libfuse2 first when both are installed (reliability.md G6).
- ``struct fuse_bufvec``: mfusepy declares ``buf`` as a pointer where
  libfuse has an inline array, so the reply vector of ``read_buf`` is
  declared here, and allocated with malloc since libfuse frees it.
- READDIRPLUS: mfusepy passes fill flags 0, and libfuse sends ino=0 ("ignore
  these attributes") for entries it buffers itself, so ``ListingFUSE`` fills
  with offsets and FUSE_FILL_DIR_PLUS.
- Thread options: libfuse passes an unset ``max_idle_threads`` (UINT_MAX) to
  fuse_loop_cfg_set_idle_threads, which prints "Ignoring invalid max threads
  value 4294967295" at every mount, so both thread values are given.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")

import mfusepy  # must follow the environment setting above

log = logging.getLogger(__name__)

MAX_THREADS = 16  # FUSE worker threads; each holds its own index reader
MAX_IDLE_THREADS = 8  # idle workers kept for the next burst
FUSE_READDIR_PLUS = 1 << 0  # enum fuse_readdir_flags (fuse.h)
FUSE_FILL_DIR_PLUS = 1 << 1  # enum fuse_fill_dir_flags (fuse.h)
FUSE_CAP_READDIRPLUS_AUTO = 1 << 14  # fuse_common.h
FUSE_CAP_SPLICE_WRITE = 1 << 7  # reply data spliced from our descriptor to /dev/fuse
FUSE_CAP_SPLICE_MOVE = 1 << 8
FUSE_CAP_CACHE_SYMLINKS = 1 << 23  # the kernel keeps readlink answers (--symlinks)
FUSE_BUF_IS_FD = 1 << 1  # fuse_common.h, enum fuse_buf_flags
FUSE_BUF_FD_SEEK = 1 << 2


class FuseBuf(ctypes.Structure):
    """``struct fuse_buf`` of libfuse 3.14 (fuse_common.h)."""

    _fields_ = [
        ("size", ctypes.c_size_t),
        ("flags", ctypes.c_int),
        ("mem", ctypes.c_void_p),
        ("fd", ctypes.c_int),
        ("pos", ctypes.c_int64),
    ]


class FuseBufvec(ctypes.Structure):
    """``struct fuse_bufvec`` with its one inline ``buf[1]``.

    mfusepy declares ``buf`` as a pointer, which is not libfuse's layout, so
    the reply vector is declared here.
    """

    _fields_ = [
        ("count", ctypes.c_size_t),
        ("idx", ctypes.c_size_t),
        ("off", ctypes.c_size_t),
        ("buf", FuseBuf * 1),
    ]


libc = ctypes.CDLL(None, use_errno=True)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.restype = None
libc.free.argtypes = [ctypes.c_void_p]


_invalidate = mfusepy._libfuse.fuse_invalidate_path  # libfuse >= 3.1 (fuse.h)
_invalidate.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_invalidate.restype = ctypes.c_int


def invalidate_path(fuse_ptr: int, path: str) -> int:
    """Drop the kernel's attributes and cached pages of ``path``; 0 or -errno.

    -ENOENT when libfuse has no node for the path: the kernel holds nothing
    of it then. Must not be called while answering a request about the
    same file (libfuse: it could deadlock), so only ``held``'s thread calls it.
    """
    return int(_invalidate(fuse_ptr, path.encode("utf-8", "surrogateescape")))


_get_session = mfusepy._libfuse.fuse_get_session
_get_session.argtypes = [ctypes.c_void_p]
_get_session.restype = ctypes.c_void_p
_session_exited = mfusepy._libfuse.fuse_session_exited
_session_exited.argtypes = [ctypes.c_void_p]
_session_exited.restype = ctypes.c_int


def session_exited(fuse_ptr: int) -> bool:
    """Whether the loop of this session is ending: its tables are about to be freed.

    libfuse 3.14's ``fuse_destroy`` frees the node tables that
    ``fuse_invalidate_path`` walks, then calls the ``destroy`` operation: an
    invalidation racing the end of the loop crashed the daemon (SIGSEGV).
    """
    return bool(_session_exited(_get_session(fuse_ptr)))


# fuse_fill_dir_t (fuse.h): (buf, name, const struct stat *, off_t, enum fuse_fill_dir_flags).
_PlainFiller = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
)


class ListingFUSE(mfusepy.FUSE):  # type: ignore[misc]
    """mfusepy's FUSE with READDIRPLUS attributes passed through to the kernel."""

    def readdir_fuse_3(
        self, path: bytes | None, buf: Any, filler: Any, offset: int, fip: Any, flags: int
    ) -> int:
        # Offsets must be passed: libfuse 3.14 drops the attributes of
        # entries it buffers itself (offset 0), sending ino=0 to the kernel.
        decoded = "/" if path is None else path.decode(self.encoding, self.errors)
        fh = fip.contents.fh
        plus = FUSE_FILL_DIR_PLUS if flags & FUSE_READDIR_PLUS else 0
        plain = mfusepy.c_stat()  # copied by the filler: one for every names-only entry
        fill_plain = None
        try:
            while True:  # pages until the kernel's buffer is full or the folder ends
                start, entries, plain.st_mode = self.operations.readdir(decoded, fh, offset)
                if not entries:
                    return 0
                if type(entries[-1][1]) is int:  # names only: no node in libfuse or the kernel
                    if fill_plain is None:
                        # The filler with plain argument types: converting mfusepy's pointer
                        # and enum types per entry was a fifth of a by-sop listing (py-spy).
                        address = ctypes.cast(filler, ctypes.c_void_p).value or 0
                        fill_plain, plain_address = _PlainFiller(address), ctypes.addressof(plain)
                    for index, (name, ino) in enumerate(entries, start + 1):
                        plain.st_ino = ino  # the per-entry cost of a listing of millions
                        if fill_plain(buf, name, plain_address, index, 0):
                            return 0
                else:
                    for index, (name, st) in enumerate(entries, start + 1):
                        fill = 0 if name in (b".", b"..") else plus
                        if filler(buf, name, st, index, fill):
                            return 0
                offset = start + len(entries)
        except mfusepy.FuseOSError as exc:
            return -int(exc.errno)
        except Exception:
            log.exception("readdir failed")
            return -errno.EIO


def serve(
    operations: Any, mountpoint: Path, *, allow_other: bool = False, debug: bool = False
) -> None:
    """Mount and run the FUSE loop until unmounted; RuntimeError if libfuse fails.

    Mount options (reliability.md F3): ro, nosuid, nodev, default_permissions
    (the kernel checks the mirrored uid/gid/mode, F1), allow_other only on
    request. Multi-threaded; the View keeps one SQLite reader per thread.
    """
    options: dict[str, Any] = {
        "ro": True,
        "nosuid": True,
        "nodev": True,
        "default_permissions": True,
        "fsname": "dicomfs",
        "subtype": "dicomfs",
        # libfuse 3.14 passes an unset max_idle_threads (UINT_MAX) to
        # fuse_loop_cfg_set_idle_threads, which prints "Ignoring invalid max
        # threads value 4294967295" at every mount: give both values.
        "max_threads": MAX_THREADS,
        "max_idle_threads": MAX_IDLE_THREADS,
    }
    if allow_other:
        options["allow_other"] = True
    ListingFUSE(
        operations,
        str(mountpoint),
        raw_fi=True,
        foreground=True,
        nothreads=False,
        debug=debug,
        **options,
    )
