"""The index's tables: the DDL, its version, and the check every connection makes on opening.

One place says what is in an index file so that readers and the writer
agree on it; a file with another schema version, or one that is not a
dicomfs index at all, is refused rather than half-read. The writer
upgrades an older schema in place with the steps in ``MIGRATIONS`` (each
one transaction); readers, which never write, ask for that upgrade. A
schema newer than this dicomfs knows is refused: the index is a cache of
the source folders, so "delete it and re-index" is always a way out.

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
  ``OverwriteInstances=false``). The serving copy of a UID is found by the
  unique ``instances_serving`` index, the other copies by
  ``instances_copies``, which holds only them (schema 4: the UID is no
  longer indexed twice for every instance, 65 bytes each; issue 13).
  ``instances`` is a view: the rows are stored in ``instance_rows``, where
  the study, series and frame of reference UIDs are numbers into ``uids``
  (schema 7). A million instances share a few ten thousand of those UIDs;
  spelled out in every row and in the three indexes that find a series, a
  study or a frame of reference, they cost 300 bytes per instance. The
  view spells them out again, and a query that selects by UID compares
  the number (``rows.UID_NUMBER``): the view's UID columns have no index.
  The writer writes ``instance_rows``, and queries that need no UID
  spelled out read it: SQLite leaves an unused join out of a plain
  query but not out of an aggregate (the patient list took twice as long
  through the view). A UID stays in ``uids`` once seen (one row per study,
  series or frame ever indexed).
- ``edges``: the references stored in each indexed file (per file, so a
  promoted duplicate brings its own edges). Also a view, of ``edge_rows``:
  the source UID is the file's own (``instance_rows``), the attribute path
  a number into ``edge_paths`` (a structure set's 250 slices have 250
  paths of 146 characters, the same in every structure set), the study
  and series numbers into ``uids``. 205 -> 57 bytes per instance on the
  scale benchmark.
- ``conflicts``: each later copy of a served UID, ``benign`` when the bytes
  are identical, ``conflict`` when they differ.
- ``details``: what people search and name things by (``records.Details``),
  one row per instance row, apart so that the graph and the UID trees never
  read it. ``details_fts`` is its full-text index (FTS5, made and kept in
  step by sqlite-utils' ``enable_fts`` triggers) over names, labels and
  descriptions, for ``dicomfs find``.
- ``changes``: what each writing batch touched, by UID, a bounded log
  (``index.changes``): the view keeps a plan package until a batch touches
  something it was computed from.

Upgrades: 1 -> 2 adds the inode change time; 2 -> 3 adds ``details``;
3 -> 4 drops the index of every copy's UID for one of the later copies only;
4 -> 5 adds ``changes``, empty; 5 -> 6 adds the partial index
``instances_capped`` (one read of the table when it is made); 6 -> 7
stores the study, series and frame UIDs, and the edges' attribute paths,
once (each table is renamed, numbered and its text columns dropped: it
keeps its rows and file ids; 17 s at a million instances, 7.5 min at ten
million with a write-ahead log of 60% of the file meanwhile; the file
keeps its size, the freed pages are reused). The details
of an indexed file can only be had by reading it again, so the 2 -> 3
upgrade clears every stored change key (the next scan re-parses each file
once, with its progress bar) and sets ``details_pending`` until that scan
completes: the human tree answers "rebuilding" meanwhile instead of
showing placeholders where names will be. 7 -> 8 changes nothing in a
SQLite file; it is the first step a PostgreSQL index takes (its views).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dicomfs import __version__
from dicomfs.dicom.records import EDGES_CAPPED
from dicomfs.errors import IndexCorruptError
from dicomfs.index.database import Connection, errors, transaction

SCHEMA_VERSION = 8
# Meta key moved by every batch that writes anything (``IndexWriter.apply``):
# what the view keeps (plan packages) is valid while it stays the same.
GENERATION = "generation"
DETAILS_PENDING = "details_pending"
# The columns of ``details`` that ``details_fts`` indexes.
SEARCH_COLUMNS = ("patient_name", "study_description", "series_description", "label", "plan_name")

# from version -> the statements that bring an index to version + 1.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 2: the inode change time joins the change key (reliability.md C7).
    # Existing rows get 0, which no file has, so the next scan re-parses
    # every file once and records its real ctime.
    1: ("ALTER TABLE files ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT 0",),
    # 3: the details people name and search things by (issue 10). The
    # table and index come from DDL (IF NOT EXISTS); every file is read again.
    2: (
        "UPDATE files SET ctime_ns = 0",
        f"INSERT OR REPLACE INTO meta(key, value) VALUES ('{DETAILS_PENDING}', '1')",
    ),
    # 4: later copies of a UID get their own small index (made from the DDL);
    # the index of every row's UID, which the serving one repeated, goes.
    3: ("DROP INDEX IF EXISTS instances_sop",),
    # 5: the log of what each batch changed (``changes``, made from the DDL).
    # It starts empty: what readers kept before is computed again once.
    4: (),
    # 6: the objects whose references were capped get a partial index (from
    # the DDL): counting them for ``status`` read every row, 3 s at 10M.
    5: (),
    # 7: study, series and frame of reference UIDs are stored once, in ``uids``,
    # and rows refer to them by number (issue 13: 300 bytes less per instance),
    # edges their attribute paths too. Each table keeps its rows and file ids.
    6: (
        "CREATE TABLE IF NOT EXISTS uids (id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE)",
        "INSERT OR IGNORE INTO uids(uid) SELECT study_uid FROM instances "
        "UNION SELECT series_uid FROM instances UNION SELECT for_uid FROM instances",
        "DROP INDEX IF EXISTS instances_series",
        "DROP INDEX IF EXISTS instances_study",
        "DROP INDEX IF EXISTS instances_for",
        # Foreign keys that name the table (details) follow the new name.
        "ALTER TABLE instances RENAME TO instance_rows",
        *(
            f"ALTER TABLE instance_rows ADD COLUMN {kind}_id INTEGER NOT NULL DEFAULT 0"
            for kind in ("study", "series", "for")
        ),
        "UPDATE instance_rows SET "
        "study_id = (SELECT id FROM uids WHERE uid = study_uid), "
        "series_id = (SELECT id FROM uids WHERE uid = series_uid), "
        "for_id = (SELECT id FROM uids WHERE uid = for_uid)",
        *(
            f"ALTER TABLE instance_rows DROP COLUMN {kind}_uid"
            for kind in ("study", "series", "for")
        ),
        # Edges: the source UID is the row's own; paths, studies and series by number.
        "CREATE TABLE IF NOT EXISTS edge_paths (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE)",
        "INSERT INTO edge_paths(path) SELECT DISTINCT path FROM edges",
        "INSERT OR IGNORE INTO uids(uid) SELECT study_uid FROM edges "
        "UNION SELECT series_uid FROM edges",
        "ALTER TABLE edges RENAME TO edge_rows",
        *(
            f"ALTER TABLE edge_rows ADD COLUMN {kind}_id INTEGER NOT NULL DEFAULT 0"
            for kind in ("path", "study", "series")
        ),
        "UPDATE edge_rows SET "
        "path_id = (SELECT p.id FROM edge_paths p WHERE p.path = edge_rows.path), "
        "study_id = (SELECT id FROM uids WHERE uid = study_uid), "
        "series_id = (SELECT id FROM uids WHERE uid = series_uid)",
        *(
            f"ALTER TABLE edge_rows DROP COLUMN {column}"
            for column in ("src_uid", "path", "study_uid", "series_uid")
        ),
    ),
    # 8: PostgreSQL's views spell UIDs out by a keyed lookup per row
    # (``postgres.VIEWS``), made again from its DDL; SQLite's are unchanged.
    # From here on, steps are SQL both engines run: PostgreSQL starts at 7.
    7: (),
}
# The first version a PostgreSQL index can have: its upgrades are the steps from here.
FIRST_SHARED_VERSION = 7

# The serving objects a per-object bound cut short (``records.EDGES_CAPPED``
# in their flags): the WHERE of the partial index ``instances_capped`` and of
# the status count, written once so that SQLite sees the same terms and uses
# the index (a partial index serves only a query that repeats its WHERE).
CAPPED_WHERE = f"serving = 1 AND instr(flags, '\"{EDGES_CAPPED}:') > 0"

DDL = f"""
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
    ctime_ns INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    reject_kind TEXT,
    reason TEXT,
    digest TEXT,
    indexed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_state ON files(state);
