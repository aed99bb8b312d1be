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

Caching: plan packages are kept while the index's generation stays
(``packages``); folder listings and the other generated files for
``cache_ttl`` seconds (default 1 s, 0 turns that off); a study or series
folder found there is there. A miss always queries, so a file indexed a
moment after a failed lookup is visible at once.
The folders that grow with the archive are listed in pages (``pages``).

With ``part10`` (off by default) a file without a PS3.10 header (Monaco and
other TPS exports) is served with one in front, made from its index row
(``prefixes``); every other file reads byte for byte as its source.

While the index is being rebuilt from the sources (reliability.md E6) it is
empty, then partial: answering from it would list folders as if their files
were gone. Every path that needs the index then raises ``Rebuilding``
(EAGAIN through FUSE) and ``.dicomfs/status.json`` says ``"rebuilding":
true``; the root and the top folders stay, so the status can be found.
"""

from __future__ import annotations

import functools
import itertools
import logging
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from dicomfs.dicom.records import is_safe_uid
from dicomfs.index import IndexReader, InstanceRow, ListingRow, RejectedRow
from dicomfs.index.schema import GENERATION
from dicomfs.view.cache import TTLCache
from dicomfs.view.names import named
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
from dicomfs.view.packages import Packages
from dicomfs.view.pages import Entries, NamePage, find_synthetic, name_pages, pages, streamed
from dicomfs.view.paths import NAMES, is_uid_folder, split_path, uid_of
from dicomfs.view.patients import PatientsTree
from dicomfs.view.plan_table import PlanLine, format_tsv, plan_lines, renderer
from dicomfs.view.prefixes import Prefixes, rows_to_list
from dicomfs.view.readers import ThreadReaders
from dicomfs.view.report import (
    PLAN_FOLDERS,
    Reveal,
    format_manifest,
    format_rejected,
)
from dicomfs.view.status import reachable, status_document

log = logging.getLogger(__name__)

GENERATED_MODE = 0o440
_TOP = ("by-sop", "by-series", "by-study", "plans", "objects", "patients", ".dicomfs")
_OBJECT_FOLDERS = ("references", "referenced-by")
_PLAN_ENTRIES = ("plan.dcm", *PLAN_FOLDERS, "missing.txt", "manifest.json")


# -- the tree -------------------------------------------------------------------


class View:
    """Resolves mount paths to nodes from the index.

    ``reader_factory`` is called once per OS thread (``readers.ThreadReaders``).
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
        names: str = "uid",
        part10: bool = False,
    ) -> None:
        if names not in NAMES:
            raise ValueError(f"names must be one of {', '.join(NAMES)}, not {names!r}")
        self._readers = ThreadReaders(reader_factory)
        self.dir_uid, self.dir_gid, self.dir_mode = dir_uid, dir_gid, dir_mode & 0o7777
        self.mount_time_ns = mount_time_ns
        self._cache = TTLCache(cache_ttl, cache_size)
        self._packages = Packages(self)
        self._extra_status = extra_status
        self._on_source_changed = on_source_changed
        self.names = names
        self._patients = None if names == "uid" else PatientsTree(self, with_names=names == "name")
        self._top = tuple(t for t in _TOP if t != "patients" or self._patients is not None)
        # Files without a PS3.10 header are served with one in front (dicom.part10).
        self.part10 = part10
        self._prefixes = Prefixes()

    @property
    def reader(self) -> IndexReader:
        """This thread's reader of a complete index; ``Rebuilding`` while it is rebuilt."""
        reader, rebuilding = self._thread_reader()
        if rebuilding:
            raise Rebuilding("the index is being rebuilt from the source folders: try again")
        return reader

    def _thread_reader(self) -> tuple[IndexReader, bool]:
        return self._readers.get()

    def close(self) -> None:
        self._readers.close()

    # -- public API ---------------------------------------------------------

    def lookup(self, path: str) -> Node:
        """The node at ``path`` (relative to the mount root; a leading "/" is fine)."""
        parts = split_path(path)
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
        """(name, node) of every entry of the folder at ``path``, sorted by name.

        Whole, for ``dicomfs ls`` and WebDAV; the FUSE adapter lists with
        ``pages``, which never holds more than a page of the big folders.
        """
        parts = split_path(path)
        entries = self.pages(path)
        if streamed(parts):
            return sorted(itertools.chain.from_iterable(entries), key=lambda e: e[0])
        return next(entries)

    def pages(self, path: str) -> Iterator[Entries]:
        """The entries of the folder at ``path`` in pages (``view.pages``); NotFound at once.

        A folder bounded by one study, series or plan is one page, sorted by name and
        cached for the TTL (a plan's as long as its package); the folders that grow
        with the archive come a page per query, in key order.
        """
        parts = split_path(path)
        listing = functools.partial(self._sorted_list, parts)
        if is_uid_folder(parts):  # entries prove the folder is there (``_uid_folder``)
            entries = self._cache.get(("list", *parts), listing)
            if not entries:
                self.lookup(path)
            return iter([entries])
        if isinstance(self.lookup(path), FileNode):
            raise NotADirectory("not a folder")
        if streamed(parts):
            return pages(self, parts)
        if len(parts) > 1 and parts[0] == "plans":  # kept with the package (view.packages)
            return iter([self._packages.listing(parts[1], tuple(parts[2:]), listing)])
        return iter([self._cache.get(("list", *parts), listing)])

    def name_pages(self, path: str) -> Iterator[NamePage] | None:
        """Only the names of a folder that grows with the archive, a page at a time; else None.

        For listings without attributes (``fuse.fs``): see ``view.pages``.
        """
        parts = split_path(path)
        return name_pages(self, parts) if streamed(parts) else None

    def read_virtual(self, node: FileNode) -> bytes:
        if not node.generated:
            raise IsADirectory(f"{node.name} is a source file, not a generated one")
        return node.data()

    def open_file(self, node: FileNode) -> int:
        """``open_source`` that also reports a changed source for re-indexing."""
        try:
            return open_source(node)
        except SourceChanged as exc:
            log.warning("refusing to serve %s: %s", node.name, exc)
            if self._on_source_changed is not None and node.real_path is not None:
                self._on_source_changed(node.real_path)
            raise

    def generation(self) -> str | None:
        """The index generation: it moves with every write (None: an index written before it)."""
        return self.reader.meta(GENERATION)

    # -- nodes --------------------------------------------------------------

    def _dir(self, name: str) -> DirNode:
        return DirNode(name, self.dir_uid, self.dir_gid, self.dir_mode, self.mount_time_ns)

    # -- what PatientsTree uses (patients.Host) -------------------------------

    @property
    def cache(self) -> TTLCache:
        return self._cache

    def make_dir(self, name: str, witness: str | None = None) -> DirNode:
        return DirNode(name, self.dir_uid, self.dir_gid, self.dir_mode, self.mount_time_ns, witness)

    def make_file(self, name: str, inst: InstanceRow | ListingRow) -> FileNode:
        return self._file(name, inst)

    def plan_node(self, plan: InstanceRow, rest: list[str]) -> Node:
        return self._graph_node(plan, rest, "plan.dcm", PLAN_FOLDERS, manifest=True)

    def plan_listing(self, plan: InstanceRow, rest: list[str]) -> list[tuple[str, Node]]:
        """The plan folder (``rest`` empty) or one of its folders, as under ``plans/<uid>/``."""
        return self._list(["plans", plan.sop_uid, *rest])

    def _generated(
        self,
        name: str,
        content: bytes,
        render: Callable[[Reveal], bytes] | None = None,
        *,
        reveal_files: bool = False,
    ) -> FileNode:
        return FileNode(
            name, None, len(content), self.mount_time_ns, self.dir_uid, self.dir_gid,
            GENERATED_MODE, 0, 0, content, render=render, reveal_files=reveal_files,
        )  # fmt: skip

    def _made(
        self,
        name: str,
        size: int,
        make: Callable[[], bytes],
        render: Callable[[Reveal], bytes] | None = None,
    ) -> FileNode:
        """A generated file listed with its size and made when read (``FileNode.make``)."""
        return FileNode(
            name, None, size, self.mount_time_ns, self.dir_uid, self.dir_gid,
            GENERATED_MODE, 0, 0, None, render=render, make=make,
        )  # fmt: skip

    def _file(self, name: str, inst: InstanceRow | ListingRow) -> FileNode:
        f = inst.file
        mode = stat.S_IMODE(f.mode) & 0o555  # write and set-id bits never pass
        prefix = self._prefixes.of(self.reader, inst) if self.part10 else b""
        return FileNode(
            name, f.path, len(prefix) + f.size, f.mtime_ns, f.uid, f.gid, mode, f.inode, f.dev,
            indexed_at=f.indexed_at, ctime_ns=f.ctime_ns, prefix=prefix, file_id=f.file_id,
        )  # fmt: skip

    def _rows(self, series_uid: str) -> list[InstanceRow] | list[ListingRow]:
        return rows_to_list(self.reader, series_uid, full=self.part10)

    # -- resolution ---------------------------------------------------------

    def _resolve(self, parts: list[str]) -> Node:
        if not parts:
            return self._dir("")
        top, rest = parts[0], parts[1:]
        if top not in self._top:
            raise NotFound(top)
        if not rest:
            return self._dir(top)
        if top == "patients" and self._patients is not None:
            return self._patients.resolve(rest)
        if is_uid_folder(parts):
            return self._uid_folder(parts)
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
        synthetic = find_synthetic(self, name)  # rare: only unsafe UIDs get these names
        if synthetic is not None:
            return synthetic
        return self._file(name, self._instance(name if is_safe_uid(name) else uid_of(name)))

    def _uid_folder(self, parts: list[str]) -> DirNode:
        """A study or series folder, answered by its listing while listings are kept.

        The kernel looks a folder up, opens it and reads it: three requests
        that the listing read at the lookup answers from one query (one round
        trip to a database server instead of three). A folder whose rows all
        have unsafe UIDs lists empty and is still there: then the index is asked.
        """
        kept = functools.partial(self._sorted_list, parts)
        if not (self._cache.ttl > 0 and self._cache.get(("list", *parts), kept)):
            reader, uid = self.reader, parts[-1]
            if len(parts) == 2 and parts[0] == "by-study":
                there = bool(reader.study_series_uids(uid))
            else:
                there = reader.series_exists(uid, parts[1] if len(parts) == 3 else None)
            if not there:
                raise NotFound("/".join(parts))
        return self._dir(parts[-1])

    def _by_series(self, rest: list[str]) -> Node:  # by-series/<uid>: _uid_folder
        inst = self._instance(uid_of(rest[1])) if len(rest) == 2 else None
        if inst is None or inst.series_uid != rest[0]:
            raise NotFound("/".join(rest))
        return self._file(rest[1], inst)

    def _by_study(self, rest: list[str]) -> Node:  # by-study/<uid>[/<uid>]: _uid_folder
        inst = self._instance(uid_of(rest[2])) if len(rest) == 3 and is_safe_uid(rest[0]) else None
        if inst is None or (inst.study_uid, inst.series_uid) != (rest[0], rest[1]):
            raise NotFound("/".join(rest))
        return self._file(rest[2], inst)

    def _plans(self, rest: list[str]) -> Node:
        return self._graph("plans", rest[0])(rest[1:])

    def _objects(self, rest: list[str]) -> Node:
        return self._graph("objects", rest[0])(rest[1:])

    def _graph(self, top: str, uid: str) -> Callable[[list[str]], Node]:
        """The nodes under ``plans/<uid>`` or ``objects/<uid>``, from one query for the root."""
        root = self._instance(uid)
        if top == "objects":
            return functools.partial(
                self._graph_node, root, self_name="self.dcm", folders=_OBJECT_FOLDERS,
                manifest=False,
            )  # fmt: skip
        if not root.is_plan:
            raise NotFound(uid)
        return functools.partial(
            self._graph_node, root, self_name="plan.dcm", folders=PLAN_FOLDERS, manifest=True
        )

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
            uid = root.sop_uid
            if name == "missing.txt":
                return self._made(
                    name,
                    self._packages.head(uid).missing_size,
                    lambda: self._packages.view(uid).missing_txt,
                )
            if name == "manifest.json" and manifest:
                return self._made(
                    name,
                    self._packages.head(uid).manifest_size,
                    lambda: self._packages.view(uid).manifest_json,
                    lambda reveal: format_manifest(self._packages.view(uid).package, reveal),
                )
        elif len(rest) == 2 and name in folders:
            member = self._packages.view(root.sop_uid).folders[name].get(rest[1])
            if member is not None:
                return self._file(rest[1], member)
        raise NotFound("/".join(rest))

    def human_path(self, patient_id: str, **uids: str | None) -> str | None:
        """Where a patient (or its study_uid, series_uid, sop_uid, plan_uid) is under
        patients/; None without that tree."""
        if self._patients is None:
            return None
        return self._patients.path_of(patient_id, **uids)

    def plan_paths(self) -> dict[str, str]:
        """{plan UID: the plan's folder}: under patients/ when the tree has it, else plans/<uid>."""
        if self._patients is not None:
            return self._patients.plan_paths()
        return {p.sop_uid: f"plans/{p.sop_uid}" for p in self.reader.plans() if named(p)}

    def _meta(self, rest: list[str]) -> Node:
        if rest == ["status.json"]:
            # Never from the cache during a rebuild or an outage: a listing that fails
            # is explained by the status at once, not when its cache expires.
            fresh = not reachable(self._thread_reader)
            status = self._status() if fresh else self._cache.get(("status",), self._status)
            return self._generated("status.json", status)
        if rest == ["plans.tsv"]:
            if self.reader.details_pending():  # labels and dates not read again yet
                raise Rebuilding("the index is reading every file's details again: try again")
            lines = self._cache.get(("plans.tsv",), self._plan_lines)
            return self._generated(
                "plans.tsv", format_tsv(lines), renderer(lines), reveal_files=True
            )
        if rest == ["rejected.txt"]:
            rows, text = self._cache.get(("rejected",), self._rejected)
            return self._generated("rejected.txt", text, functools.partial(format_rejected, rows))
        raise NotFound("/".join(rest))

    # -- listings -----------------------------------------------------------

    def _sorted_list(self, parts: list[str]) -> Entries:
        return sorted(self._list(parts), key=lambda e: e[0])

    def _list(self, parts: list[str]) -> list[tuple[str, Node]]:
        if not parts:
            return [(name, self._dir(name)) for name in self._top]
        top, rest = parts[0], parts[1:]
        if top == ".dicomfs":
            return self._meta_listing()
        if top == "patients" and self._patients is not None:
            return self._patients.listing(rest)
        reader = self.reader
        if top in ("plans", "objects") and len(rest) == 1:
            return self._graph_listing(top, rest[0])
        if top in ("plans", "objects") and len(rest) == 2:
            folder = self._packages.view(rest[0]).folders[rest[1]]
            return [(name, self._file(name, inst)) for name, inst in folder.items()]
        if top == "plans":
            return [(p.sop_uid, self._dir(p.sop_uid)) for p in reader.plans() if named(p)]
        if top == "by-series":
            return self._instance_listing(self._rows(rest[0]))
        if len(rest) == 1:
            series = reader.study_series_uids(rest[0])
            return [(s, self._dir(s)) for s in series if is_safe_uid(s)]
        insts = [i for i in self._rows(rest[1]) if i.study_uid == rest[0]]
        return self._instance_listing(insts)

    def _meta_listing(self) -> list[tuple[str, Node]]:
        """plans.tsv, rejected.txt and status.json; while the index is rebuilt, status.json only."""
        entries: list[tuple[str, Node]] = []
        for name in ("plans.tsv", "rejected.txt", "status.json"):
            try:
                entries.append((name, self._resolve([".dicomfs", name])))
            except Rebuilding:
                continue  # rejected.txt returns with the rebuilt index
        return entries

    def _instance_listing(
        self, insts: Iterable[InstanceRow | ListingRow]
    ) -> list[tuple[str, Node]]:
        file = self._file
        return [(n, file(n, i)) for i in insts if named(i) for n in (f"{i.sop_uid}.dcm",)]

    def _graph_listing(self, top: str, uid: str) -> list[tuple[str, Node]]:
        """A plan or object folder, from one query for its root (``find plans`` lists 2,000)."""
        node = self._graph(top, uid)
        names = ["self.dcm", *_OBJECT_FOLDERS, "missing.txt"] if top == "objects" else _PLAN_ENTRIES
        return [(name, node([name])) for name in names]

    # -- cached computations ------------------------------------------------

    def _status(self) -> bytes:  # answers during a rebuild and an outage too
        return status_document(self._thread_reader, self.mount_time_ns, self._extra_status)

    def _plan_lines(self) -> list[PlanLine]:
        return plan_lines(self.reader, self.plan_paths())

    def _rejected(self) -> tuple[list[RejectedRow], bytes]:
        rows = self.reader.rejected()
        return rows, format_rejected(rows)
