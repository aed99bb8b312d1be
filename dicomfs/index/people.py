"""Patients, their studies, series and plans: the index as people look at it (issue 10).

The UID trees ask for one UID at a time; the human tree (``view.human``)
and ``dicomfs plans`` ask "which patients", "which studies of this patient",
"which plans". Each answer is one query over serving instances, with the
descriptive values (``details``) taken from the first-indexed instance of
each group, so that a name does not flicker between two files that
disagree. Patients are listed by a skip scan of the ``instances_patient``
index (one seek per patient, not one row per instance): at a million
instances and 4,000 patients that is the difference between a few
milliseconds and the better part of a second.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicomfs.index.reader import IndexReader
from dicomfs.index.rows import (
    FILE_COLUMNS,
    INSTANCE_COLUMNS,
    PLAN_CLASSES,
    UID_NUMBER,
    InstanceRow,
    ListingRow,
    decode_path,
    file_row,
    instance_row,
)


@dataclass(frozen=True, slots=True)
class PatientRow:
    patient_id: str
    patient_name: str  # from the patient's first-indexed instance
    # The source path of that instance: a shared mount shows the patient only
    # to users who may read it (``fuse.fs``, README "Names in paths").
    witness: str


@dataclass(frozen=True, slots=True)
class StudyRow:
    witness: str  # the source path of the study's first-indexed instance
    study_uid: str
    study_date: str
    study_time: str
    study_description: str
    accession: str


@dataclass(frozen=True, slots=True)
class SeriesRow:
    witness: str  # the source path of the series' first-indexed instance
    series_uid: str
    modality: str
    series_number: int | None
    series_description: str
    instances: int


@dataclass(frozen=True, slots=True)
class MemberRow:
    """A file of a series folder in the human tree: its listing row and instance number."""

    instance_number: int | None
    row: ListingRow


@dataclass(frozen=True, slots=True)
class PlanRow:
    """A plan with what a person recognises it by."""

    instance: InstanceRow
    patient_name: str
    plan_name: str
    plan_date: str
    plan_time: str
    approval_status: str
    review_date: str
    study_date: str
    study_description: str


_PLAN_MARKS = ",".join("?" * len(PLAN_CLASSES))
# p(id): every patient ID with a serving instance, one seek of instances_patient each.
_PATIENT_IDS = (
    "WITH RECURSIVE p(id) AS ("
    " SELECT min(patient_id) FROM instance_rows WHERE serving = 1"
    " UNION ALL SELECT (SELECT min(patient_id) FROM instance_rows"
    "  WHERE serving = 1 AND patient_id > p.id) FROM p WHERE p.id IS NOT NULL)"
)


def patient_ids(reader: IndexReader) -> list[str]:
    """Every patient ID with a serving instance, sorted: the skip scan alone (``find``)."""
    return [row[0] for row in reader.rows(f"{_PATIENT_IDS} SELECT id FROM p WHERE id IS NOT NULL")]


def patients(reader: IndexReader) -> list[PatientRow]:
    """Every patient ID with a serving instance, sorted, with its first-indexed instance's name."""
    rows = reader.rows(
        f"{_PATIENT_IDS}, first(id, file_id) AS ("
        " SELECT id, (SELECT file_id FROM instance_rows WHERE serving = 1 AND patient_id = p.id"
        "  ORDER BY file_id LIMIT 1) FROM p WHERE id IS NOT NULL"
        ") SELECT first.id, d.patient_name, f.path FROM first"
        " JOIN details d ON d.file_id = first.file_id JOIN files f ON f.id = first.file_id"
        " ORDER BY first.id"
    )
    return [PatientRow(row[0], row[1], decode_path(row[2])) for row in rows]


def patient_exists(reader: IndexReader, patient_id: str) -> bool:
    return bool(
        reader.rows(
            "SELECT 1 FROM instance_rows WHERE serving = 1 AND patient_id = ? LIMIT 1",
            (patient_id,),
        )
    )


