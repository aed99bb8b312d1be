"""The smallest FUSE filesystem in the same stack: one folder passed through, for a baseline.

    python bench/passthrough.py MOUNTPOINT SOURCE_FOLDER [--no-open]

What a round trip through libfuse 3 and mfusepy costs without dicomfs in
it: lookups are one ``lstat``, opens one ``open`` with the page cache kept,
reads are answered with the descriptor (``read_buf``, as dicomfs does), and
entries and attributes live an hour. ``--no-open`` answers the first open
with ENOSYS, so the kernel stops sending OPEN and RELEASE (libfuse 3
no-open); reads then come by path and open the source each time. No
checks, no index: what is left of a dicomfs figure above this one is
dicomfs's own work (``mount_bench.py`` runs both in one run).
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import resource
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")  # dicomfs/fuse/binding.py says why

import mfusepy

from dicomfs.fuse import reply

HOUR = 3600.0


class Passthrough(mfusepy.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, source: str, no_open: bool) -> None:
        self.source = os.path.abspath(source)
        self.no_open = no_open
        self.fds: dict[str, int] = {}  # no-open: one descriptor per file, never closed

    def init_with_config(self, conn: Any, config: Any) -> None:
        config.entry_timeout = config.attr_timeout = HOUR
        config.negative_timeout = 0.0

    def _real(self, path: str) -> str:
        return self.source + path

    def getattr(self, path: str, fh: Any = None) -> dict[str, int]:
        try:
            st = os.lstat(self._real(path))
        except OSError as exc:
            raise mfusepy.FuseOSError(exc.errno) from None
        return {
            "st_mode": st.st_mode,
            "st_nlink": st.st_nlink,
            "st_size": st.st_size,
            "st_uid": st.st_uid,
            "st_gid": st.st_gid,
            "st_mtime": st.st_mtime_ns,
            "st_ctime": st.st_ctime_ns,
            "st_atime": st.st_atime_ns,
        }

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._real(path))]

    def open(self, path: str, fi: Any) -> int:
        if self.no_open:
            raise mfusepy.FuseOSError(errno.ENOSYS)
        fi.fh = os.open(self._real(path), os.O_RDONLY)
        fi.keep_cache = 1
        return 0

    def read_buf(self, path: str, bufpp: Any, size: int, offset: int, fi: Any) -> int:
        fd = fi.fh
        if not fd:  # no-open: libfuse splices after this returns, so it stays open
            fd = self.fds.get(path) or self.fds.setdefault(path, os.open(self._real(path), 0))
        vec = reply.reply_vector([(size, offset)], fd)
        bufpp[0] = ctypes.cast(vec, type(bufpp[0]))
        return 0

    def release(self, path: str, fi: Any) -> int:
        os.close(fi.fh)
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mountpoint")
    parser.add_argument("source")
    parser.add_argument("--no-open", action="store_true")
    args = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    mfusepy.FUSE(
        Passthrough(args.source, args.no_open),
        args.mountpoint,
        raw_fi=True,
        foreground=True,
        nothreads=False,
        ro=True,
        max_threads=16,
        max_idle_threads=8,
    )


if __name__ == "__main__":
    main()
