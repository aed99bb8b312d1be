"""Source roots by name: index paths that mean the same file on every host (issue 17).

One NAS may be mounted at ``/mnt/nas`` on the ingest host and at
``/srv/archive`` on a planning server that mounts the same index. With a
root named on both (``[roots] nas = "/mnt/nas"`` on one, ``nas =
"/srv/archive"`` on the other, or ``DICOMFS_ROOTS=nas=/srv/archive``), the
index stores a file under it as ``nas:/2024/ct1.dcm``, and each host reads
that back as its own local path. A path under no root is stored as it is
(absolute), as it always was, so an index made without roots keeps working.

The mapping is the process's own (``configure``; the commands set it from
the configuration or the environment before opening an index) and is
applied where paths cross the index's edge: ``stored`` when the writer or a
query takes a local path, ``local`` for every path read back
(``rows.decode_path``). Within one root the mapping keeps byte order, so
path-range queries and the scan's sorted merge are unchanged. A source
folder may lie inside a root, or be one; a source that holds a root inside
it is refused (``check_sources``): its walk and its rows would not be in
the same order.

In a PostgreSQL index, which several hosts share, a path under no root is
stored with the name of the host that indexed it (``@planning1:/data/x``):
another host's ``/data`` is not this one's, so only the host that wrote such
a row reads it as a local path. The host's name is ``DICOMFS_HOST`` (the
``host`` setting), else its hostname; it must stay the same across restarts,
or the host's earlier rows become another host's (``dicomfs forget @old``
drops them, ``index.origins``). An SQLite index is one host's and keeps
plain paths.

A path of a root (or a host) this host has no mapping for is read back under
``UNMAPPED``, a folder of ``/proc`` where nobody can create anything: the
file is listed, and opening it fails as a vanished source would, so no
other file is ever served in its place. Devices differ between hosts (each
NFS client numbers its mounts), so a rooted file's device is not compared
when it is opened (``rows.file_row`` gives 0, ``Roots.own_device``); inode,
size, times are.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from dicomfs.errors import ConfigError

ENV = "DICOMFS_ROOTS"
HOST_ENV = "DICOMFS_HOST"
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
UNMAPPED = b"/proc/dicomfs-unmapped-root/"


class Roots:
    """Named source roots: local path <-> stored path (module docstring)."""

    def __init__(self, mapping: Mapping[str, str | Path], host: str | None = None) -> None:
        self.host = host_name(host)
        self.host_prefix = b"@" + self.host.encode()
        self.mapping: dict[str, str] = {}
        by_path: list[tuple[bytes, bytes]] = []
        for name, path in mapping.items():
            if not NAME.fullmatch(name):
                raise ConfigError(
                    f"root name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-'"
                )
            text = os.fspath(path)
            if not os.path.isabs(text):
                raise ConfigError(f"root {name}: {text!r} is not an absolute path")
            local = os.path.abspath(text).rstrip("/") or "/"
            if local == "/":
                raise ConfigError(f"root {name}: / cannot be a root, name a folder")
            self.mapping[name] = local
            by_path.append((os.fsencode(local), name.encode()))
        self._by_name = {name: path for path, name in by_path}
        # Longest first: a root inside another one takes its own files.
        self._by_path = sorted(by_path, key=lambda item: -len(item[0]))

    def __bool__(self) -> bool:
        return bool(self.mapping)

    def stored(self, local: bytes, *, shared: bool = False) -> bytes:
        """How the index stores the local path ``local`` (``os.fsencode`` bytes); ``shared``:
        an index other hosts write too, where a path under no root carries this host's name."""
        for path, name in self._by_path:
            if local.startswith(path) and local[len(path) : len(path) + 1] in (b"/", b""):
                return name + b":" + local[len(path) :]
        return self.host_prefix + b":" + local if shared else local

    def local(self, stored: bytes) -> bytes:
        """The local path of a path as stored; under ``UNMAPPED`` for a root or host not here."""
        if stored[:1] == b"/":
            return stored
        name, _, rest = stored.partition(b":")
        if name == self.host_prefix:
            return rest
        base = self._by_name.get(name)
        return UNMAPPED + name.lstrip(b"@") + rest if base is None else base + rest

    def own_device(self, stored: bytes) -> bool:
        """True when the device number stored with ``stored`` is this host's to compare: a
        plain path or one of this host's own (``@host:``); a root's may be another host's."""
        return stored[:1] == b"/" or stored.startswith(self.host_prefix + b":")

    def check_sources(self, sources: Sequence[str | Path]) -> None:
        """Refuse a source folder that holds a root strictly inside it (module docstring)."""
        for source in sources:
            folder = os.path.abspath(source).rstrip("/") or "/"
            for name, path in self.mapping.items():
                if path != folder and path.startswith(folder.rstrip("/") + "/"):
                    raise ConfigError(
                        f"the source {folder} holds the root {name} ({path}) inside it: "
                        f"make the root {folder} or a folder that holds it, or watch {path} "
                        "and the rest of the source apart"
                    )


def host_name(given: str | None = None) -> str:
    """This host's name in a shared index: ``given``, ``DICOMFS_HOST``, else the hostname.

    A name given is checked; the hostname is made a valid name instead (it only
    tags this host's rows), so no command fails on a host named oddly.
    """
    name = given or os.environ.get(HOST_ENV)
    if not name:
        hostname = socket.gethostname().split(".")[0]
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", hostname)[:64] or "localhost"
    if not NAME.fullmatch(name):
        raise ConfigError(
            f"host name {name!r} cannot name this host's rows: set {HOST_ENV} (or `host` in "
            "the configuration) to 1 to 64 letters, digits, '.', '_' or '-'"
        )
    return name


def parse(text: str) -> dict[str, str]:
    """``name=/path,other=/path`` (``DICOMFS_ROOTS``) as a mapping."""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, path = item.partition("=")
        if not sep:
            raise ConfigError(f"{ENV}: {item!r} is not name=/path")
        mapping[name.strip()] = path.strip()
    return mapping


_current: Roots | None = None


def configure(mapping: Mapping[str, str | Path], host: str | None = None) -> Roots:
    """Set this process's roots and host name (before any index is opened); returns them."""
    global _current
    _current = Roots(mapping, host)
    return _current


def current() -> Roots:
    """This process's roots: as configured, else from ``DICOMFS_ROOTS``, else none."""
    global _current
    if _current is None:
        _current = Roots(parse(os.environ.get(ENV, "")))
    return _current
