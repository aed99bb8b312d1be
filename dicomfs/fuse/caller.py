"""Open a source as the reader who asked, so the kernel decides what they may read.

The daemon reads sources with its own rights (root, or a service user that
may read every source). Mirroring owner, group and mode into the mount lets
the kernel check those (``default_permissions``), but not POSIX ACLs, nor the
search permission of the folders above a file: a reader could get bytes
through the mount that the source itself refuses them (reliability.md F1,
F2). Re-implementing those rules would be wrong in corner cases, so the open
of a source is done with the reader's filesystem credentials instead: for
that one system call this thread's fsuid, fsgid and supplementary groups
are the reader's (from the FUSE request context), and the kernel applies
every rule it would apply to the reader, ACLs and folder permissions
included.

Credentials are per thread in the kernel, but glibc's ``setgroups`` changes
every thread of the process (it broadcasts, as POSIX requires), so the raw
system calls are used: ``setfsuid``, ``setfsgid`` and ``setgroups`` on this
thread only (setfsuid(2), setgroups(2) NOTES, nptl(7)). Switching needs
CAP_SETUID and CAP_SETGID; a daemon without them cannot check as the reader,
which ``can_switch`` tells, and then must not let other users in
(``allow_other``).

The same switch answers what a reader may *see*: a folder of ``patients/``
is named after patient data, and is shown only to a reader who may open the
file it stands for (``readable_by``, ``shown_to``; issue 10). The FUSE
adapter and the WebDAV share both ask here, so the rule is one rule.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from dicomfs.view.nodes import DirNode, FileNode, Node
from dicomfs.view.report import Reveal

log = logging.getLogger(__name__)

# System call numbers of the per-thread credential calls (asm/unistd.h).
_SYSCALLS = {
    "x86_64": {"setgroups": 116, "setfsuid": 122, "setfsgid": 123},
    "aarch64": {"setgroups": 159, "setfsuid": 151, "setfsgid": 152},
}
_MAX_GROUPS = 65536  # NGROUPS_MAX on Linux
# A reader's groups are read from /proc once per this many seconds per
# process (the attribute timeout of the mount is of the same order); a
# process that changes its groups needs privilege, and is seen again soon.
GROUPS_TTL = 1.0
_GROUPS_CACHE_MAX = 4096
_CAP_SETGID = 6  # linux/capability.h
_CAP_SETUID = 7

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: the filesystem uid, gid and supplementary groups of a request."""

    uid: int
    gid: int
    groups: tuple[int, ...]


@functools.cache
def _numbers() -> dict[str, int]:
    machine = platform.machine()
    if machine not in _SYSCALLS:
        raise OSError(f"switching credentials per thread is not supported on {machine}")
    return _SYSCALLS[machine]


@functools.cache
def _own() -> Caller:
    """The daemon's own credentials, restored after every switch (they never change)."""
    return Caller(os.geteuid(), os.getegid(), tuple(os.getgroups()))


def _has_capabilities() -> bool:
    """CAP_SETUID and CAP_SETGID in the effective set (``CapEff`` in /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                effective = int(line.split()[1], 16)
                return bool(effective >> _CAP_SETUID & 1 and effective >> _CAP_SETGID & 1)
    return False


def can_switch() -> bool:
    """Whether this process may take a reader's credentials (root, or the two capabilities)."""
    try:
        _numbers()
    except OSError:
        return False
    return _has_capabilities()


def _set_groups(groups: tuple[int, ...]) -> None:
    array = (ctypes.c_uint32 * max(1, len(groups)))(*groups)
    if _libc.syscall(_numbers()["setgroups"], len(groups), array) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setgroups: {os.strerror(err)}")


def _set_fs_ids(uid: int, gid: int) -> None:
    """setfsgid then setfsuid; each returns the previous id, so success is checked by asking."""
    numbers = _numbers()
    _libc.syscall(numbers["setfsgid"], gid)
    _libc.syscall(numbers["setfsuid"], uid)
    # A call with an invalid id (-1) changes nothing and returns the current one.
    now = (_libc.syscall(numbers["setfsuid"], -1), _libc.syscall(numbers["setfsgid"], -1))
    if now != (uid, gid):
        raise PermissionError("could not take the reader's filesystem credentials")


@contextlib.contextmanager
def acting_as(caller: Caller) -> Iterator[None]:
    """Run the block with this thread's filesystem credentials set to ``caller``'s.

    The daemon's own credentials are restored afterwards whatever happens; if
    that fails the thread cannot be trusted any more, so the process stops.
    """
    own = _own()
    if caller == own:
        yield
        return
    try:
        _set_groups(caller.groups)
        _set_fs_ids(caller.uid, caller.gid)
        yield
    finally:
        try:
            _set_fs_ids(own.uid, own.gid)
            _set_groups(own.groups)
        except OSError:
            log.critical("could not restore the daemon's credentials; stopping")
            os._exit(70)  # EX_SOFTWARE: never serve another request with a reader's rights


