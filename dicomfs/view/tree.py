"""The virtual tree of the mount: path in, node or listing out (design.md, "The mount").

Pure: no FUSE, no errno. The FUSE adapter (``fuse.fs``), ``dicomfs ls`` and
``dicomfs cat`` (``listing``) all answer from here, so the tree is tested
with plain calls. The nodes it returns and its errors are ``nodes``'.

Names are built only from UIDs that pass ``records.is_safe_uid``; a path
component is checked against a narrow name grammar before any query runs, so
``..``, ``/``, NUL or over-long input can never reach the index. An instance
whose SOP Instance UID is unsafe is listed only under ``by-sop/`` as
``invalid-uid-<first 16 hex digits of sha256(uid)>.dcm`` (see
``synthetic_name``); series and studies with unsafe UIDs get no folder.
UIDs with leading-zero components ("1.2.03", seen in the wild) are unsafe by
the grammar: such instances are reachable only through their synthetic
by-sop name and stay listed, with their raw UID, in manifest.json.

Caching: building a plan package costs many queries, and the kernel asks for
attributes of every entry. Packages, folder listings and generated files are
cached for ``cache_ttl`` seconds (default 1 s, 0 turns caching off). Single
lookups (``by-sop/<uid>.dcm``, a plan or series folder) always query, so a
file indexed a moment after a failed lookup is visible at once, and nothing
cached is older than the TTL.

While the index is being rebuilt from the sources (reliability.md E6) it is
empty, then partial: answering from it would list folders as if their files
were gone. Every path that needs the index then raises ``Rebuilding``
(EAGAIN through FUSE) and ``.dicomfs/status.json`` says ``"rebuilding":
true``; the root and the top folders stay, so the status can be found.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dicomfs import __version__
from dicomfs.dicom.records import is_safe_uid
from dicomfs.errors import UnknownUidError
from dicomfs.index import IndexReader, InstanceRow, ListingRow, RejectedRow, graph
from dicomfs.view.cache import TTLCache
from dicomfs.view.names import SYNTHETIC_PREFIX, member_name, named, synthetic_name
from dicomfs.view.nodes import (
    DirNode,
    FileNode,
    IsADirectory,
    Node,
    NotADirectory,
    NotFound,
    Rebuilding,
    SourceChanged,
    open_source,
)
from dicomfs.view.report import (
    PLAN_FOLDERS,
    Reveal,
    format_manifest,
    format_missing,
    format_rejected,
)

log = logging.getLogger(__name__)

GENERATED_MODE = 0o440
# How often a thread's reader checks that the index file is still the one it
# opened (deleted, replaced or rebuilt: reopen, never answer from the old file).
READER_CHECK_INTERVAL = 1.0
_MAX_PATH = 4096
_NAME = re.compile(r"[A-Za-z0-9._-]{1,255}")
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_TOP = ("by-sop", "by-series", "by-study", "plans", "objects", ".dicomfs")
_OBJECT_FOLDERS = ("references", "referenced-by")


# -- names -----------------------------------------------------------------


def _uid_of(name: str) -> str | None:
    uid = name[:-4] if name.endswith(".dcm") else None
    return uid if uid is not None and is_safe_uid(uid) else None


def _split(path: str) -> list[str]:
    """Path components, each a safe name; anything else is NotFound before any query."""
    if not isinstance(path, str) or len(path) > _MAX_PATH:
        raise NotFound("no such file or folder")
    parts = [p for p in path.split("/") if p]
    for part in parts:
        if part in (".", "..") or _NAME.fullmatch(part) is None:
            raise NotFound("no such file or folder")
    return parts


# -- the tree -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _PackageView:
    folders: dict[str, dict[str, InstanceRow]]
    missing_txt: bytes
    manifest_json: bytes
    package: graph.Package  # to render manifest.json for one reader


class View:
    """Resolves mount paths to nodes from the index.

    ``reader_factory`` is called once per OS thread: FUSE worker threads are
    foreign to Python, so ``threading.local`` would be reset on every
    callback; readers are kept per ``threading.get_ident()`` instead, and an
    sqlite3 connection is never used by two threads at once (reliability.md E2).
    """

    def __init__(
        self,
        reader_factory: Callable[[], IndexReader],
        *,
        dir_uid: int,
        dir_gid: int,
        dir_mode: int = 0o750,
        mount_time_ns: int,
        cache_ttl: float = 1.0,
        cache_size: int = 256,
        extra_status: Callable[[], Mapping[str, Any]] | None = None,
        on_source_changed: Callable[[str], None] | None = None,
    ) -> None:
        self._factory = reader_factory
        self._readers: dict[int, IndexReader] = {}
        self._checked: dict[int, float] = {}
        self._rebuilding: dict[int, bool] = {}  # per thread: is its reader's index being rebuilt
        self._origin: tuple[int, int] | None = None  # (dev, inode) of the first index file read
        self._lock = threading.Lock()
        self.dir_uid, self.dir_gid, self.dir_mode = dir_uid, dir_gid, dir_mode & 0o7777
        self.mount_time_ns = mount_time_ns
        self._cache = TTLCache(cache_ttl, cache_size)
        self._extra_status = extra_status
        self._on_source_changed = on_source_changed

    @property
    def reader(self) -> IndexReader:
        """This thread's reader of a complete index; ``Rebuilding`` while it is rebuilt."""
        reader, rebuilding = self._thread_reader()
        if rebuilding:
            raise Rebuilding("the index is being rebuilt from the source folders: try again")
        return reader

    def _thread_reader(self) -> tuple[IndexReader, bool]:
        """This thread's reader, reopened when the index file changed, and its rebuild state.

        Whether the index is complete is read when the reader opens, and on
        every call while it is not (a meta lookup; the mount has nothing else
        to do then), so every thread answers again as soon as the rebuild
        commits. A rebuild mark, once cleared, never comes back in the same
        file (``index.reader.REBUILDING``), so a reader never answers from a
        half-built index.
        """
        ident = threading.get_ident()
        reader = self._readers.get(ident)
        now = time.monotonic()
        if reader is not None and now - self._checked.get(ident, now) >= READER_CHECK_INTERVAL:
            self._checked[ident] = now
            if not reader.is_current():  # reliability.md E6
                log.warning("the index file %s changed: reopening it", reader.path)
                with self._lock:
                    self._readers.pop(ident, None)
                reader.close()
                reader = None
        if reader is None:
            reader = self._factory()
            try:
                self._rebuilding[ident] = self._incomplete(reader)
            except BaseException:
                reader.close()
                raise
            with self._lock:
                self._readers[ident] = reader
            self._checked[ident] = now
        elif self._rebuilding.get(ident):
            self._rebuilding[ident] = self._incomplete(reader)
        return reader, self._rebuilding[ident]

    def _incomplete(self, reader: IndexReader) -> bool:
        """The index is being rebuilt, or an empty one replaced the index this view began with.

        A first index fills while its first scan runs, and the mount shows it
        filling (README). An empty index found at the path later, one no scan
        ever completed into (a new index moved there by hand, ``dicomfs
        index`` started over), would list nothing where files were listed a
        moment before; ``serve`` rebuilds such a replacement anyway.
        """
        if reader.rebuilding_since() is not None:
            return True
        with self._lock:
            if self._origin is None:
                self._origin = reader.identity
            origin = self._origin
        if reader.identity == origin:
            return False
        return reader.meta("last_scan") is None and reader.is_empty()

    def close(self) -> None:
        with self._lock:
            readers, self._readers = list(self._readers.values()), {}
        for reader in readers:
            reader.close()

    # -- public API ---------------------------------------------------------

    def lookup(self, path: str) -> Node:
        """The node at ``path`` (relative to the mount root; a leading "/" is fine)."""
        parts = _split(path)
        try:
            return self._resolve(parts)
        except NotFound:
            pass
        # Only on a miss: is some prefix a file? Then the answer is ENOTDIR.
        for end in range(min(len(parts) - 1, 4), 0, -1):
            try:
                node = self._resolve(parts[:end])
            except NotFound:
                continue
            if isinstance(node, FileNode):
                raise NotADirectory("not a folder") from None
            break
        raise NotFound("no such file or folder")

    def listdir(self, path: str) -> list[tuple[str, Node]]:
        """(name, node) of every entry of the folder at ``path``, sorted by name."""
        parts = _split(path)
        node = self.lookup(path)
        if isinstance(node, FileNode):
            raise NotADirectory("not a folder")
        key = ("list", *parts)
        return self._cache.get(key, lambda: sorted(self._list(parts), key=lambda e: e[0]))

    def read_virtual(self, node: FileNode) -> bytes:
        if node.content is None:
            raise IsADirectory(f"{node.name} is a source file, not a generated one")
        return node.content

    def open_file(self, node: FileNode) -> int:
        """``open_source`` that also reports a changed source for re-indexing."""
        try:
            return open_source(node)
        except SourceChanged as exc:
            log.warning("refusing to serve %s: %s", node.name, exc)
            if self._on_source_changed is not None and node.real_path is not None:
                self._on_source_changed(node.real_path)
            raise

    # -- nodes --------------------------------------------------------------

    def _dir(self, name: str) -> DirNode:
        return DirNode(name, self.dir_uid, self.dir_gid, self.dir_mode, self.mount_time_ns)

    def _generated(
        self, name: str, content: bytes, render: Callable[[Reveal], bytes] | None = None
    ) -> FileNode:
        return FileNode(
            name, None, len(content), self.mount_time_ns, self.dir_uid, self.dir_gid,
            GENERATED_MODE, 0, 0, content, render=render,
        )  # fmt: skip

    @staticmethod
    def _file(name: str, inst: InstanceRow | ListingRow) -> FileNode:
        f = inst.file
        mode = stat.S_IMODE(f.mode) & 0o555  # write and set-id bits never pass
        return FileNode(
            name, f.path, f.size, f.mtime_ns, f.uid, f.gid, mode, f.inode, f.dev,
            indexed_at=f.indexed_at, ctime_ns=f.ctime_ns,
        )  # fmt: skip

    # -- resolution ---------------------------------------------------------

    def _resolve(self, parts: list[str]) -> Node:
        if not parts:
            return self._dir("")
        top, rest = parts[0], parts[1:]
        if top not in _TOP:
            raise NotFound(top)
        if not rest:
            return self._dir(top)
        handler = {
            "by-sop": self._by_sop,
            "by-series": self._by_series,
            "by-study": self._by_study,
            "plans": self._plans,
            "objects": self._objects,
            ".dicomfs": self._meta,
        }[top]
        return handler(rest)

    def _instance(self, uid: str | None) -> InstanceRow:
        inst = self.reader.instance(uid) if uid is not None and is_safe_uid(uid) else None
        if inst is None or not named(inst):
            raise NotFound(str(uid))
        return inst

    def _by_sop(self, rest: list[str]) -> Node:
        if len(rest) != 1:
            raise NotFound("/".join(rest))
        name = rest[0]
        if name.startswith(SYNTHETIC_PREFIX):
            for listed, node in self._sop_listing():  # rare: only unsafe UIDs get these
                if listed == name:
                    return node
            raise NotFound(name)
        return self._file(name, self._instance(name if is_safe_uid(name) else _uid_of(name)))

    def _by_series(self, rest: list[str]) -> Node:
        series = rest[0]
        if len(rest) == 1:
            if is_safe_uid(series) and self.reader.series_exists(series):
                return self._dir(series)
        elif len(rest) == 2:
            inst = self._instance(_uid_of(rest[1]))
            if inst.series_uid == series:
                return self._file(rest[1], inst)
        raise NotFound("/".join(rest))

    def _by_study(self, rest: list[str]) -> Node:
        study = rest[0]
        if not is_safe_uid(study):
            raise NotFound(study)
        if len(rest) == 1:
            if self.reader.study_series_uids(study):
                return self._dir(study)
        elif len(rest) == 2:
            if is_safe_uid(rest[1]) and self.reader.series_exists(rest[1], study):
                return self._dir(rest[1])
        elif len(rest) == 3:
            inst = self._instance(_uid_of(rest[2]))
            if inst.study_uid == study and inst.series_uid == rest[1]:
                return self._file(rest[2], inst)
        raise NotFound("/".join(rest))

    def _plans(self, rest: list[str]) -> Node:
        plan = self._instance(rest[0])
        if not plan.is_plan:
            raise NotFound(rest[0])
        return self._graph_node(plan, rest[1:], "plan.dcm", PLAN_FOLDERS, manifest=True)

    def _objects(self, rest: list[str]) -> Node:
        inst = self._instance(rest[0])
        return self._graph_node(inst, rest[1:], "self.dcm", _OBJECT_FOLDERS, manifest=False)

    def _graph_node(
        self,
        root: InstanceRow,
        rest: list[str],
        self_name: str,
        folders: tuple[str, ...],
        *,
        manifest: bool,
    ) -> Node:
        if not rest:
            return self._dir(root.sop_uid)
        name = rest[0]
        if len(rest) == 1:
            if name == self_name:
                return self._file(name, root)
            if name in folders:
                return self._dir(name)
            if name == "missing.txt":
                return self._generated(name, self._package(root.sop_uid).missing_txt)
            if name == "manifest.json" and manifest:
                view = self._package(root.sop_uid)
                return self._generated(
                    name, view.manifest_json, functools.partial(format_manifest, view.package)
                )
        elif len(rest) == 2 and name in folders:
            member = self._package(root.sop_uid).folders[name].get(rest[1])
            if member is not None:
                return self._file(rest[1], member)
        raise NotFound("/".join(rest))

    def _meta(self, rest: list[str]) -> Node:
        if rest == ["status.json"]:
            return self._generated("status.json", self._cache.get(("status",), self._status))
        if rest == ["rejected.txt"]:
            rows, text = self._cache.get(("rejected",), self._rejected)
            return self._generated("rejected.txt", text, functools.partial(format_rejected, rows))
        raise NotFound("/".join(rest))

    # -- listings -----------------------------------------------------------

    def _list(self, parts: list[str]) -> list[tuple[str, Node]]:
        if not parts:
            return [(name, self._dir(name)) for name in _TOP]
        top, rest = parts[0], parts[1:]
        if top == ".dicomfs":
            return self._meta_listing()
        reader = self.reader
        if top == "by-sop":
            return list(self._sop_listing())
        if top in ("plans", "objects") and len(rest) == 1:
            return self._graph_listing(top, rest[0])
        if top in ("plans", "objects") and len(rest) == 2:
            folder = self._package(rest[0]).folders[rest[1]]
            return [(name, self._file(name, inst)) for name, inst in folder.items()]
        if top == "plans":
            return [(p.sop_uid, self._dir(p.sop_uid)) for p in reader.plans() if named(p)]
        if top == "objects":
            names = (n[:-4] for n, _ in self._sop_listing() if not n.startswith(SYNTHETIC_PREFIX))
            return [(uid, self._dir(uid)) for uid in names]
        if top == "by-series" and not rest:
            return [(s, self._dir(s)) for s in reader.series_uids() if is_safe_uid(s)]
        if top == "by-series":
            return self._instance_listing(reader.listing(rest[0]))
        if top == "by-study" and not rest:
            return [(s, self._dir(s)) for s in reader.study_uids() if is_safe_uid(s)]
        if len(rest) == 1:
            series = reader.study_series_uids(rest[0])
            return [(s, self._dir(s)) for s in series if is_safe_uid(s)]
        insts = [i for i in reader.listing(rest[1]) if i.study_uid == rest[0]]
        return self._instance_listing(insts)

    def _meta_listing(self) -> list[tuple[str, Node]]:
        """rejected.txt and status.json; while the index is rebuilt, status.json alone."""
        entries: list[tuple[str, Node]] = []
        for name in ("rejected.txt", "status.json"):
            try:
                entries.append((name, self._resolve([".dicomfs", name])))
            except Rebuilding:
                continue  # rejected.txt returns with the rebuilt index
        return entries

    def _instance_listing(self, insts: Iterable[ListingRow]) -> list[tuple[str, Node]]:
        file = self._file
        return [(n, file(n, i)) for i in insts if named(i) for n in (f"{i.sop_uid}.dcm",)]

    def _sop_listing(self) -> list[tuple[str, FileNode]]:
        """by-sop entries, synthetic names included; cached, as it is the whole index."""

        def build() -> list[tuple[str, FileNode]]:
            out = []
            for inst in self.reader.listing():
                name = f"{inst.sop_uid}.dcm" if named(inst) else synthetic_name(inst.sop_uid)
                out.append((name, self._file(name, inst)))
            return out

        return self._cache.get(("by-sop",), build)

    def _graph_listing(self, top: str, uid: str) -> list[tuple[str, Node]]:
        names = ["plan.dcm", *PLAN_FOLDERS, "missing.txt", "manifest.json"]
        if top == "objects":
            names = ["self.dcm", *_OBJECT_FOLDERS, "missing.txt"]
        return [(name, self._resolve([top, uid, name])) for name in names]

    # -- cached computations ------------------------------------------------

    def _package(self, uid: str) -> _PackageView:
        def build() -> _PackageView:
            try:
                pkg = graph.package(self.reader, uid)
            except UnknownUidError as exc:
                raise NotFound(uid) from exc
            folders: dict[str, dict[str, InstanceRow]] = {}
            for folder, members in zip(
                PLAN_FOLDERS, (pkg.references, pkg.referenced_by, pkg.registrations), strict=True
            ):
                entries = folders[folder] = {}
                for m in members:
                    name = member_name(m.instance)
                    if name is not None:
                        entries.setdefault(name, m.instance)
            return _PackageView(folders, format_missing(pkg.missing), format_manifest(pkg), pkg)

        return self._cache.get(("package", uid), build)

    def _status(self) -> bytes:
        reader, rebuilding = self._thread_reader()  # status.json answers during a rebuild
        doc: dict[str, Any] = dict(reader.status().as_dict())
        doc["rebuilding"] = rebuilding
        doc["dicomfs_version"] = __version__
        doc["mount_time"] = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.mount_time_ns / 1e9)
        )
        doc["mount_time_ns"] = self.mount_time_ns
        if self._extra_status is not None:
            doc.update(self._extra_status())
        return (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode()

    def _rejected(self) -> tuple[list[RejectedRow], bytes]:
        rows = self.reader.rejected()
        return rows, format_rejected(rows)
