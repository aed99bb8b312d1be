"""The SQLite index: schema and every query. No other module writes SQL.

Tables (schema version in ``meta``):

- ``meta(key, value)``: schema version, dicomfs version, last scan time.
- ``files``: one row per source file seen by a scan. ``path`` is stored as
  bytes (``os.fsencode``) so non-UTF-8 file names survive. ``state`` is
  ``indexed`` or ``rejected`` (with ``reject_kind`` and ``reason``).
  ``digest`` (sha256 of the whole file) is computed only when two files
  claim the same SOP Instance UID: hashing every file would cost more than
  parsing its header.
- ``instances``: one row per indexed file (``file_id`` is the key), the
  identity read from the dataset. Several rows may share a ``sop_uid``;
  exactly one has ``serving = 1``: the copy indexed first (lowest file id).
  A later copy never takes the UID over; if the serving file disappears the
  next oldest copy is promoted (reliability.md C2, Orthanc's
  ``OverwriteInstances=false``).
- ``edges``: the references stored in each indexed file (per file, so a
  promoted duplicate brings its own edges).
- ``conflicts``: each later copy of a served UID, ``benign`` when the bytes
  are identical, ``conflict`` when they differ.

Concurrency (reliability.md E): one writer, every batch in one
``BEGIN IMMEDIATE`` transaction; readers open their own read-only
connections (one per thread), WAL lets them read while the writer writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from dicomfs import __version__
from dicomfs.dicom.records import ChangeKey, Edge, FileResult, FileStat, Instance, Level, Role
from dicomfs.errors import IndexCorruptError, IndexUnavailableError

SCHEMA_VERSION = 1
# SQLite's auto-checkpoint cannot restart the WAL while readers keep reading
# (a busy mount): past this size a batch ends with a checkpoint that waits for
# the readers of the moment (reliability.md E5).
WAL_LIMIT = 64 * 1024 * 1024
WRITER_BUSY_TIMEOUT_MS = 30_000

PLAN_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan
    "1.2.840.10008.5.1.4.1.1.481.8",  # RT Ion Plan
)
REGISTRATION_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.66.1",  # Spatial Registration
    "1.2.840.10008.5.1.4.1.1.66.3",  # Deformable Spatial Registration
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path BLOB NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    dev INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    state TEXT NOT NULL,
    reject_kind TEXT,
    reason TEXT,
    digest TEXT,
    indexed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_state ON files(state);
CREATE TABLE IF NOT EXISTS instances (
    file_id INTEGER PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE,
    sop_uid TEXT NOT NULL,
    serving INTEGER NOT NULL DEFAULT 0,
    sop_class TEXT NOT NULL,
    modality TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    for_uid TEXT NOT NULL,
    label TEXT NOT NULL,
    dose_summation_type TEXT NOT NULL,
    series_description TEXT NOT NULL,
    instance_number INTEGER,
    plan_intent TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    uid_safe INTEGER NOT NULL,
    flags TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_sop ON instances(sop_uid, file_id);
CREATE UNIQUE INDEX IF NOT EXISTS instances_serving ON instances(sop_uid) WHERE serving = 1;
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid) WHERE serving = 1;
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_uid) WHERE serving = 1;
CREATE INDEX IF NOT EXISTS instances_for ON instances(for_uid) WHERE serving = 1;
CREATE INDEX IF NOT EXISTS instances_class ON instances(sop_class) WHERE serving = 1;
CREATE TABLE IF NOT EXISTS edges (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    src_uid TEXT NOT NULL,
    target_uid TEXT NOT NULL,
    level TEXT NOT NULL,
    role TEXT NOT NULL,
    path TEXT NOT NULL,
    class_hint TEXT NOT NULL,
    qualifiers TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS edges_file ON edges(file_id);
CREATE INDEX IF NOT EXISTS edges_target ON edges(target_uid);
CREATE TABLE IF NOT EXISTS conflicts (
    id INTEGER PRIMARY KEY,
    sop_uid TEXT NOT NULL,
    kept_file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    other_file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    seen_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS conflicts_other ON conflicts(other_file_id);
"""


