"""Read-only access to the index: every query the view, graph and commands ask.

A reader owns one read-only connection in autocommit mode, so each query
is a single statement and no read transaction outlives a call to pin the
writer's WAL (reliability.md E5). WAL lets readers go on reading while the
one writer (``dicomfs.index.writer``) writes. Readers also notice when the
index file they opened has been replaced, so the mount can reopen, and
whether it is an index still being rebuilt (``rebuilding_since``). How an
index file is opened read-only is ``opening``'s; a PostgreSQL index
(``database``) is opened here, with the same queries.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from dicomfs.dicom.records import ChangeKey
from dicomfs.errors import IndexCorruptError, IndexUnavailableError
from dicomfs.index import postgres, roots
from dicomfs.index.changes import Changes, Recorded, between
from dicomfs.index.database import Connection, PgConnection, errors, is_url, shown
from dicomfs.index.opening import open_read_only
from dicomfs.index.rows import (
    EDGE_COLUMNS,
    INSTANCE_COLUMNS,
    PLAN_CLASSES,
    REGISTRATION_CLASSES,
    UID_NUMBER,
    ConflictRow,
    EdgeRow,
    IndexStatus,
    InstanceRow,
    RejectedRow,
    decode_path,
    edge_row,
    encode_path,
    instance_row,
)
from dicomfs.index.schema import CAPPED_WHERE, DETAILS_PENDING, SCHEMA_VERSION, check_schema

log = logging.getLogger(__name__)

# Meta key of an index being rebuilt: the time its rebuild began, written
# into the new, empty index before it takes the old one's place
# (``recovery.set_aside``) and set to "" by the first full reconcile that
# completes into it (``scan.reconcile``). Readers of such an index answer
# "rebuilding", never the empty or partial answers of an index half filled
# (reliability.md E6). The value only goes from set to empty, so a reader
# that once saw it empty may rely on that for the file it has open.
REBUILDING = "rebuilding"

# ``FileStat.change_key`` as ``change_key`` makes it (mode & 0o7777): a row is the key.
_KEY_COLUMNS = "size, mtime_ns, inode, mode & 4095, uid, gid, ctime_ns"


def _change_key(row: Sequence[Any]) -> ChangeKey:
    return cast(ChangeKey, tuple(row))


def _bytes_after_prefix(prefix: bytes) -> bytes | None:
    """The least bytes above every string starting with ``prefix`` (None: none, all 0xff)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file now at ``path``: tells a replaced index from the same one."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class IndexReader:
    """Read-only queries. Open one per thread: connections are not shared.

    Each query is a single statement in autocommit mode, so no read
    transaction outlives a call and pins the WAL (reliability.md E5).
    ``path`` is the index file, None when the index is a PostgreSQL database
    (``url``); ``location`` names either, for messages (no password).
    """

    path: Path | None
    url: str | None

    def __init__(self, path: Path | str, *, _conn: Connection | None = None) -> None:
        self._recorded: Recorded | None = None
        self._details_done = False
        self._can_remember_details = _conn is None
        if is_url(path):
            self._open_database(str(path), _conn)
            return
        # Absolute: the FUSE loop may change the working directory to "/".
        self.path = Path(os.path.abspath(path))
        self.url = None
        self.location = str(self.path)
        if _conn is not None:
            self._conn = _conn
            self.identity = _file_identity(self.path)
            return
        if not self.path.exists():
            raise IndexUnavailableError(
                f"no index at {self.path}: run `dicomfs index SOURCE...` first "
                "or point --index / DICOMFS_INDEX at an existing index"
            )
        try:
            self._conn = open_read_only(self.path)
            self.identity = _file_identity(self.path)
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(f"cannot read index {self.path}: {exc}") from exc

    def _open_database(self, url: str, conn: Connection | None) -> None:
        """A PostgreSQL index: no file to watch; the database is the same while it answers."""
        self.path, self.url, self.location, self.identity = None, url, shown(url), None
        if conn is None:
            try:
                conn = PgConnection(url, read_only=True, application="dicomfs reader")
            except errors() as exc:
                reason = f"cannot reach the index {self.location}: {exc}"
                raise IndexUnavailableError(reason) from exc
            try:
                check_schema(conn, self.location)
            except BaseException:
                conn.close()
                raise
        self._conn = conn

    @property
    def postgres(self) -> bool:
        """True when the index is a PostgreSQL database: for the few queries that differ."""
        return self.path is None

    @property
    def target(self) -> Path | str:
        """What opens this index again: the file's path or the database's URL."""
        return self.path if self.path is not None else str(self.url)

    def close(self) -> None:
        self._conn.close()

    def is_current(self) -> bool:
        """False once the file at ``path`` is no longer the file this connection opened.

        The index was deleted, replaced, or moved aside and rebuilt (see
        ``Ingest``): the connection would go on answering from the old file,
        so readers reopen (reliability.md E6). A database is not replaced.
        """
        if self.path is None:
            return True
        return self.identity is not None and _file_identity(self.path) == self.identity

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of a read-only query: for the index's own modules, not for callers above it."""
        if self._recorded is not None:
            self._recorded.note(params)
        return self._conn.execute(sql, params).fetchall()

    @contextlib.contextmanager
    def recording(self) -> Iterator[Recorded]:
        """Collect what the queries made meanwhile depend on: their UID parameters
        (``index.changes``; a query without one could depend on any row)."""
        outer, self._recorded = self._recorded, Recorded(set())
        try:
            yield self._recorded
        finally:
            inner, self._recorded = self._recorded, outer
            if outer is not None:
                outer.merge(inner)

    def changes(self, old: str, new: str) -> Changes | None:
        """What the batches from generation ``old`` to ``new`` touched; None: not known."""
        if not (old.isdecimal() and new.isdecimal()):
            return None
        first, last = int(old), int(new)
        rows = self._conn.execute(
            "SELECT generation, previous, uids FROM changes "
            "WHERE generation > ? AND generation <= ? ORDER BY generation",
            (first, last),
        ).fetchall()
        return between(rows, first, last)

    @property
    def connection(self) -> sqlite3.Connection:
        """The SQLite connection, for sqlite-utils' full-text search helpers (``search``)."""
        if not isinstance(self._conn, sqlite3.Connection):
            raise IndexUnavailableError(
                f"the index {self.location} is a PostgreSQL database: full-text search "
                "(`dicomfs find` by name or text) needs an SQLite index for now"
            )
        return self._conn

    def details_pending(self) -> bool:
        """True from an upgrade to schema 3 until a scan has read every file again (asked per
        lookup under patients/; a reader keeps a cleared answer: only an upgrade sets it)."""
        if self._details_done:
            return False
        pending = bool(self.meta(DETAILS_PENDING))
        self._details_done = not pending and self._can_remember_details
        return pending

    # -- instances -------------------------------------------------------

    def instance(self, sop_uid: str) -> InstanceRow | None:
        """The serving copy of ``sop_uid``, or None when it is not indexed."""
        rows = self.rows(
            f"SELECT {INSTANCE_COLUMNS} FROM instances i JOIN files f ON f.id = i.file_id "
            "WHERE i.sop_uid = ? AND i.serving = 1",
            (sop_uid,),
        )
        return instance_row(rows[0]) if rows else None

    def instances(self, sop_uids: Iterable[str]) -> dict[str, InstanceRow]:
        """Serving copies of many UIDs at once (the graph asks in bulk)."""
        wanted = list(dict.fromkeys(sop_uids))
        found: dict[str, InstanceRow] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            among, values = self._among(chunk)
            for row in self.rows(
                f"SELECT {INSTANCE_COLUMNS} FROM instances i JOIN files f ON f.id = i.file_id "
                f"WHERE i.serving = 1 AND i.sop_uid {among}",
                values,
            ):
                inst = instance_row(row)
                found[inst.sop_uid] = inst
        return found

    def _among(self, values: Sequence[str]) -> tuple[str, list[Any]]:
        """``IN (?, ...)`` and its parameters; in PostgreSQL ``= ANY(?)`` and one array, so
        the statement's text, and the plan it has prepared, stay the same whatever the count."""
        if self.postgres:
            return "= ANY(?)", [list(values)]
        return f"IN ({','.join('?' * len(values))})", list(values)

    def _instances_where(self, where: str, params: Sequence[Any]) -> list[InstanceRow]:
        return [
            instance_row(row)
            for row in self.rows(
                f"SELECT {INSTANCE_COLUMNS} FROM instances i JOIN files f ON f.id = i.file_id "
                f"WHERE i.serving = 1 AND {where} ORDER BY i.sop_uid",
                params,
            )
        ]

    def all_instances(self) -> list[InstanceRow]:
        return self._instances_where("TRUE", ())

    def series_instances(self, series_uid: str) -> list[InstanceRow]:
        return self._instances_where(f"i.series_id = {UID_NUMBER}", (series_uid,))

    def study_instances(self, study_uid: str) -> list[InstanceRow]:
        return self._instances_where(f"i.study_id = {UID_NUMBER}", (study_uid,))

    def instances_on_frame_of_reference(self, for_uids: Iterable[str]) -> list[InstanceRow]:
        uids = sorted(set(for_uids) - {""})
        if not uids:
            return []
        among, values = self._among(uids)
        return self._instances_where(f"i.for_id IN (SELECT id FROM uids WHERE uid {among})", values)

    def plans(self) -> list[InstanceRow]:
        return self._instances_where(
            f"i.sop_class IN ({','.join('?' * len(PLAN_CLASSES))})", PLAN_CLASSES
        )

    def registrations(self, frames: Iterable[str]) -> list[InstanceRow]:
        """Registrations in one of ``frames`` or naming one: per package, through the
        ``instances_for`` and ``edges_target`` indexes, not every registration."""
        uids = sorted(set(frames) - {""})
        if not uids:
            return []
        classes = ",".join("?" * len(REGISTRATION_CLASSES))
        among, values = self._among(uids)
        return self._instances_where(
            f"i.sop_class IN ({classes}) AND (i.for_id IN (SELECT id FROM uids WHERE uid {among}) "
            "OR i.file_id IN ("
            f"SELECT e.file_id FROM edge_rows e WHERE e.target_uid {among} "
            "AND e.level = 'frame_of_reference'))",
            (*REGISTRATION_CLASSES, *values, *values),
        )

    def study_series_uids(self, study_uid: str) -> list[str]:
        return [
            row[0]
            for row in self.rows(
                "SELECT DISTINCT series_uid FROM instances "
                f"WHERE serving = 1 AND study_id = {UID_NUMBER} AND series_uid != '' "
                "ORDER BY series_uid",
                (study_uid,),
            )
        ]

    def series_exists(self, series_uid: str, study_uid: str | None = None) -> bool:
        sql, params = f"series_id = {UID_NUMBER}", [series_uid]
        if study_uid is not None:
            sql, params = f"{sql} AND study_id = {UID_NUMBER}", [series_uid, study_uid]
        return bool(
            self.rows(f"SELECT 1 FROM instances WHERE serving = 1 AND {sql} LIMIT 1", params)
        )

    # -- edges -----------------------------------------------------------

    def forward_edges(self, sop_uid: str) -> list[EdgeRow]:
        """References stored in the serving copy of ``sop_uid``, in file order."""
        return [
            edge_row(row)
            for row in self.rows(
                # The file first, then its edges by edges_file: as a join through the
                # view PostgreSQL read every edge row and hashed them (5 ms a plan).
                f"SELECT {EDGE_COLUMNS} FROM edges e WHERE e.file_id = (SELECT file_id "
                "FROM instance_rows WHERE sop_uid = ? AND serving = 1) ORDER BY e.edge_id",
                (sop_uid,),
            )
        ]

    def reverse_edges(self, target_uid: str) -> list[EdgeRow]:
        """Edges whose target is ``target_uid``, from serving copies only."""
        return [
            edge_row(row)
            for row in self.rows(
                f"SELECT {EDGE_COLUMNS} FROM edges e JOIN instances i ON i.file_id = e.file_id "
                "WHERE e.target_uid = ? AND i.serving = 1 ORDER BY e.src_uid, e.edge_id",
                (target_uid,),
            )
        ]

    # -- files -----------------------------------------------------------

    def file_keys(self) -> dict[str, ChangeKey]:
        """path -> ``FileStat.change_key`` of every known file, all in memory (for tests).

        The scan and the daemon ask ``file_key`` and ``file_keys_under`` instead.
        """
        return {
            decode_path(row[0]): _change_key(row[1:])
            for row in self.rows(f"SELECT path, {_KEY_COLUMNS} FROM files")
        }

    def file_key(self, path: str) -> ChangeKey | None:
        """``FileStat.change_key`` of one file in the index, or None: one indexed lookup."""
        stored = encode_path(path, shared=self.postgres)
        rows = self.rows(f"SELECT {_KEY_COLUMNS} FROM files WHERE path = ?", (stored,))
        return _change_key(rows[0]) if rows else None

    def file_keys_under(self, prefix: str, *, page: int = 1000) -> Iterator[tuple[str, ChangeKey]]:
        """(path, change key) of every file whose path starts with ``prefix``, in path order."""
        for raw, key in self.raw_file_keys_under(prefix, page):
            yield decode_path(raw), key

    def raw_file_keys_under(
        self, prefix: str, page: int = 1000
    ) -> Iterator[tuple[bytes, ChangeKey]]:
        """``file_keys_under`` with local paths as bytes (``os.fsencode``), in their memcmp
        order, so a walk sorted alike merges with it undecoded (a root keeps the order,
        ``roots``). A statement per page by path range: no read transaction outlives one
        (reliability.md E5); the caller may write between."""
        mapping = roots.current()
        low = mapping.stored(os.fsencode(prefix), shared=self.postgres)
        # Stored as local (an SQLite index, no roots): no mapping per row of a re-scan.
        local = mapping.local if mapping or self.postgres else None
        high = _bytes_after_prefix(low)
        upper, bound = ("", ()) if high is None else (" AND path < ?", (high,))
        first, after = (
            f"SELECT path, {_KEY_COLUMNS} FROM files WHERE path {op} ?{upper} ORDER BY path LIMIT ?"
            for op in (">=", ">")
        )
        sql = first
        while rows := self.rows(sql, (low, *bound, page)):
            for row in rows:
                yield (row[0] if local is None else local(bytes(row[0]))), row[1:]
            low, sql = bytes(rows[-1][0]), after

    def file_state(self, path: str) -> str | None:
        stored = encode_path(path, shared=self.postgres)
        rows = self.rows("SELECT state FROM files WHERE path = ?", (stored,))
        return str(rows[0][0]) if rows else None

    def rejected(self) -> list[RejectedRow]:
        return [
            RejectedRow(path=decode_path(path), kind=kind, reason=reason)
            for path, kind, reason in self.rows(
                "SELECT path, reject_kind, reason FROM files WHERE state = 'rejected' ORDER BY path"
            )
        ]

    def conflicts(self) -> list[ConflictRow]:
        return [
            ConflictRow(
                sop_uid=row[0],
                kind=row[1],
                kept_path=decode_path(row[2]),
                other_path=decode_path(row[3]),
                detail=row[4],
            )
            for row in self.rows(
                "SELECT c.sop_uid, c.kind, k.path, o.path, c.detail FROM conflicts c "
                "JOIN files k ON k.id = c.kept_file_id JOIN files o ON o.id = c.other_file_id "
                "ORDER BY c.sop_uid, o.path"
            )
        ]

    def meta(self, key: str) -> str | None:
        rows = self.rows("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def is_empty(self) -> bool:
        """True when the index records no file at all (a new index, before any batch)."""
        return not self.rows("SELECT 1 FROM files LIMIT 1")

    def rebuilding_since(self) -> float | None:
        """When the rebuild of this index began, or None when it is complete (``REBUILDING``)."""
        value = self.meta(REBUILDING)
        return float(value) if value else None

    def status(self) -> IndexStatus:
        if self.postgres:
            capped = f"instance_rows WHERE {postgres.CAPPED_WHERE}"
        else:  # else SQLite may read every row
            capped = f"instance_rows INDEXED BY instances_capped WHERE {CAPPED_WHERE}"
        counts = dict(
            self.rows(
                "SELECT 'instances', count(*) FROM instance_rows WHERE serving = 1 "
                "UNION ALL SELECT 'files', count(*) FROM files "
                "UNION ALL SELECT 'indexed', count(*) FROM files WHERE state = 'indexed' "
                "UNION ALL SELECT 'rejected', count(*) FROM files WHERE state = 'rejected' "
                "UNION ALL SELECT 'conflicts', count(*) FROM conflicts WHERE kind = 'conflict' "
                "UNION ALL SELECT 'benign', count(*) FROM conflicts WHERE kind = 'benign' "
                "UNION ALL SELECT 'plans', count(*) FROM instance_rows WHERE serving = 1 "
                f"AND sop_class IN ({','.join(repr(c) for c in PLAN_CLASSES)}) "
                f"UNION ALL SELECT 'capped', count(*) FROM {capped}"
            )
        )
        last_scan = self.meta("last_scan")
        return IndexStatus(
            instances=counts["instances"],
            files=counts["files"],
            indexed_files=counts["indexed"],
            rejected_files=counts["rejected"],
            conflicts=counts["conflicts"],
            benign_duplicates=counts["benign"],
            plans=counts["plans"],
            schema_version=SCHEMA_VERSION,
            last_scan=float(last_scan) if last_scan else None,
            index_path=self.location,
            capped_objects=counts["capped"],
            details_pending=self.details_pending(),
        )

    def quick_check(self) -> str:
        return str(self.rows("PRAGMA quick_check")[0][0])
