"""The one writer: every change to the index, one batch per transaction.

Concurrency (reliability.md E): one writer, every batch in one
``BEGIN IMMEDIATE`` transaction, so a second writer (another ``dicomfs
index``) waits instead of failing; readers open their own read-only
connections. In a PostgreSQL index the batch holds an advisory lock
instead (``postgres.lock_writers``), which serializes the writers of every
host alike. The writer also enforces the duplicate rule: the copy of a
SOP Instance UID indexed first serves it, later copies are recorded as
benign (identical bytes) or conflicts, and the oldest remaining copy is
promoted when the serving one leaves.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from dicomfs.dicom.records import FileResult, FileStat, Instance
from dicomfs.errors import IndexCorruptError
from dicomfs.index import changes, lookahead, postgres
from dicomfs.index.database import (
    default_index_path,
    is_url,
    pipeline,
    transaction,
)
from dicomfs.index.reader import IndexReader
from dicomfs.index.rows import ApplyStats, decode_path, encode_path
from dicomfs.index.schema import GENERATION, create_or_check_schema, ensure_search

# SQLite's auto-checkpoint cannot restart the WAL while readers keep reading
# (a busy mount): past this size a batch ends with a checkpoint that waits for
# the readers of the moment (reliability.md E5).
WAL_LIMIT = 64 * 1024 * 1024
# Files written before a PostgreSQL index's statistics are made again at the end of a
# scan: the planner otherwise takes a fresh index for empty and joins a package's edges
# by hashing whole tables (at 20,000 files a package took 85 to 250 ms before ANALYZE,
# 60 ms after); autovacuum would get there, later.
ANALYZE_AFTER = 1000
WRITER_BUSY_TIMEOUT_MS = 30_000

DigestFunction = Callable[[str], "str | None"]

_SET_META = (
    "INSERT INTO meta(key, value) VALUES (?, ?) "
    "ON CONFLICT(key) DO UPDATE SET value = excluded.value"
)


class IndexWriter(IndexReader):
    """The one writer. Batches are applied in ``BEGIN IMMEDIATE`` transactions.

    Callers keep a single IndexWriter on a single thread (the ingest worker);
    readers in other threads open their own IndexReader.
    """

    def __init__(self, path: Path | str) -> None:
        conn = postgres.connect_writer(str(path)) if is_url(path) else _connect_file(Path(path))
        super().__init__(path, _conn=conn)
        self._lock = threading.Lock()
        self._touched: set[str] = set()  # UIDs of what the batch being written changes
        # (table, value) -> its number (``_number``), for the batch being written: files
        # come series by series, so most rows find their three numbers here.
        # Kept for one batch only, so that a rolled-back batch leaves no
        # number behind that the table does not hold.
        self._numbers: dict[tuple[str, str], int] = {}
        self._unanalyzed = 0  # files written since PostgreSQL's last ANALYZE

    @property
    def work_folder(self) -> str:
        """Where scans spool lists too long for memory (``live.spool``): beside the index
        file, or for a database the folder an SQLite index would be in, made private."""
        if self.path is not None:
            return str(self.path.parent)
        folder = default_index_path().parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return str(folder)

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._conn.execute(_SET_META, (key, value))

    def apply(
        self,
        results: Sequence[FileResult],
        removed: Iterable[str] = (),
        digest: DigestFunction | None = None,
        stored_removed: Iterable[bytes] = (),
    ) -> ApplyStats:
        """Write one batch: parsed files in, vanished paths out, in one transaction.

        ``results`` must be in scan order: the first copy of a UID in that
        order serves it, so re-indexing the same tree gives the same answers.
        ``digest`` hashes a source file; it is called only for files that
        share a SOP Instance UID with an already indexed file.
        ``stored_removed``: paths to drop as the index stores them, which may
        be another host's (``dicomfs forget``, ``index.origins``).
        """
        stats = ApplyStats()
        with self._lock:
            conn = self._conn
            self._touched = set()  # logged with the batch (index.changes)
            self._numbers = {}
            with (
                transaction(conn, "BEGIN" if self.postgres else "BEGIN IMMEDIATE"),
                pipeline(conn),
            ):
                if self.postgres:
                    postgres.lock_writers(conn)
                for path in removed:
                    stats.removed += self._remove(encode_path(path, shared=self.postgres), digest)
                for raw_path in stored_removed:
                    stats.removed += self._remove(raw_path, digest)
                ahead = None
                if self.postgres and results:
                    ahead = lookahead.Lookahead.of_batch(conn, results, self._numbers)
                for item in results:
                    self._store(item, digest, stats, ahead)
                self._unanalyzed += len(results) + stats.removed
                if results or stats.removed:
                    previous, generation = self._next_generation()
                    changes.record(conn, previous, generation, self._touched)
            if self.path is not None and _wal_size(self.path) > WAL_LIMIT:
                self._restart_wal()
        return stats

    def _next_generation(self) -> tuple[int | None, int]:
        """Move ``GENERATION``: to the commit time in ns, or one more than before.

        A rebuilt index so never repeats a value its predecessor had: a reader
        that reopens must not take packages kept from the old one for new.
        Returns (the generation before, or None, the new one).
        """
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (GENERATION,)).fetchone()
        previous = int(row[0]) if row else None
        value = max(previous + 1 if previous is not None else 0, time.time_ns())
        self._conn.execute(_SET_META, (GENERATION, str(value)))
        return previous, value

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
            "SELECT sop_uid FROM instance_rows WHERE file_id = ? AND serving = 1", (file_id,)
        ).fetchone()
        self._touched.update(changes.stored_values(conn, file_id))
        conn.execute("DELETE FROM files WHERE id = ?", (file_id,))
        if served is not None:
            self._promote(served[0], digest)
        return 1

    def _promote(self, sop_uid: str, digest: DigestFunction | None) -> None:
        """After the serving copy left, the oldest remaining copy serves the UID."""
        conn = self._conn
        row = conn.execute(
            "SELECT min(file_id) FROM instance_rows WHERE sop_uid = ? AND serving = 0",
            (sop_uid,),
        ).fetchone()
        if row is None or row[0] is None:
            return
        promoted = row[0]
        conn.execute("UPDATE instance_rows SET serving = 1 WHERE file_id = ?", (promoted,))
        self._touched.update(changes.stored_values(conn, promoted))
        # Remaining copies are compared with the promoted one, not the one that left.
        conn.execute("DELETE FROM conflicts WHERE sop_uid = ?", (sop_uid,))
        others = conn.execute(
            "SELECT file_id FROM instance_rows WHERE sop_uid = ? AND serving = 0 AND file_id != ? "
            "ORDER BY file_id",
            (sop_uid, promoted),
        ).fetchall()
        for (other_id,) in others:
            self._record_duplicate(sop_uid, promoted, other_id, digest, ApplyStats())

    def _store(
        self,
        item: FileResult,
        digest: DigestFunction | None,
        stats: ApplyStats,
        ahead: lookahead.Lookahead | None,
    ) -> None:
        conn = self._conn
        st: FileStat = item.stat
        raw_path = encode_path(st.path, shared=self.postgres)
        result = item.result
        now = time.time()
        if ahead is None:
            row = conn.execute("SELECT id FROM files WHERE path = ?", (raw_path,)).fetchone()
        else:
            known = ahead.file_id(raw_path)
            row = None if known is None else (known,)
        state = "indexed" if isinstance(result, Instance) else "rejected"
        kind = None if isinstance(result, Instance) else result.kind.value
        reason = None if isinstance(result, Instance) else result.reason
        values = (
            st.size, st.mtime_ns, st.inode, st.dev, st.uid, st.gid, st.mode, st.ctime_ns,
            state, kind, reason, now,
        )  # fmt: skip
        previously_served: str | None = None
        if row is None:
            # An id given ahead (PostgreSQL) needs no answer: the insert is not waited for.
            given = None if ahead is None else ahead.new_file(raw_path)
            inserted = conn.execute(
                "INSERT INTO files(id, size, mtime_ns, inode, dev, uid, gid, mode, ctime_ns, "
                "state, reject_kind, reason, indexed_at, path) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
                (given, *values, raw_path),
            )
            file_id = inserted.fetchone()[0] if given is None else given
        else:
            # Same path, new content: keep the file id so a rewrite in place
            # keeps its place in "first copy serves" order.
            file_id = row[0]
            old = conn.execute(
                "SELECT sop_uid, serving FROM instance_rows WHERE file_id = ?", (file_id,)
            ).fetchone()
            if old is not None and old[1]:
                previously_served = old[0]
            self._touched.update(changes.stored_values(conn, file_id))
            conn.execute("DELETE FROM instance_rows WHERE file_id = ?", (file_id,))
            conn.execute("DELETE FROM edge_rows WHERE file_id = ?", (file_id,))
            conn.execute(
                "DELETE FROM conflicts WHERE other_file_id = ? OR kept_file_id = ?",
                (file_id, file_id),
            )
            conn.execute(
                "UPDATE files SET size=?, mtime_ns=?, inode=?, dev=?, uid=?, gid=?, mode=?, "
                "ctime_ns=?, state=?, reject_kind=?, reason=?, indexed_at=?, digest=NULL "
                "WHERE id = ?",
                (*values, file_id),
            )
        if not isinstance(result, Instance):
            stats.rejected += 1
            if previously_served is not None:
                self._promote(previously_served, digest)
            return
        stats.indexed += 1
        uid = result.sop_instance_uid
        # The usual case, a UID no other file has: it serves from its insert,
        # with no duplicate to record (one row write instead of two).
        if ahead is None:
            alone = (
                conn.execute(
                    "SELECT 1 FROM instance_rows WHERE sop_uid = ? AND serving = 1 UNION ALL "
                    "SELECT 1 FROM instance_rows WHERE sop_uid = ? AND serving = 0 LIMIT 1",
                    (uid, uid),
                ).fetchone()
                is None
            )
        else:
            alone = ahead.alone(uid)
            ahead.added(uid)
        self._insert_instance(file_id, result, serving=alone)
        if previously_served is not None and previously_served != uid:
            self._promote(previously_served, digest)
        if not alone:
            self._settle_serving(file_id, st.path, uid, digest, stats)

    def _insert_instance(self, file_id: int, inst: Instance, *, serving: bool) -> None:
        conn = self._conn
        self._touched.update(
            (
                inst.sop_instance_uid,
                inst.sop_class_uid,
                inst.series_uid,
                inst.study_uid,
                inst.frame_of_reference_uid,
            )
        )
        self._touched.update(e.target_uid for e in inst.edges)
        conn.execute(
            "INSERT INTO instance_rows(file_id, sop_uid, serving, sop_class, modality, patient_id, "
            "study_id, series_id, for_id, label, dose_summation_type, series_description, "
            "instance_number, plan_intent, transfer_syntax, uid_safe, flags) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                file_id,
                inst.sop_instance_uid,
                int(serving),
                inst.sop_class_uid,
                inst.modality,
                inst.patient_id,
                self._number(inst.study_uid),
                self._number(inst.series_uid),
                self._number(inst.frame_of_reference_uid),
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
        d = inst.details
        conn.execute(
            "INSERT INTO details(file_id, patient_name, birth_date, study_date, study_time, "
            "study_description, accession, series_number, series_date, series_description, "
            "label, manufacturer, model, plan_name, plan_date, plan_time, approval_status, "
            "review_date) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                file_id,
                d.patient_name,
                d.birth_date,
                d.study_date,
                d.study_time,
                d.study_description,
                d.accession,
                d.series_number,
                d.series_date,
                inst.series_description,
                inst.label,
                d.manufacturer,
                d.model,
                d.plan_name,
                d.plan_date,
                d.plan_time,
                d.approval_status,
                d.review_date,
            ),
        )
        if self.postgres:  # PostgreSQL's full-text rows (SQLite's come from triggers)
            others = (d.study_description, inst.series_description, inst.label, d.plan_name)
            conn.execute(
                postgres.SEARCH_INSERT, (file_id, *postgres.search_values(d.patient_name, others))
            )
        if inst.edges:
            conn.executemany(
                "INSERT INTO edge_rows(file_id, target_uid, level, role, path_id, class_hint, "
                "qualifiers, study_id, series_id) VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (
                        file_id,
                        e.target_uid,
                        e.level.value,
                        e.role.value,
                        self._number(e.path, lookahead.PATHS),
                        e.class_hint,
                        json.dumps(e.qualifiers),
                        self._number(e.study_uid),
                        self._number(e.series_uid),
                    )
                    for e in inst.edges
                ],
            )

    def _number(self, value: str, table: tuple[str, str] = lookahead.UIDS) -> int:
        """The number of a UID in ``uids`` (or of an attribute path), given on first use."""
        key = (table[0], value)
        number = self._numbers.get(key)
        if number is None:
            name, column = table
            conn = self._conn
            row = conn.execute(f"SELECT id FROM {name} WHERE {column} = ?", (value,)).fetchone()
            if row is not None:
                number = int(row[0])
            else:
                added = conn.execute(
                    f"INSERT INTO {name}({column}) VALUES (?) RETURNING id", (value,)
                ).fetchone()
                number = int(added[0])
            self._numbers[key] = number
        return number

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
            "SELECT file_id FROM instance_rows WHERE sop_uid = ? AND serving = 1", (sop_uid,)
        ).fetchone()
        if current is not None:
            # The copy that got the UID first keeps it, whatever its file id.
            self._record_duplicate(sop_uid, current[0], file_id, digest, stats)
            return
        conn.execute("UPDATE instance_rows SET serving = 1 WHERE file_id = ?", (file_id,))
        # A rewrite in place of the serving copy: older copies are compared anew.
        others = conn.execute(
            "SELECT file_id FROM instance_rows WHERE sop_uid = ? AND serving = 0 AND file_id != ? "
            "ORDER BY file_id",
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
        value = digest(decode_path(raw_path))
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
        """After a scan: truncate SQLite's WAL, which long scans leave large; have PostgreSQL
        count its rows again when the scan wrote many (``ANALYZE_AFTER``)."""
        with self._lock:
            if self.path is not None:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            elif self._unanalyzed >= ANALYZE_AFTER:
                self._conn.execute("ANALYZE")
                self._unanalyzed = 0


def _wal_size(path: Path) -> int:
    try:
        return os.path.getsize(f"{path}-wal")
    except OSError:
        return 0


def _connect_file(path: Path) -> sqlite3.Connection:
    """The writer's connection to an SQLite index, made private and in WAL mode."""
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
        create_or_check_schema(conn)
        ensure_search(conn)
    except sqlite3.DatabaseError as exc:
        raise IndexCorruptError(f"cannot open index {path} for writing: {exc}") from exc
    return conn