@dataclass(frozen=True, slots=True)
class FileRow:
    """A source file as the index knows it: what the mount serves and mirrors."""

    file_id: int
    path: str
    size: int
    mtime_ns: int
    inode: int
    dev: int
    uid: int
    gid: int
    mode: int
    indexed_at: float = 0.0  # time.time() when the index last wrote this row


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """The serving copy of one SOP Instance UID, with its file."""

    sop_uid: str
    sop_class: str
    modality: str
    patient_id: str
    study_uid: str
    series_uid: str
    for_uid: str
    label: str
    dose_summation_type: str
    series_description: str
    instance_number: int | None
    plan_intent: str
    uid_safe: bool
    flags: tuple[str, ...]
    file: FileRow

    @property
    def is_plan(self) -> bool:
        return self.sop_class in PLAN_CLASSES


@dataclass(frozen=True, slots=True)
class ListingRow:
    """What a folder listing of the mount needs: no JSON or display columns per row."""

    sop_uid: str
    modality: str
    study_uid: str
    series_uid: str
    uid_safe: bool
    file: FileRow


@dataclass(frozen=True, slots=True)
class EdgeRow:
    """A stored edge together with the SOP UID of the object that holds it."""

    src_uid: str
    edge: Edge


@dataclass(frozen=True, slots=True)
class RejectedRow:
    path: str
    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class ConflictRow:
    sop_uid: str
    kind: str
    kept_path: str
    other_path: str
    detail: str


@dataclass(frozen=True, slots=True)
class IndexStatus:
    instances: int
    files: int
    indexed_files: int
    rejected_files: int
    conflicts: int
    benign_duplicates: int
    plans: int
    schema_version: int
    last_scan: float | None
    index_path: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "instances": self.instances,
            "files": self.files,
            "indexed_files": self.indexed_files,
            "rejected_files": self.rejected_files,
            "conflicts": self.conflicts,
            "benign_duplicates": self.benign_duplicates,
            "plans": self.plans,
            "schema_version": self.schema_version,
            "last_scan": self.last_scan,
            "index_path": self.index_path,
        }


@dataclass(slots=True)
class ApplyStats:
    """What one batch changed; the ingest layer turns this into progress output."""

    indexed: int = 0
    rejected: int = 0
    removed: int = 0
    benign_duplicates: int = 0
    conflicts: int = 0


DigestFunction = Callable[[str], "str | None"]

_FILE_COLUMNS = (
    "f.id, f.path, f.size, f.mtime_ns, f.inode, f.dev, f.uid, f.gid, f.mode, f.indexed_at"
)
_INSTANCE_COLUMNS = (
    "i.sop_uid, i.sop_class, i.modality, i.patient_id, i.study_uid, i.series_uid, i.for_uid, "
    "i.label, i.dose_summation_type, i.series_description, i.instance_number, i.plan_intent, "
    "i.uid_safe, i.flags, " + _FILE_COLUMNS
)
_EDGE_COLUMNS = (
    "e.src_uid, e.target_uid, e.level, e.role, e.path, e.class_hint, e.qualifiers, "
    "e.study_uid, e.series_uid"
)


def _decode_path(raw: bytes | str) -> str:
    return os.fsdecode(raw)


def _file_row(row: Sequence[Any], offset: int = 0) -> FileRow:
    return FileRow(
        file_id=row[offset],
        path=_decode_path(row[offset + 1]),
        size=row[offset + 2],
        mtime_ns=row[offset + 3],
        inode=row[offset + 4],
        dev=row[offset + 5],
        uid=row[offset + 6],
        gid=row[offset + 7],
        mode=row[offset + 8],
        indexed_at=row[offset + 9],
    )


