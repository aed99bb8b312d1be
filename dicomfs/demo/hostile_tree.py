"""Hostile filesystem objects for the reliability suite: ``write_hostile_tree``.

FIFOs, a socket, a device node, symlinks inside and escaping the root and in
loops, a chmod-000 file, 40-level deep folders and non-UTF-8 names: things
a scanner must look at before it opens or follows them. They cannot live in
a tree that is copied around, so tests call this on a fresh folder and
``remove_hostile_tree`` afterwards.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path

from dicomfs.demo.builders import corpus_uid, write_bytes
from dicomfs.demo.images import ct_bytes

__all__ = ["DEEP_LEVELS", "HostileTree", "remove_hostile_tree", "write_hostile_tree"]

DEEP_LEVELS = 40


@dataclass(frozen=True)
class HostileTree:
    """What ``write_hostile_tree`` made; paths are relative to ``root`` (os.fsdecode'd).

    ``indexed`` must be indexed as instances with their ``uids``; ``absent``
    must never appear in the index (not opened, not followed, ignored);
    ``unreadable`` is the chmod-000 file (root reads it anyway). ``outside``
    holds files the escaping symlinks point at: never indexed from ``root``.
    ``skipped`` names objects this machine would not let us create.
    """

    root: Path
    outside: Path
    indexed: set[str]
    absent: set[str]
    unreadable: set[str]
    uids: dict[str, str]
    skipped: list[str] = field(default_factory=list)


def write_hostile_tree(root: Path, *, outside: Path | None = None, seed: int = 0) -> HostileTree:
    """Write FIFOs, a socket, a device, symlinks, a chmod-000 file, deep and odd names.

    ``outside`` (default: a sibling of ``root``) receives the targets of the
    symlinks that leave the root. Nothing here may block a scanner that
    looks before it opens: the FIFO has no writer.
    """
    outside = outside if outside is not None else root.parent / f"{root.name}-outside"
    root.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    raw_root = os.fsencode(root)
    study, series = corpus_uid(seed, "tree-study"), corpus_uid(seed, "tree-series")
    indexed: set[str] = set()
    absent: set[str] = set()
    uids: dict[str, str] = {}
    skipped: list[str] = []

    def dicom(relative: bytes, name: str, *, where: bytes = raw_root) -> str:
        uid = corpus_uid(seed, f"tree/{name}")
        write_bytes(where, relative, ct_bytes(uid, study_uid=study, series_uid=series))
        return uid

    def good(relative: bytes, name: str) -> None:
        rel = os.fsdecode(relative)
        uids[rel] = dicom(relative, name)
        indexed.add(rel)

    good(b"plain.dcm", "plain")
    deep = b"/".join(b"d%02d" % level for level in range(1, DEEP_LEVELS + 1))
    good(deep + b"/deep.dcm", "deep")
    good(b"latin1-caf\xe9.dcm", "latin1")
    good(b"invalid-utf8-\xff\xfe.dcm", "invalid-utf8")
    good(b"tab\tand\nnewline.dcm", "control-characters")

    for ignored in (b".hidden.dcm", b"incoming.dcm.part", b"incoming.dcm.tmp"):
        dicom(ignored, os.fsdecode(ignored))
        absent.add(os.fsdecode(ignored))

    os.mkfifo(raw_root + b"/pipe.dcm")  # opening it would block forever
    absent.add("pipe.dcm")
    sock_path = raw_root + b"/socket.dcm"
    if len(sock_path) < 100:  # sun_path holds 108 bytes
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(sock_path)
        absent.add("socket.dcm")
    else:
        skipped.append("socket.dcm (path too long for AF_UNIX)")
    try:
        os.mknod(raw_root + b"/null.dcm", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        absent.add("null.dcm")
    except OSError as exc:
        skipped.append(f"null.dcm ({exc.strerror})")

    outside_uid = dicom(b"escaped.dcm", "outside", where=os.fsencode(outside))
    dicom(b"folder/inside-escaped-folder.dcm", "outside-folder", where=os.fsencode(outside))
    links = {
        b"link-inside.dcm": b"plain.dcm",
        b"link-escape.dcm": os.fsencode(outside) + b"/escaped.dcm",
        b"link-escape-folder": os.fsencode(outside) + b"/folder",
        b"link-escape-relative.dcm": b"../" + os.fsencode(outside.name) + b"/escaped.dcm",
        b"loop-a.dcm": b"loop-b.dcm",
        b"loop-b.dcm": b"loop-a.dcm",
        b"loops/up": b"..",
        b"loops/self": b"self",
        b"dangling.dcm": b"nowhere.dcm",
    }
    for link, target in links.items():
        os.makedirs(os.path.dirname(raw_root + b"/" + link), exist_ok=True)
        os.symlink(target, raw_root + b"/" + link)
        absent.add(os.fsdecode(link))

    unreadable = "no-access.dcm"
    uids[unreadable] = dicom(unreadable.encode(), "no-access")
    os.chmod(raw_root + b"/" + unreadable.encode(), 0)
    uids["outside:escaped.dcm"] = outside_uid
    return HostileTree(
        root=root,
        outside=outside,
        indexed=indexed,
        absent=absent,
        unreadable={unreadable},
        uids=uids,
        skipped=skipped,
    )


def remove_hostile_tree(tree: HostileTree) -> None:
    """Undo the chmod 000 so the tree can be deleted by any user."""
    with contextlib.suppress(OSError):
        os.chmod(os.fsencode(tree.root) + b"/no-access.dcm", 0o644)