CREATE TABLE IF NOT EXISTS uids (id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS instance_rows (
    file_id INTEGER PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE,
    sop_uid TEXT NOT NULL,
    serving INTEGER NOT NULL DEFAULT 0,
    sop_class TEXT NOT NULL,
    modality TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    label TEXT NOT NULL,
    dose_summation_type TEXT NOT NULL,
    series_description TEXT NOT NULL,
    instance_number INTEGER,
    plan_intent TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    uid_safe INTEGER NOT NULL,
    flags TEXT NOT NULL,
    study_id INTEGER NOT NULL DEFAULT 0,
    series_id INTEGER NOT NULL DEFAULT 0,
    for_id INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS instances_copies ON instance_rows(sop_uid, file_id) WHERE serving = 0;
CREATE UNIQUE INDEX IF NOT EXISTS instances_serving ON instance_rows(sop_uid) WHERE serving = 1;
CREATE INDEX IF NOT EXISTS instances_series_id ON instance_rows(series_id) WHERE serving = 1;
CREATE INDEX IF NOT EXISTS instances_study_id ON instance_rows(study_id) WHERE serving = 1;
CREATE INDEX IF NOT EXISTS instances_for_id ON instance_rows(for_id) WHERE serving = 1;
CREATE INDEX IF NOT EXISTS instances_class ON instance_rows(sop_class) WHERE serving = 1;
-- What every query reads: the rows with their UIDs spelled out. LEFT JOINs on
-- the key, so that SQLite leaves out the lookups of the UIDs a query does not
-- use, and turns them into plain joins where a WHERE names one.
CREATE VIEW IF NOT EXISTS instances AS SELECT
    r.file_id, r.sop_uid, r.serving, r.sop_class, r.modality, r.patient_id,
    study.uid AS study_uid, series.uid AS series_uid, frame.uid AS for_uid,
    r.label, r.dose_summation_type, r.series_description, r.instance_number,
    r.plan_intent, r.transfer_syntax, r.uid_safe, r.flags,
    r.study_id, r.series_id, r.for_id
    FROM instance_rows r
    LEFT JOIN uids study ON study.id = r.study_id
    LEFT JOIN uids series ON series.id = r.series_id
    LEFT JOIN uids frame ON frame.id = r.for_id;
CREATE TABLE IF NOT EXISTS edge_paths (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS edge_rows (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    target_uid TEXT NOT NULL,
    level TEXT NOT NULL,
    role TEXT NOT NULL,
    class_hint TEXT NOT NULL,
    qualifiers TEXT NOT NULL,
    path_id INTEGER NOT NULL DEFAULT 0,
    study_id INTEGER NOT NULL DEFAULT 0,
    series_id INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS edges_file ON edge_rows(file_id);
CREATE INDEX IF NOT EXISTS edges_target ON edge_rows(target_uid);
-- The source is the SOP Instance UID of the file's row, attribute paths,
-- studies and series are numbers. edge_id keeps the order of the file.
CREATE VIEW IF NOT EXISTS edges AS SELECT
    r.rowid AS edge_id, r.file_id, src.sop_uid AS src_uid, r.target_uid, r.level, r.role,
    p.path, r.class_hint, r.qualifiers, study.uid AS study_uid, series.uid AS series_uid
    FROM edge_rows r
    LEFT JOIN instance_rows src ON src.file_id = r.file_id
    LEFT JOIN edge_paths p ON p.id = r.path_id
    LEFT JOIN uids study ON study.id = r.study_id
    LEFT JOIN uids series ON series.id = r.series_id;
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
CREATE INDEX IF NOT EXISTS instances_patient ON instance_rows(patient_id) WHERE serving = 1;
CREATE INDEX IF NOT EXISTS instances_capped ON instance_rows(file_id) WHERE {CAPPED_WHERE};
CREATE TABLE IF NOT EXISTS details (
    file_id INTEGER PRIMARY KEY REFERENCES instance_rows(file_id) ON DELETE CASCADE,
    patient_name TEXT NOT NULL,
    birth_date TEXT NOT NULL,
    study_date TEXT NOT NULL,
    study_time TEXT NOT NULL,
    study_description TEXT NOT NULL,
    accession TEXT NOT NULL,
    series_number INTEGER,
    series_date TEXT NOT NULL,
    series_description TEXT NOT NULL,
    label TEXT NOT NULL,
    manufacturer TEXT NOT NULL,
    model TEXT NOT NULL,
    plan_name TEXT NOT NULL,
    plan_date TEXT NOT NULL,
    plan_time TEXT NOT NULL,
    approval_status TEXT NOT NULL,
    review_date TEXT NOT NULL
);
-- find --date: a range seek instead of a scan of every instance (bench/human_bench.py:
-- 242 -> 13 ms p50 at a million instances, for 17 bytes per instance).
CREATE INDEX IF NOT EXISTS details_study_date ON details(study_date);
CREATE TABLE IF NOT EXISTS changes (
    generation INTEGER PRIMARY KEY,
    previous INTEGER,
    uids BLOB NOT NULL
);
"""


def _create_tables(conn: sqlite3.Connection) -> None:
    for statement in DDL.strip().split(";"):
        if statement.strip():
            conn.execute(statement)


def ensure_search(conn: sqlite3.Connection) -> None:
    """Give ``details`` its full-text index, once; a no-op when it is already there.

    sqlite-utils' ``enable_fts`` runs scripts, which commit, so it cannot be
    part of the schema transaction: the writer calls this right after. If
    the process dies in between, the next writer makes the index and fills
    it from the rows already stored.
    """
    found = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'details_fts'"
    if conn.execute(found).fetchone() is not None:
        return
    import sqlite_utils  # a tenth of a second to import: only to make the index

    sqlite_utils.Database(conn).table("details").enable_fts(
        list(SEARCH_COLUMNS),
        fts_version="FTS5",
        create_triggers=True,
        tokenize="unicode61 remove_diacritics 2",
    )


def check_schema(conn: Connection, path: Path | str) -> None:
    """Refuse a file a reader cannot trust: not an index, or another schema version.

    Readers never create anything (their connection is read-only), so all
    they can do is say clearly what is wrong and what to do about it.
    """
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except errors() as exc:
        raise IndexCorruptError(f"{path} is not a dicomfs index ({exc})") from exc
    if row is None or int(row[0]) != SCHEMA_VERSION:
        found = row[0] if row else "none"
        if row is not None and int(row[0]) in MIGRATIONS:
            raise IndexCorruptError(
                f"{path} has schema version {found}, this dicomfs needs {SCHEMA_VERSION}: "
                "run `dicomfs index` (or `dicomfs serve`) once to upgrade it"
            )
        raise IndexCorruptError(
            f"{path} has schema version {found}, this dicomfs needs {SCHEMA_VERSION}: "
            "delete it and re-index (the index is a cache of the source folders)"
        )


def create_or_check_schema(conn: sqlite3.Connection) -> None:
    """Give an empty file the schema, or check the one it has; for the writer.

    Checked and created under one write lock: two processes creating the
    same new index must not both insert the schema rows. A file with other
    tables is someone else's database and is left alone.
    """
    with transaction(conn, "BEGIN IMMEDIATE"):
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if "meta" in tables:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = upgrade(conn, int(row[0])) if row is not None else None
            if version == SCHEMA_VERSION:
                _create_tables(conn)  # what the upgrades added
            if version != SCHEMA_VERSION:
                raise IndexCorruptError(
                    f"index has schema version {row[0] if row else 'none'}, "
                    f"expected {SCHEMA_VERSION}: delete it and re-index"
                )
        elif tables - {"sqlite_sequence"}:
            raise IndexCorruptError("file exists and is not a dicomfs index")
        else:
            _create_tables(conn)
            insert_meta(conn)


def upgrade(conn: Connection, version: int) -> int:
    """Run the ``MIGRATIONS`` steps from ``version`` on, in the caller's transaction; the
    version reached. For both engines: the SQLite writer from any version, PostgreSQL's
    from ``FIRST_SHARED_VERSION``; each makes its DDL again afterwards."""
    while version in MIGRATIONS:
        for statement in MIGRATIONS[version]:
            conn.execute(statement)
        version += 1
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    return version


def insert_meta(conn: Connection) -> None:
    """The first rows of a new index: its schema version and the dicomfs that made it."""
    conn.executemany(
        "INSERT INTO meta(key, value) VALUES (?, ?)",
        [("schema_version", str(SCHEMA_VERSION)), ("dicomfs_version", __version__)],
    )
