"""View nodes as the attributes the kernel is given: a stat dict, or a ready ``struct stat``.

Apart from ``fs.py`` because listings need them too, a page at a time
(``fs.DicomFS._pages``). With ``symlinks`` (``--symlinks``) a source file is
shown as a link to its source, except one served with a prefix (the part10
setting): a link cannot add bytes.
"""

from __future__ import annotations

import os
import stat
from typing import Any

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")  # binding.py says why

import mfusepy  # must follow the environment setting above

from dicomfs.view.nodes import DirNode, FileNode, Node


def is_link(node: FileNode, symlinks: bool) -> bool:
    """With ``symlinks`` a source file is a link to it; one served with a prefix cannot be."""
    return symlinks and node.real_path is not None and not node.prefix


def kind(node: Node, symlinks: bool) -> tuple[int, int, int]:
    """(st_mode, st_nlink, st_size); with ``symlinks`` a source file is a link to it."""
    if isinstance(node, DirNode):
        return stat.S_IFDIR | node.mode, 2, 0
    if is_link(node, symlinks) and node.real_path is not None:
        return stat.S_IFLNK | 0o777, 1, len(os.fsencode(node.real_path))
    return stat.S_IFREG | node.mode, 1, node.size


def attributes(node: Node, symlinks: bool = False, ino: int = 0) -> dict[str, int]:
    """The stat dict mfusepy copies into ``struct stat`` (times in ns, use_ns)."""
    mode, nlink, size = kind(node, symlinks)
    return {
        "st_ino": ino,
        "st_mode": mode,
        "st_nlink": nlink,
        "st_size": size,
        "st_blocks": (size + 511) // 512,
        "st_uid": node.uid,
        "st_gid": node.gid,
        "st_mtime": node.mtime_ns,
        "st_ctime": node.mtime_ns,
        "st_atime": node.mtime_ns,
    }


def c_stat(node: Node, symlinks: bool, ino: int) -> Any:
    """``attributes`` as a ready struct for readdir: a thousand entries per listing."""
    mode, nlink, size = kind(node, symlinks)
    spec = mfusepy.c_timespec(*divmod(node.mtime_ns, 1_000_000_000))
    return mfusepy.c_stat(
        st_ino=ino,
        st_mode=mode,
        st_nlink=nlink,
        st_size=size,
        st_blocks=(size + 511) // 512,
        st_uid=node.uid,
        st_gid=node.gid,
        st_atimespec=spec,
        st_mtimespec=spec,
        st_ctimespec=spec,
    )
