"""Older index layouts, made from a current index, for the upgrade tests.

Each upgrade test starts from an index that an older dicomfs wrote. The
older layouts are written down here (frozen: schema.py only knows the
current one), and a current index is turned back into them in place, with
its rows, so that the upgrade has real data to carry.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

# Schema 6 kept the study, series and frame UIDs in every instance row, with
# an index on each, and every edge its source UID, attribute path, study and
# series written out (schema 7 numbers them in ``uids`` and ``edge_paths``).
_UID_KINDS = ("study", "series", "for")
_EDGE_VALUES = {
    "src_uid": "(SELECT sop_uid FROM instances i WHERE i.file_id = edges.file_id)",
    "path": "(SELECT path FROM edge_paths p WHERE p.id = edges.path_id)",
    "study_uid": "(SELECT uid FROM uids WHERE id = edges.study_id)",
    "series_uid": "(SELECT uid FROM uids WHERE id = edges.series_id)",
}


def downgrade_to_schema_6(index: Path) -> None:
    """Make ``index`` what dicomfs wrote at schema 6: tables with their UIDs spelled out."""
    conn = sqlite3.connect(index)
    try:
        conn.execute("DROP VIEW edges")
        conn.execute("DROP VIEW instances")
        conn.execute("ALTER TABLE instance_rows RENAME TO instances")
        for kind in _UID_KINDS:
            conn.execute(f"ALTER TABLE instances ADD COLUMN {kind}_uid TEXT NOT NULL DEFAULT ''")
            conn.execute(
                f"UPDATE instances SET {kind}_uid = (SELECT uid FROM uids WHERE id = {kind}_id)"
            )
            conn.execute(f"DROP INDEX instances_{kind}_id")
            conn.execute(f"ALTER TABLE instances DROP COLUMN {kind}_id")
            conn.execute(
                f"CREATE INDEX instances_{kind} ON instances({kind}_uid) WHERE serving = 1"
            )
        conn.execute("ALTER TABLE edge_rows RENAME TO edges")
        for column, value in _EDGE_VALUES.items():
            conn.execute(f"ALTER TABLE edges ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
            conn.execute(f"UPDATE edges SET {column} = {value}")
        for column in ("path_id", "study_id", "series_id"):
            conn.execute(f"ALTER TABLE edges DROP COLUMN {column}")
        conn.execute("DROP TABLE edge_paths")
        conn.execute("DROP TABLE uids")
        conn.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
        conn.commit()
    finally:
        conn.close()


# Schema 7 gave PostgreSQL SQLite's views, joins and all (schema 8 gives it its own).
_PG_SCHEMA_7_VIEWS = (
    """CREATE OR REPLACE VIEW instances AS SELECT
    r.file_id, r.sop_uid, r.serving, r.sop_class, r.modality, r.patient_id,
    study.uid AS study_uid, series.uid AS series_uid, frame.uid AS for_uid,
    r.label, r.dose_summation_type, r.series_description, r.instance_number,
    r.plan_intent, r.transfer_syntax, r.uid_safe, r.flags,
    r.study_id, r.series_id, r.for_id
    FROM instance_rows r
    LEFT JOIN uids study ON study.id = r.study_id
    LEFT JOIN uids series ON series.id = r.series_id
    LEFT JOIN uids frame ON frame.id = r.for_id""",
    """CREATE OR REPLACE VIEW edges AS SELECT
    r.id AS edge_id, r.file_id, src.sop_uid AS src_uid, r.target_uid, r.level, r.role,
    p.path, r.class_hint, r.qualifiers, study.uid AS study_uid, series.uid AS series_uid
    FROM edge_rows r
    LEFT JOIN instance_rows src ON src.file_id = r.file_id
    LEFT JOIN edge_paths p ON p.id = r.path_id
    LEFT JOIN uids study ON study.id = r.study_id
    LEFT JOIN uids series ON series.id = r.series_id""",
)


def downgrade_postgres_to_schema_7(url: str) -> None:
    """Make the database at ``url`` what dicomfs wrote at schema 7, its rows kept."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        for view in _PG_SCHEMA_7_VIEWS:
            conn.execute(view)
        conn.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
