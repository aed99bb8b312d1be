"""Where an index's files come from, and dropping the rows of one origin (``dicomfs forget``).

Every stored path begins with its origin (``roots``): ``@planning1:/data/x``
is a folder of host planning1 in a shared index, ``nas:/2024/x`` a named
root any host may map, and a plain ``/data/x`` a local path of an SQLite
index. A host reconciles only its own sources, so rows nobody reconciles
stay for good: those of a host that was retired or renamed (every mount
lists its files, none can open them), and those of a folder that is no
longer a source. ``origins`` counts the rows of each origin for ``dicomfs
hosts``; ``Target`` turns what a user names (``@planning1``, ``nas``,
``nas:/2019``, ``/data/old-export``) into the stored-path range whose rows
``dicomfs forget`` removes, a page at a time, through the writer's own
removal (a duplicate elsewhere then serves its UID).

Names are compared as bytes: ``:`` ends a name and ``;`` is the next byte,
so ``[name:, name;)`` holds exactly one origin's paths in the path index's
order, and a plain path (``/``) sorts apart from them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dicomfs.errors import ConfigError
from dicomfs.index import roots
from dicomfs.index.reader import IndexReader

LOCAL = ""  # the origin of plain paths, stored as they are


@dataclass(frozen=True, slots=True)
class Origin:
    """One origin of stored paths, with its number of files (``files`` rows)."""

    name: str  # "@host", a root's name, or LOCAL
    files: int
    here: str | None  # where this host reads them, or None when it cannot

    @property
    def readable(self) -> bool:
        return self.here is not None


def origins(reader: IndexReader) -> list[Origin]:
    """Each origin of the index's paths, in stored order: one seek and one count per origin
    on the path index, not a scan of every row."""
    mapping = roots.current()
    found: list[Origin] = []
    low = b""
    first_at = "SELECT path FROM files WHERE path >= ? ORDER BY path LIMIT 1"
    while rows := reader.rows(first_at, (low,)):
        first = bytes(rows[0][0])
        name = LOCAL if first[:1] == b"/" else os.fsdecode(first.partition(b":")[0])
        whole = Target.origin(name)
        found.append(Origin(name, whole.count(reader), _where(name, mapping)))
        low = whole.high
    return found


def _where(name: str, mapping: roots.Roots) -> str | None:
    if name == LOCAL:
        return "this host's own paths"
    if name.startswith("@"):
        return "this host's own folders" if name[1:] == mapping.host else None
    return mapping.mapping.get(name)


@dataclass(frozen=True, slots=True)
class Target:
    """The stored paths a ``dicomfs forget`` names: one path, and everything under it."""

    exact: bytes | None  # the path itself (a file), or None for a whole origin
    low: bytes
    high: bytes

    @classmethod
    def parse(cls, text: str, *, shared: bool) -> Target:
        """``@host`` or ``root`` (a whole origin), ``@host:/path`` or ``root:/path`` (a folder
        or file of one), or a local path (``/...``, ``./...``), stored as this host stores it
        (``roots``). A bare word is a root's name, never a folder of the working directory."""
        name, colon, rest = text.partition(":")
        if text.startswith(("/", ".")):
            local = os.path.abspath(text)
            return cls._under(roots.current().stored(os.fsencode(local), shared=shared))
        plain = name[1:] if name.startswith("@") else name
        if not roots.NAME.fullmatch(plain):
            raise ConfigError(
                f"{text!r} names no origin: give a folder (/data/old, ./old), a host (@planning1), "
                "a root (nas) or a folder of one (nas:/2019); `dicomfs hosts` lists them"
            )
        if not colon:
            return cls.origin(name)
        if not rest.startswith("/"):
            raise ConfigError(f"{text!r}: the path after '{name}:' must start with /")
        return cls._under(f"{name}:{os.path.normpath(rest)}".encode())

    @classmethod
    def origin(cls, name: str) -> Target:
        """Every path of the origin ``name`` (``@host``, a root's name, or LOCAL)."""
        if name == LOCAL:
            return cls(None, b"/", b"0")  # "0" is the byte after "/"
        raw = name.encode()
        return cls(None, raw + b":", raw + b";")

    @classmethod
    def _under(cls, stored: bytes) -> Target:
        if stored.endswith(b"/"):  # "/" itself, or a root's or host's "/": all its paths
            return cls(None, stored, stored[:-1] + b"0")
        return cls(stored, stored + b"/", stored + b"0")

    def where(self) -> tuple[str, tuple[bytes, ...]]:
        """The WHERE clause (on ``files.path``) of the paths named, and its parameters."""
        if self.exact is None:
            return "path >= ? AND path < ?", (self.low, self.high)
        return "(path = ? OR (path >= ? AND path < ?))", (self.exact, self.low, self.high)

    def count(self, reader: IndexReader) -> int:
        where, params = self.where()
        return int(reader.rows(f"SELECT count(*) FROM files WHERE {where}", params)[0][0])

    def first_paths(self, reader: IndexReader, page: int) -> list[bytes]:
        """The first ``page`` stored paths named: the next page to remove."""
        where, params = self.where()
        rows = reader.rows(
            f"SELECT path FROM files WHERE {where} ORDER BY path LIMIT {int(page)}", params
        )
        return [bytes(row[0]) for row in rows]