def _instance_row(row: Sequence[Any]) -> InstanceRow:
    return InstanceRow(
        sop_uid=row[0],
        sop_class=row[1],
        modality=row[2],
        patient_id=row[3],
        study_uid=row[4],
        series_uid=row[5],
        for_uid=row[6],
        label=row[7],
        dose_summation_type=row[8],
        series_description=row[9],
        instance_number=row[10],
        plan_intent=row[11],
        uid_safe=bool(row[12]),
        flags=tuple(json.loads(row[13])),
        file=_file_row(row, 14),
    )


def _edge_row(row: Sequence[Any]) -> EdgeRow:
    qualifiers = tuple((str(k), str(v)) for k, v in json.loads(row[6]))
    return EdgeRow(
        src_uid=row[0],
        edge=Edge(
            target_uid=row[1],
            level=Level(row[2]),
            role=Role(row[3]),
            path=row[4],
            class_hint=row[5],
            qualifiers=qualifiers,
            study_uid=row[7],
            series_uid=row[8],
        ),
    )


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


# Primary result codes (sqlite3.h) of a damaged file, as opposed to a busy,
# full or unreadable one: only these make the index untrustworthy.
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_SQLITE_FULL = 13


def is_damage(exc: BaseException) -> bool:
    """True when SQLite says the index file is damaged (SQLITE_CORRUPT, SQLITE_NOTADB)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, IndexCorruptError) and exc.__cause__ is not None:
        code = getattr(exc.__cause__, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def is_disk_full(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == _SQLITE_FULL


def set_aside(path: Path) -> Path:
    """Replace the index at ``path`` by a new, empty one; return where the old one went.

    The old file is kept for inspection (a hard link) with its -wal/-shm
    renamed beside it: connections still open on it keep a consistent file,
    and the new index never shares their WAL. The new index gets its schema
    under a temporary name and is renamed over ``path``, so a reader that
    opens ``path`` meanwhile finds the old file or the new one, never none.
    """
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    for n in range(1, 1000):
        if not any(os.path.lexists(f"{target}{s}") for s in ("", "-wal", "-shm")):
            break
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    fresh = path.with_name(f".{path.name}.new-{os.getpid()}")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{fresh}{suffix}")
    IndexWriter(fresh).close()  # the last connection: its -wal and -shm go with it
    with contextlib.suppress(FileNotFoundError):
        os.link(path, target)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.rename(f"{path}{suffix}", f"{target}{suffix}")
    os.replace(fresh, path)
    return target


def default_index_path() -> Path:
    """``$XDG_DATA_HOME/dicomfs/index.sqlite`` (``~/.local/share`` when unset)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    return Path(base) / "dicomfs" / "index.sqlite"


