"""What ``dicomfs ls`` and ``dicomfs cat`` print: the mount's answers without mounting it.

Both read the same :class:`~dicomfs.view.tree.View` the FUSE adapter serves,
so a listing or a file's bytes are exactly what the mount would show. Only
text formatting lives here (``ls -l`` lines with owner and group names).
"""

from __future__ import annotations

import grp
import pwd
import stat
import time

from dicomfs.view.nodes import DirNode, FileNode, IsADirectory, Node, read_source
from dicomfs.view.tree import View


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _long_line(name: str, node: Node) -> str:
    if isinstance(node, DirNode):
        mode, nlink, size = stat.S_IFDIR | node.mode, 2, 0
    else:
        mode, nlink, size = stat.S_IFREG | node.mode, 1, node.size
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(node.mtime_ns / 1e9))
    owner, group = _owner(node.uid), _group(node.gid)
    return f"{stat.filemode(mode)} {nlink} {owner} {group} {size:>10} {when} {name}"


def format_listing(view: View, path: str, long: bool) -> str:
    """What ``dicomfs ls [-l] PATH`` prints: like ls(1), one name per line (no final newline)."""
    node = view.lookup(path)
    entries = [(node.name, node)] if isinstance(node, FileNode) else view.listdir(path)
    lines = [_long_line(name, n) if long else name for name, n in entries]
    return "\n".join(lines)


def cat_bytes(view: View, path: str) -> bytes:
    """What ``dicomfs cat PATH`` prints: the bytes the mount would serve."""
    node = view.lookup(path)
    if isinstance(node, DirNode):
        raise IsADirectory("is a folder, not a file")
    if node.generated:
        return node.data()
    return read_source(node)