def patient_name(reader: IndexReader, patient_id: str) -> str:
    rows = reader.rows(
        "SELECT d.patient_name FROM instances i JOIN details d ON d.file_id = i.file_id "
        "WHERE i.serving = 1 AND i.patient_id = ? ORDER BY i.file_id LIMIT 1",
        (patient_id,),
    )
    return str(rows[0][0]) if rows else ""


def studies(reader: IndexReader, patient_id: str) -> list[StudyRow]:
    """The studies of one patient, each described by its first-indexed instance.

    The first instance of each group is found first and then read: standard
    SQL, where SQLite alone would take bare columns from the row of ``min``.
    """
    rows = reader.rows(
        "SELECT g.study_uid, g.first, d.study_date, d.study_time, d.study_description, "
        "d.accession, f.path FROM (SELECT i.study_uid, min(i.file_id) AS first "
        "FROM instances i JOIN details d ON d.file_id = i.file_id "
        "WHERE i.serving = 1 AND i.patient_id = ? GROUP BY i.study_uid) g "
        "JOIN details d ON d.file_id = g.first JOIN files f ON f.id = g.first "
        "ORDER BY g.study_uid",
        (patient_id,),
    )
    return [StudyRow(decode_path(r[6]), r[0], r[2], r[3], r[4], r[5]) for r in rows]


def series(reader: IndexReader, patient_id: str, study_uid: str) -> list[SeriesRow]:
    """The series of one study of one patient (a study UID shared by two patients stays apart)."""
    rows = reader.rows(
        "SELECT g.series_uid, g.first, i.modality, d.series_number, d.series_description, "
        "g.n, f.path FROM (SELECT i.series_uid, min(i.file_id) AS first, count(*) AS n "
        "FROM instances i JOIN details d ON d.file_id = i.file_id "
        f"WHERE i.serving = 1 AND i.study_id = {UID_NUMBER} AND i.patient_id = ? "
        "GROUP BY i.series_uid) g "
        "JOIN instance_rows i ON i.file_id = g.first JOIN details d ON d.file_id = g.first "
        "JOIN files f ON f.id = g.first ORDER BY g.series_uid",
        (study_uid, patient_id),
    )
    return [SeriesRow(decode_path(r[6]), r[0], r[2], r[3], r[4], r[5]) for r in rows]


def members(
    reader: IndexReader, patient_id: str, study_uid: str, series_uid: str
) -> list[MemberRow]:
    """The instances of one series of one study of one patient, by instance number."""
    rows = reader.rows(
        "SELECT i.instance_number, i.sop_uid, i.modality, i.study_uid, i.series_uid, "
        f"i.uid_safe, {FILE_COLUMNS} FROM instances i JOIN files f ON f.id = i.file_id "
        f"WHERE i.serving = 1 AND i.series_id = {UID_NUMBER} AND i.study_id = {UID_NUMBER} "
        "AND i.patient_id = ? "
        "ORDER BY i.instance_number, i.sop_uid",
        (series_uid, study_uid, patient_id),
    )
    return [
        MemberRow(r[0], ListingRow(r[1], r[2], r[3], r[4], bool(r[5]), file_row(r, 6)))
        for r in rows
    ]


def plans(reader: IndexReader, patient_id: str | None = None) -> list[PlanRow]:
    """Plans (RT and RT Ion), of one patient or of all, with their details."""
    where, params = "", tuple(PLAN_CLASSES)
    if patient_id is not None:
        where, params = "AND i.patient_id = ? ", (*PLAN_CLASSES, patient_id)
    rows = reader.rows(
        f"SELECT {INSTANCE_COLUMNS}, d.patient_name, d.plan_name, d.plan_date, d.plan_time, "
        "d.approval_status, d.review_date, d.study_date, d.study_description "
        "FROM instances i JOIN files f ON f.id = i.file_id "
        "JOIN details d ON d.file_id = i.file_id "
        f"WHERE i.serving = 1 AND i.sop_class IN ({_PLAN_MARKS}) {where}"
        "ORDER BY i.patient_id, d.plan_date, i.label, i.sop_uid",
        params,
    )
    width = len(INSTANCE_COLUMNS.split(","))
    return [PlanRow(instance_row(r), *r[width:]) for r in rows]