_groups_lock = threading.Lock()
_groups_seen: dict[tuple[int, int, int], tuple[float, tuple[int, ...]]] = {}


def groups_of(pid: int, uid: int, gid: int) -> tuple[int, ...]:
    """The supplementary groups of the process ``pid`` running as ``uid``/``gid``.

    Read from /proc at most once per GROUPS_TTL for the same (pid, uid, gid):
    the read costs more than the rest of the switch (bench/access_bench.py).
    """
    key, now = (pid, uid, gid), time.monotonic()
    with _groups_lock:
        hit = _groups_seen.get(key)
    if hit is not None and now - hit[0] < GROUPS_TTL:
        return hit[1]
    groups = _read_groups(pid)
    with _groups_lock:
        if len(_groups_seen) >= _GROUPS_CACHE_MAX:
            _groups_seen.clear()  # forgetting costs one more read each
        _groups_seen[key] = (now, groups)
    return groups


def _read_groups(pid: int) -> tuple[int, ...]:
    """``Groups:`` of /proc/PID/status (libfuse's fuse_getgroups reads the same line)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Groups:"):
                return tuple(int(g) for g in line.split()[1:][:_MAX_GROUPS])
    raise ProcessLookupError(pid)


def listable_by_this_thread() -> Callable[[str], bool]:
    """``reveal`` for a generated file: may this thread's credentials list the path's folder?

    Called inside ``acting_as(reader)``. Who can list a file's folder can walk
    every folder above it, so the path tells them nothing they could not see
    themselves (reliability.md I3). One answer per folder per rendering; the
    FUSE adapter and the WebDAV share ask the same question.
    """
    answers: dict[str, bool] = {}

    def reveal(path: str) -> bool:
        folder = os.path.dirname(path)
        if folder not in answers:
            try:
                os.close(os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
                answers[folder] = True
            except OSError:
                answers[folder] = False
        return answers[folder]

    return reveal


# Read-only, and nothing an open could trip over: a symlink swapped in for the
# file is refused (O_NOFOLLOW), a FIFO does not block (O_NONBLOCK).
_PROBE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


def readable_by_this_thread(path: str) -> bool:
    """May this thread's credentials open ``path`` for reading? Asked of the kernel.

    Called inside ``acting_as(reader)``: the open is refused exactly as the
    reader's own would be, ACLs and closed folders included. ``os.access`` is
    not used: it checks the real ids, and glibc may emulate its AT_EACCESS
    mode from the effective ids, never from this thread's fsuid and groups.
    """
    try:
        fd = os.open(path, _PROBE_FLAGS)
    except OSError:
        return False
    os.close(fd)
    return True


def readable_by(caller: Caller, paths: Iterable[str]) -> dict[str, bool]:
    """{path: may ``caller`` read it} for every path, all checked under one switch.

    The one answer to "may this reader see a folder of patients/" (a folder
    shows patient data, so it is shown only to who may read the file it
    stands for: ``DirNode.witness``); the FUSE adapter and the WebDAV share
    both ask it. One open per distinct path; nothing is remembered, as the
    answer belongs to one reader at one moment.
    """
    wanted = dict.fromkeys(paths)
    if not wanted:
        return {}
    with acting_as(caller):
        return {path: readable_by_this_thread(path) for path in wanted}


def shown_to(
    caller: Callable[[], Caller], entries: Sequence[tuple[str, Node]]
) -> list[tuple[str, Node]]:
    """``entries`` without the folders whose witness the reader may not read.

    ``caller`` is asked only when some entry has a witness: elsewhere in the
    tree a listing costs nothing more.
    """
    witnesses = [n.witness for _, n in entries if isinstance(n, DirNode) and n.witness is not None]
    if not witnesses:
        return list(entries)
    readable = readable_by(caller(), witnesses)
    return [
        (name, node)
        for name, node in entries
        if not isinstance(node, DirNode) or node.witness is None or readable[node.witness]
    ]


def reveal_for(node: FileNode) -> Reveal:
    """The question a generated file's ``render`` asks for this thread's reader.

    Called inside ``acting_as(reader)``: "may they read this file" for files
    that show what was read from sources (``FileNode.reveal_files``), else
    "may they list its folder" for files that show paths.
    """
    return readable_by_this_thread if node.reveal_files else listable_by_this_thread()