class IndexReader:
    """Read-only queries. Open one per thread: sqlite3 connections are not shared.

    Each query is a single statement in autocommit mode, so no read
    transaction outlives a call and pins the WAL (reliability.md E5).
    """

    def __init__(self, path: Path | str, *, _conn: sqlite3.Connection | None = None) -> None:
        # Absolute: the FUSE loop may change the working directory to "/".
        self.path = Path(os.path.abspath(path))
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
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                check_same_thread=False,
                isolation_level=None,
                timeout=5.0,
            )
            conn.execute("PRAGMA query_only = 1")
            self._conn = conn
            self.identity = _file_identity(self.path)
            self._check_schema()
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(f"cannot read index {self.path}: {exc}") from exc

    def _check_schema(self) -> None:
        try:
            row = self._conn.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(f"{self.path} is not a dicomfs index ({exc})") from exc
        if row is None or int(row[0]) != SCHEMA_VERSION:
            found = row[0] if row else "none"
            raise IndexCorruptError(
                f"{self.path} has schema version {found}, this dicomfs needs {SCHEMA_VERSION}: "
                "delete it and re-index (the index is a cache of the source folders)"
            )

    def close(self) -> None:
        self._conn.close()

    def is_current(self) -> bool:
        """False once the file at ``path`` is no longer the file this connection opened.

        The index was deleted, replaced, or moved aside and rebuilt (see
        ``Ingest``): the connection would go on answering from the old file,
        so readers reopen (reliability.md E6).
        """
        return self.identity is not None and _file_identity(self.path) == self.identity

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()

    # -- instances -------------------------------------------------------

    def instance(self, sop_uid: str) -> InstanceRow | None:
        """The serving copy of ``sop_uid``, or None when it is not indexed."""
        rows = self._all(
            f"SELECT {_INSTANCE_COLUMNS} FROM instances i JOIN files f ON f.id = i.file_id "
            "WHERE i.sop_uid = ? AND i.serving = 1",
            (sop_uid,),
        )
        return _instance_row(rows[0]) if rows else None

    def instances(self, sop_uids: Iterable[str]) -> dict[str, InstanceRow]:
        """Serving copies of many UIDs at once (the graph asks in bulk)."""
        wanted = list(dict.fromkeys(sop_uids))
        found: dict[str, InstanceRow] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._all(
                f"SELECT {_INSTANCE_COLUMNS} FROM instances i JOIN files f ON f.id = i.file_id "
                f"WHERE i.serving = 1 AND i.sop_uid IN ({marks})",
                chunk,
            ):
                inst = _instance_row(row)
                found[inst.sop_uid] = inst
        return found

    def _instances_where(self, where: str, params: Sequence[Any]) -> list[InstanceRow]:
        return [
            _instance_row(row)
            for row in self._all(
                f"SELECT {_INSTANCE_COLUMNS} FROM instances i JOIN files f ON f.id = i.file_id "
                f"WHERE i.serving = 1 AND {where} ORDER BY i.sop_uid",
                params,
            )
        ]

    def all_instances(self) -> list[InstanceRow]:
        return self._instances_where("1", ())

    def series_instances(self, series_uid: str) -> list[InstanceRow]:
        return self._instances_where("i.series_uid = ?", (series_uid,))

    def study_instances(self, study_uid: str) -> list[InstanceRow]:
        return self._instances_where("i.study_uid = ?", (study_uid,))

    def instances_on_frame_of_reference(self, for_uids: Iterable[str]) -> list[InstanceRow]:
        uids = sorted(set(for_uids) - {""})
        if not uids:
            return []
        return self._instances_where(f"i.for_uid IN ({','.join('?' * len(uids))})", uids)

    def plans(self) -> list[InstanceRow]:
        return self._instances_where(
            f"i.sop_class IN ({','.join('?' * len(PLAN_CLASSES))})", PLAN_CLASSES
        )

    def registrations(self) -> list[InstanceRow]:
        return self._instances_where(
            f"i.sop_class IN ({','.join('?' * len(REGISTRATION_CLASSES))})", REGISTRATION_CLASSES
        )

    def series_uids(self) -> list[str]:
        return [
            row[0]
            for row in self._all(
                "SELECT DISTINCT series_uid FROM instances WHERE serving = 1 AND series_uid != '' "
                "ORDER BY series_uid"
            )
        ]

    def study_uids(self) -> list[str]:
        return [
            row[0]
            for row in self._all(
                "SELECT DISTINCT study_uid FROM instances WHERE serving = 1 AND study_uid != '' "
                "ORDER BY study_uid"
            )
        ]

    def study_series_uids(self, study_uid: str) -> list[str]:
        return [
            row[0]
            for row in self._all(
                "SELECT DISTINCT series_uid FROM instances "
                "WHERE serving = 1 AND study_uid = ? AND series_uid != '' ORDER BY series_uid",
                (study_uid,),
            )
        ]

    def series_exists(self, series_uid: str, study_uid: str | None = None) -> bool:
        if study_uid is None:
            sql, params = "series_uid = ?", (series_uid,)
        else:
            sql, params = "series_uid = ? AND study_uid = ?", (series_uid, study_uid)  # type: ignore[assignment]
        return bool(
            self._all(f"SELECT 1 FROM instances WHERE serving = 1 AND {sql} LIMIT 1", params)
        )

    def listing(self, series_uid: str | None = None) -> list[ListingRow]:
        """Serving instances of one series (or all), with only what ``ls -l`` shows.

        The mount lists folders of thousands of files within a few times the
        cost of listing the source folder; building full InstanceRows (JSON
        per row) would take most of that budget.
        """
        where, params = ("", ()) if series_uid is None else ("AND i.series_uid = ?", (series_uid,))
        return [
            ListingRow(row[0], row[1], row[2], row[3], bool(row[4]), _file_row(row, 5))
            for row in self._all(
                "SELECT i.sop_uid, i.modality, i.study_uid, i.series_uid, i.uid_safe, "
                f"{_FILE_COLUMNS} FROM instances i JOIN files f ON f.id = i.file_id "
                f"WHERE i.serving = 1 {where} ORDER BY i.sop_uid",
                params,
            )
        ]

    # -- edges -----------------------------------------------------------

    def forward_edges(self, sop_uid: str) -> list[EdgeRow]:
        """References stored in the serving copy of ``sop_uid``, in file order."""
        return [
            _edge_row(row)
            for row in self._all(
                f"SELECT {_EDGE_COLUMNS} FROM edges e JOIN instances i ON i.file_id = e.file_id "
                "WHERE i.sop_uid = ? AND i.serving = 1 ORDER BY e.rowid",
                (sop_uid,),
            )
        ]

    def reverse_edges(self, target_uid: str) -> list[EdgeRow]:
        """Edges whose target is ``target_uid``, from serving copies only."""
        return [
            _edge_row(row)
            for row in self._all(
                f"SELECT {_EDGE_COLUMNS} FROM edges e JOIN instances i ON i.file_id = e.file_id "
                "WHERE e.target_uid = ? AND i.serving = 1 ORDER BY e.src_uid, e.rowid",
                (target_uid,),
            )
        ]

    # -- files -----------------------------------------------------------

    def file_keys(self) -> dict[str, ChangeKey]:
        """path -> ``FileStat.change_key`` of every known file: the reconcile skip key."""
        return {
            _decode_path(path): (size, mtime_ns, inode, mode & 0o7777, uid, gid)
            for path, size, mtime_ns, inode, mode, uid, gid in self._all(
                "SELECT path, size, mtime_ns, inode, mode, uid, gid FROM files"
            )
        }

    def file_state(self, path: str) -> str | None:
        rows = self._all("SELECT state FROM files WHERE path = ?", (os.fsencode(path),))
        return str(rows[0][0]) if rows else None

    def rejected(self) -> list[RejectedRow]:
        return [
            RejectedRow(path=_decode_path(path), kind=kind, reason=reason)
            for path, kind, reason in self._all(
                "SELECT path, reject_kind, reason FROM files WHERE state = 'rejected' ORDER BY path"
            )
        ]

    def conflicts(self) -> list[ConflictRow]:
        return [
            ConflictRow(
                sop_uid=row[0],
                kind=row[1],
                kept_path=_decode_path(row[2]),
                other_path=_decode_path(row[3]),
                detail=row[4],
            )
            for row in self._all(
                "SELECT c.sop_uid, c.kind, k.path, o.path, c.detail FROM conflicts c "
                "JOIN files k ON k.id = c.kept_file_id JOIN files o ON o.id = c.other_file_id "
                "ORDER BY c.sop_uid, o.path"
            )
        ]

    def meta(self, key: str) -> str | None:
        rows = self._all("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def status(self) -> IndexStatus:
        counts = dict(
            self._all(
                "SELECT 'instances', count(*) FROM instances WHERE serving = 1 "
                "UNION ALL SELECT 'files', count(*) FROM files "
                "UNION ALL SELECT 'indexed', count(*) FROM files WHERE state = 'indexed' "
                "UNION ALL SELECT 'rejected', count(*) FROM files WHERE state = 'rejected' "
                "UNION ALL SELECT 'conflicts', count(*) FROM conflicts WHERE kind = 'conflict' "
                "UNION ALL SELECT 'benign', count(*) FROM conflicts WHERE kind = 'benign' "
                "UNION ALL SELECT 'plans', count(*) FROM instances WHERE serving = 1 "
                f"AND sop_class IN ({','.join(repr(c) for c in PLAN_CLASSES)})"
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
            index_path=str(self.path),
        )

    def quick_check(self) -> str:
        return str(self._all("PRAGMA quick_check")[0][0])


class IndexWriter(IndexReader):
    """The one writer. Batches are applied in ``BEGIN IMMEDIATE`` transactions.

    Callers keep a single IndexWriter on a single thread (the ingest worker);
    readers in other threads open their own IndexReader.
    """

    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # Created 0600 before SQLite touches it: the index holds patient IDs.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        try:
            conn = sqlite3.connect(
                str(path),
                isolation_level=None,
                check_same_thread=False,
                timeout=WRITER_BUSY_TIMEOUT_MS / 1000,
            )
            conn.execute("PRAGMA journal_mode = WAL")
            # Derived data: NORMAL may lose the last commits on power loss but
            # stays consistent; the reconcile scan restores them (reliability.md E4).
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self.db = sqlite_utils.Database(conn)
            self._migrate(conn)
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(f"cannot open index {path} for writing: {exc}") from exc
        super().__init__(path, _conn=conn)
        self._lock = threading.Lock()

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        # Checked and created under one write lock: two processes creating
        # the same new index must not both insert the schema rows.
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            if "meta" in tables:
                row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if row is None or int(row[0]) != SCHEMA_VERSION:
                    raise IndexCorruptError(
                        f"index has schema version {row[0] if row else 'none'}, "
                        f"expected {SCHEMA_VERSION}: delete it and re-index"
                    )
            elif tables - {"sqlite_sequence"}:
                raise IndexCorruptError("file exists and is not a dicomfs index")
            else:
                for statement in _SCHEMA.strip().split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [("schema_version", str(SCHEMA_VERSION)), ("dicomfs_version", __version__)],
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def apply(
        self,
        results: Sequence[FileResult],
        removed: Iterable[str] = (),
        digest: DigestFunction | None = None,
    ) -> ApplyStats:
        """Write one batch: parsed files in, vanished paths out, in one transaction.

        ``results`` must be in scan order: the first copy of a UID in that
        order serves it, so re-indexing the same tree gives the same answers.
        ``digest`` hashes a source file; it is called only for files that
        share a SOP Instance UID with an already indexed file.
        """
        stats = ApplyStats()
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                for path in removed:
                    stats.removed += self._remove(os.fsencode(path), digest)
                for item in results:
                    self._store(item, digest, stats)
                conn.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (SQLITE_FULL, SQLITE_IOERR):
                # a second ROLLBACK would hide the real error behind "no transaction".
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            try:
                wal = os.path.getsize(f"{self.path}-wal")
            except OSError:
                wal = 0
            if wal > WAL_LIMIT:
                self._restart_wal()
        return stats

    def _restart_wal(self) -> None:
        """Checkpoint and restart the WAL, waiting briefly for the readers of the moment.

        Mount readers hold no transaction across calls, so a short wait lets
        each finish its statement; a reader that holds a transaction open (a
        user's sqlite3 shell) costs this batch 0.2 s, not the busy timeout.
        """
        conn = self._conn
        conn.execute("PRAGMA busy_timeout = 200")
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.execute(f"PRAGMA busy_timeout = {WRITER_BUSY_TIMEOUT_MS}")

    def _remove(self, raw_path: bytes, digest: DigestFunction | None) -> int:
        conn = self._conn
        row = conn.execute("SELECT id FROM files WHERE path = ?", (raw_path,)).fetchone()
        if row is None:
            return 0
        file_id = row[0]
        served = conn.execute(
            "SELECT sop_uid FROM instances WHERE file_id = ? AND serving = 1", (file_id,)
        ).fetchone()
        conn.execute("DELETE FROM files WHERE id = ?", (file_id,))
        if served is not None:
            self._promote(served[0], digest)
        return 1

    def _promote(self, sop_uid: str, digest: DigestFunction | None) -> None:
        """After the serving copy left, the oldest remaining copy serves the UID."""
        conn = self._conn
        row = conn.execute(
            "SELECT min(file_id) FROM instances WHERE sop_uid = ?", (sop_uid,)
        ).fetchone()
        if row is None or row[0] is None:
            return
        promoted = row[0]
        conn.execute("UPDATE instances SET serving = 1 WHERE file_id = ?", (promoted,))
        # Remaining copies are compared with the promoted one, not the one that left.
        conn.execute("DELETE FROM conflicts WHERE sop_uid = ?", (sop_uid,))
        others = conn.execute(
            "SELECT file_id FROM instances WHERE sop_uid = ? AND file_id != ? ORDER BY file_id",
            (sop_uid, promoted),
        ).fetchall()
        for (other_id,) in others:
            self._record_duplicate(sop_uid, promoted, other_id, digest, ApplyStats())

    def _store(self, item: FileResult, digest: DigestFunction | None, stats: ApplyStats) -> None:
        conn = self._conn
        st: FileStat = item.stat
        raw_path = os.fsencode(st.path)
        result = item.result
        now = time.time()
        row = conn.execute("SELECT id FROM files WHERE path = ?", (raw_path,)).fetchone()
        state = "indexed" if isinstance(result, Instance) else "rejected"
        kind = None if isinstance(result, Instance) else result.kind.value
        reason = None if isinstance(result, Instance) else result.reason
        values = (
            st.size, st.mtime_ns, st.inode, st.dev, st.uid, st.gid, st.mode,
            state, kind, reason, now,
        )  # fmt: skip
        previously_served: str | None = None
        if row is None:
            file_id = conn.execute(
                "INSERT INTO files(size, mtime_ns, inode, dev, uid, gid, mode, state, "
                "reject_kind, reason, indexed_at, path) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (*values, raw_path),
            ).lastrowid
            assert file_id is not None
        else:
            # Same path, new content: keep the file id so a rewrite in place
            # keeps its place in "first copy serves" order.
            file_id = row[0]
            old = conn.execute(
                "SELECT sop_uid, serving FROM instances WHERE file_id = ?", (file_id,)
            ).fetchone()
            if old is not None and old[1]:
                previously_served = old[0]
            conn.execute("DELETE FROM instances WHERE file_id = ?", (file_id,))
            conn.execute("DELETE FROM edges WHERE file_id = ?", (file_id,))
            conn.execute(
                "DELETE FROM conflicts WHERE other_file_id = ? OR kept_file_id = ?",
                (file_id, file_id),
            )
            conn.execute(
                "UPDATE files SET size=?, mtime_ns=?, inode=?, dev=?, uid=?, gid=?, mode=?, "
                "state=?, reject_kind=?, reason=?, indexed_at=?, digest=NULL WHERE id = ?",
                (*values, file_id),
            )
        if not isinstance(result, Instance):
            stats.rejected += 1
            if previously_served is not None:
                self._promote(previously_served, digest)
            return
        stats.indexed += 1
        self._insert_instance(file_id, result)
        if previously_served is not None and previously_served != result.sop_instance_uid:
            self._promote(previously_served, digest)
        self._settle_serving(file_id, st.path, result.sop_instance_uid, digest, stats)

    def _insert_instance(self, file_id: int, inst: Instance) -> None:
        conn = self._conn
        conn.execute(
            "INSERT INTO instances(file_id, sop_uid, serving, sop_class, modality, patient_id, "
            "study_uid, series_uid, for_uid, label, dose_summation_type, series_description, "
            "instance_number, plan_intent, transfer_syntax, uid_safe, flags) "
            "VALUES (?,?,0,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                file_id,
                inst.sop_instance_uid,
                inst.sop_class_uid,
                inst.modality,
                inst.patient_id,
                inst.study_uid,
                inst.series_uid,
                inst.frame_of_reference_uid,
                inst.label,
                inst.dose_summation_type,
                inst.series_description,
                inst.instance_number,
                inst.plan_intent,
                inst.transfer_syntax,
                int(inst.uid_is_safe),
                json.dumps(inst.flags),
            ),
        )
        if inst.edges:
            conn.executemany(
                "INSERT INTO edges(file_id, src_uid, target_uid, level, role, path, class_hint, "
                "qualifiers, study_uid, series_uid) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        file_id,
                        inst.sop_instance_uid,
                        e.target_uid,
                        e.level.value,
                        e.role.value,
                        e.path,
                        e.class_hint,
                        json.dumps(e.qualifiers),
                        e.study_uid,
                        e.series_uid,
                    )
                    for e in inst.edges
                ],
            )

    def _settle_serving(
        self,
        file_id: int,
        path: str,
        sop_uid: str,
        digest: DigestFunction | None,
        stats: ApplyStats,
    ) -> None:
        """Decide whether the new row serves its UID and record every duplicate."""
        conn = self._conn
        current = conn.execute(
            "SELECT file_id FROM instances WHERE sop_uid = ? AND serving = 1", (sop_uid,)
        ).fetchone()
        if current is not None:
            # The copy that got the UID first keeps it, whatever its file id.
            self._record_duplicate(sop_uid, current[0], file_id, digest, stats)
            return
        conn.execute("UPDATE instances SET serving = 1 WHERE file_id = ?", (file_id,))
        # A rewrite in place of the serving copy: older copies are compared anew.
        others = conn.execute(
            "SELECT file_id FROM instances WHERE sop_uid = ? AND file_id != ? ORDER BY file_id",
            (sop_uid, file_id),
        ).fetchall()
        for (other_id,) in others:
            self._record_duplicate(sop_uid, file_id, other_id, digest, stats)

    def _digest_of(self, file_id: int, digest: DigestFunction | None) -> str | None:
        """The stored digest, computed and stored on first need."""
        raw_path, stored = self._conn.execute(
            "SELECT path, digest FROM files WHERE id = ?", (file_id,)
        ).fetchone()
        if stored is not None or digest is None:
            return str(stored) if stored is not None else None
        value = digest(_decode_path(raw_path))
        if value is not None:
            self._conn.execute("UPDATE files SET digest = ? WHERE id = ?", (value, file_id))
        return value

    def _record_duplicate(
        self,
        sop_uid: str,
        kept_id: int,
        other_id: int,
        digest: DigestFunction | None,
        stats: ApplyStats,
    ) -> None:
        kept_digest = self._digest_of(kept_id, digest)
        other_digest = self._digest_of(other_id, digest)
        if other_digest is not None and other_digest == kept_digest:
            kind, detail = "benign", "identical bytes"
            stats.benign_duplicates += 1
        else:
            kind = "conflict"
            detail = "different bytes; the first indexed copy keeps serving the UID"
            stats.conflicts += 1
        self._conn.execute("DELETE FROM conflicts WHERE other_file_id = ?", (other_id,))
        self._conn.execute(
            "INSERT INTO conflicts(sop_uid, kept_file_id, other_file_id, kind, detail, seen_at) "
            "VALUES (?,?,?,?,?,?)",
            (sop_uid, kept_id, other_id, kind, detail, time.time()),
        )

    def checkpoint(self) -> None:
        """Truncate the WAL when it grew: long scans would otherwise leave it large."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
