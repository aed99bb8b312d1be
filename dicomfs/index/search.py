"""Search the index the way people ask a PACS (issue 10): ``dicomfs find``.

Conventions are findscu's and Orthanc's ``/tools/find``: a query level
(patient, study, series, instance, and plan for RT), DICOM wildcards ``*``
and ``?`` in patient IDs and names, matched ignoring case, and date ranges
``YYYYMMDD-YYYYMMDD``. Free text is full-text search (FTS5, made by
sqlite-utils) over names, labels and descriptions; in a PostgreSQL index
the same terms search ``details_search`` (``fulltext``, ``postgres``).

Each search is two steps, so that a limit bounds the work and not only the
output: the distinct keys of the level (patient, study, series, or the
instance row) are read with ``SELECT DISTINCT ... LIMIT n``, which SQLite
streams and stops once ``n`` keys are found; then each key is described by
index lookups (count, modalities, and the values of its first-indexed
instance, as ``people`` does). The keys come in index order; hits are
sorted for display, and a limit keeps the first keys found, not the first
in sort order.

Query plans at a million instances (EXPLAIN QUERY PLAN, benchmark index of
4,000 patients): a patient ID is one seek of the partial index
``instances_patient``; wildcard IDs are matched in Python against the
distinct patient IDs (a skip scan: one seek per patient), then looked up the
same way (``people.patient_ids``; ``people.patients`` also reads each
patient's name and file, twice the time of the IDs alone). Free text always
drives the join (``details_fts CROSS JOIN instances``): left to itself the
planner may put instances first and run the MATCH once per row, which for a
prefix term took half a minute. When patients are known, the full-text scan
is bounded to the row range of their instances (FTS5 seeks to it). Patient
names use the full-text index too: the pattern's leading letters become an
initial-token prefix query (``patient_name : ^ "smi" *``) and the whole
wildcard is checked in Python on the distinct (patient, name) pairs found; a
pattern that starts with a wildcard is checked against all of them (a scan).
Dates, modalities and levels filter the rows found by those indexes, or scan
when nothing else narrows the search."""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dicomfs.errors import IndexUnavailableError
from dicomfs.index import fulltext
from dicomfs.index.pages import NO_LIMIT
from dicomfs.index.people import patient_exists, patient_ids
from dicomfs.index.reader import IndexReader
from dicomfs.index.rows import PLAN_CLASSES, UID_NUMBER

if TYPE_CHECKING:
    import sqlite_utils

LEVELS = ("patient", "study", "series", "instance", "plan")
DEFAULT_LEVEL = "study"  # findscu's usual query level (study root)
DEFAULT_LIMIT = 100
_DATE = re.compile(r"[0-9]{8}")

# The distinct keys of each level, read in the first step.
_KEYS = {
    "patient": "i.patient_id",
    "study": "i.patient_id, i.study_uid",
    "series": "i.patient_id, i.study_uid, i.series_uid",
}
# The instances of one key, for the second step. A unary ``+`` keeps the
# patient column from choosing the index when a study or series is narrower.
_GROUP = {
    "patient": "patient_id = ?",
    "study": f"+patient_id = ? AND study_id = {UID_NUMBER}",
    "series": f"+patient_id = ? AND study_id = {UID_NUMBER} AND series_id = {UID_NUMBER}",
}
# Instance and plan rows carry their own description: read in one step.
_ROW_COLUMNS = (
    "i.patient_id, coalesce(d.patient_name, ''), i.modality, i.sop_uid, i.study_uid, "
    "i.series_uid, coalesce(d.study_date, ''), coalesce(d.plan_date, ''), "
    "coalesce(d.plan_name, ''), "
    "i.label, i.series_description"
)


@dataclass(frozen=True, slots=True)
class Query:
    """What to look for; empty fields do not filter.

    ``patient`` and ``name`` take DICOM wildcards (``*`` any run, ``?`` one
    character) and match ignoring case. ``date_from``/``date_to`` are
    ``YYYYMMDD`` (either may be empty: an open range) on the level's date:
    the plan's date for plans (its study's when it has none), the study's
    otherwise. ``text`` is full-text search: words match whole words, a
    word ending in ``*`` matches as a prefix, ``"two words"`` as a phrase.
    ``limit`` 0 means no limit.
    """

    patient: str = ""
    name: str = ""
    date_from: str = ""
    date_to: str = ""
    modality: tuple[str, ...] = ()
    level: str = DEFAULT_LEVEL
    text: str = ""
    limit: int = DEFAULT_LIMIT


@dataclass(frozen=True, slots=True)
class Hit:
    """One patient, study, series, instance or plan found.

    ``uid`` is the hit's own UID ("" for a patient): the study, series, or
    SOP Instance UID. ``date`` is the level's date (a patient's latest
    study), ``modalities`` those of its instances, ``description`` the
    study or series description, the plan's name, or an instance's label.
    ``instances`` counts the serving instances it holds. Every value is
    read from a file: untrusted.
    """

    level: str
    patient_id: str
    patient_name: str
    date: str
    modalities: tuple[str, ...]
    description: str
    uid: str
    study_uid: str
    series_uid: str
    instances: int


def parse_date_range(text: str) -> tuple[str, str]:
    """``YYYYMMDD``, ``YYYYMMDD-YYYYMMDD``, ``YYYYMMDD-`` or ``-YYYYMMDD`` as (from, to)."""
    start, dash, end = text.strip().partition("-")
    if not dash:
        end = start
    for value in (start, end):
        if value and not _valid_date(value):
            raise ValueError(
                f"{value!r} is not a date: use YYYYMMDD, or a range YYYYMMDD-YYYYMMDD, "
                "YYYYMMDD- or -YYYYMMDD"
            )
    if not start and not end:
        raise ValueError("a date range needs at least one date (YYYYMMDD)")
    if start and end and start > end:
        raise ValueError(f"the range {text.strip()!r} ends before it starts")
    return start, end


def wildcard(pattern: str) -> re.Pattern[str]:
    """A DICOM wildcard pattern as a case-insensitive regular expression (``fullmatch``).

    ``fnmatch`` makes runs of ``*`` atomic, so no pattern backtracks
    exponentially; ``[`` is made literal, as DICOM has no character classes.
    """
    return re.compile(fnmatch.translate(pattern.replace("[", "[[]")), re.IGNORECASE)


def find(reader: IndexReader, query: Query) -> list[Hit]:
    """The hits of ``query``, sorted by patient, date and UID; at most ``query.limit``."""
    import sqlite_utils  # a tenth of a second to import: only for a search

    _check(query)
    fts: str | None
    if reader.postgres:  # sqlite-utils only quotes the terms, as for FTS5
        db, fts = sqlite_utils.Database(memory=True), fulltext.POSTGRES_TEXT
    else:
        db = sqlite_utils.Database(
            reader.connection, recursive_triggers=False, execute_plugins=False
        )
        found = db.table("details").detect_fts()
        fts = None if found is None else sqlite_utils.db.quote_identifier(found)
    search = _Search(postgres=reader.postgres)
    ids = _patient_ids(reader, query.patient)
    if ids == []:
        return []
    if query.name.strip().strip("*"):
        ids, names = _names(reader, db, fts, _clean(query.name).strip(), ids)
        search.names = names
    if ids is not None:
        if not ids:
            return []
        search.ids = ids
    if query.text:
        words = fulltext.terms(db, _clean(query.text))
        if words:
            if fts is None:
                raise IndexUnavailableError(
                    f"the index {reader.location} has no full-text table yet: "
                    "`dicomfs index` (or `dicomfs serve`) adds it"
                )
            search.text = fulltext.full_text(fts, words)
    search.modalities = sorted({m.strip().upper() for m in query.modality} - {""})
    search.dates = (query.date_from, query.date_to)
    hits = _hits(reader, search, query.level, query.limit)
    return sorted(hits, key=lambda h: (h.patient_id, h.date, h.uid, h.study_uid, h.series_uid))


# -- the search ------------------------------------------------------------------


@dataclass(slots=True)
class _Search:
    """The filters of a query once patterns are resolved, as SQL."""

    postgres: bool = False
    ids: list[str] | None = None  # None: any patient
    names: list[str] | None = None  # None: any name
    text: fulltext.FullText | None = None  # when there is free text
    modalities: list[str] | None = None
    dates: tuple[str, str] = ("", "")

    def sql(self, reader: IndexReader, level: str, columns: str) -> tuple[str, list[Any]]:
        """``SELECT columns FROM ... WHERE ...`` over serving instances ``i`` (details ``d``)."""
        where, params = ["i.serving = 1"], list[Any]()
        source = "instances i"
        if self.text is not None:
            source = self.text.source
            where.append(self.text.clause)
            params.extend(self.text.params)
            if self.ids is not None:
                where.append(f"{self.text.key} BETWEEN ? AND ?")
                params.extend(_row_range(reader, self.ids))
        member = _any if self.postgres else _member
        if self.ids is not None:
            where.append(member("i.patient_id", self.ids, params))
        if self.names is not None:
            where.append(member("d.patient_name", self.names, params))
        if self.modalities:
            where.append(member("i.modality", self.modalities, params))
        if level == "plan":
            where.append(f"i.sop_class IN ({','.join('?' * len(PLAN_CLASSES))})")
            params.extend(PLAN_CLASSES)
        start, end = self.dates
        if start or end:
            day = _date_expression(level)
            where.append(f"{day} != ''")
            if start:
                where.append(f"{day} >= ?")
                params.append(start)
            if end:
                where.append(f"{day} <= ?")
                params.append(end)
        if "d." in columns or self.names is not None or start or end:
            # LEFT: an instance whose details are not read yet (after an upgrade) is
            # still found; a filter on them leaves it out.
            source += " LEFT JOIN details d ON d.file_id = i.file_id"
        return f"SELECT {columns} FROM {source} WHERE {' AND '.join(where)}", params


def _hits(reader: IndexReader, search: _Search, level: str, limit: int) -> list[Hit]:
    bound = limit if limit > 0 else NO_LIMIT
    if level in ("instance", "plan"):
        sql, params = search.sql(reader, level, _ROW_COLUMNS)
        return [_row_hit(level, row) for row in reader.rows(f"{sql} LIMIT ?", [*params, bound])]
    sql, params = search.sql(reader, level, f"DISTINCT {_KEYS[level]}")
    keys = reader.rows(f"{sql} LIMIT ?", [*params, bound])
    hits = (_group_hit(reader, level, tuple(key)) for key in keys)
    return [hit for hit in hits if hit is not None]


def _row_hit(level: str, row: Any) -> Hit:
    patient_id, name, modality, sop_uid, study_uid, series_uid = row[:6]
    study_date, plan_date, plan_name, label, series_description = row[6:]
    if level == "plan":
        date, description = plan_date or study_date, plan_name or label
    else:
        date, description = study_date, label or series_description
    return Hit(
        level, patient_id, name, date, (modality,), description, sop_uid, study_uid, series_uid, 1
    )


def _group_hit(reader: IndexReader, level: str, key: tuple[str, ...]) -> Hit | None:
    """A patient, study or series described by its instances (None: gone since step one)."""
    date, params = "d.study_date", list(key)
    if level == "patient":  # the latest study
        date = (
            "(SELECT max(d2.study_date) FROM instance_rows i2 JOIN details d2 "
            "ON d2.file_id = i2.file_id WHERE i2.serving = 1 AND i2.patient_id = ?)"
        )
        params.insert(0, key[0])
    # PostgreSQL has no unary + on text; its planner needs no such hint.
    group, listed = (
        (_GROUP[level].replace("+", ""), "array_agg(DISTINCT modality)")
        if reader.postgres
        else (_GROUP[level], "json_group_array(DISTINCT modality)")
    )
    rows = reader.rows(
        f"SELECT g.n, g.modalities, d.patient_name, {date}, d.study_description, "
        "d.series_description FROM (SELECT min(file_id) AS first, count(*) AS n, "
        f"{listed} AS modalities FROM instances "
        f"WHERE serving = 1 AND {group}) g LEFT JOIN details d ON d.file_id = g.first",
        params,
    )
    count, modalities = rows[0][:2]
    if isinstance(modalities, str):  # SQLite's JSON; PostgreSQL gives a list
        modalities = json.loads(modalities)
    if not count:
        return None
    name, day, study_description, series_description = (value or "" for value in rows[0][2:])
    description = {"study": study_description, "series": series_description}.get(level, "")
    uid = key[-1] if level != "patient" else ""
    return Hit(
        level,
        key[0],
        name,
        day,
        tuple(sorted(str(m) for m in modalities)),
        description,
        uid,
        key[1] if len(key) > 1 else "",
        key[2] if len(key) > 2 else "",
        count,
    )


# -- resolving patterns ----------------------------------------------------------


def _patient_ids(reader: IndexReader, pattern: str) -> list[str] | None:
    """The patient IDs ``pattern`` names, or None when it names every patient.

    An ID without wildcards is one indexed lookup; when no patient has
    exactly that ID and it has letters, it is matched ignoring case like a
    pattern, against the distinct patients (one seek each).
    """
    pattern = _clean(pattern)
    if not pattern.strip("*"):
        return None
    exact = "*" not in pattern and "?" not in pattern
    if exact and (pattern.lower() == pattern.upper() or patient_exists(reader, pattern)):
        return [pattern]
    matches = wildcard(pattern).fullmatch
    return [patient_id for patient_id in patient_ids(reader) if matches(patient_id)]


def _names(
    reader: IndexReader,
    db: sqlite_utils.Database,
    fts: str | None,  # the full-text table, quoted for SQL
    pattern: str,
    ids: list[str] | None,
) -> tuple[list[str], list[str]]:
    """The patients whose name matches ``pattern``, and those names, as they are stored.

    The candidates are the distinct (patient, name) pairs of the patients
    already chosen, else those the full-text index finds from the pattern's
    leading letters, else all of them; each is checked against the whole
    pattern here.
    """
    search = _Search(postgres=reader.postgres, ids=ids)
    lead = fulltext.name_lead(pattern)
    if lead and fts is not None:
        search.text = fulltext.name_filter(fts, db, lead)
    sql, params = search.sql(reader, "instance", "DISTINCT i.patient_id, d.patient_name")
    matches = wildcard(unicodedata.normalize("NFC", pattern)).fullmatch
    rows = reader.rows(sql, params)
    found = [(pid, name) for pid, name in rows if name is not None and matches(name)]
    return sorted({pid for pid, _ in found}), sorted({name for _, name in found})


# -- helpers ---------------------------------------------------------------------


def _check(query: Query) -> None:
    if query.level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}")
    if query.limit < 0:
        raise ValueError("limit must be 0 (no limit) or more")
    for value in (query.date_from, query.date_to):
        if value and not _valid_date(value):
            raise ValueError(f"{value!r} is not a date (YYYYMMDD)")


def _valid_date(value: str) -> bool:
    if not _DATE.fullmatch(value):
        return False
    try:
        dt.datetime.strptime(value, "%Y%m%d")
    except ValueError:
        return False
    return True


def _clean(text: str) -> str:
    """User input SQLite can take: UTF-8 (undecodable bytes replaced), no control characters."""
    text = text.encode("utf-8", "replace").decode("utf-8", "replace")
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)


def _any(column: str, values: list[str], params: list[Any]) -> str:
    """``_member`` for PostgreSQL: the values as one array parameter."""
    params.append(list(values))
    return f"{column} = ANY(?)"


def _member(column: str, values: list[str], params: list[Any]) -> str:
    """``column = ?`` for one value, else membership in a JSON list (no variable limit)."""
    if len(values) == 1:
        params.append(values[0])
        return f"{column} = ?"
    params.append(json.dumps(values))
    return f"{column} IN (SELECT value FROM json_each(?))"


def _row_range(reader: IndexReader, ids: list[str]) -> tuple[int, int]:
    """The first and last row of these patients' instances: bounds their full-text scan."""
    params: list[Any] = []
    member = _any if reader.postgres else _member
    rows = reader.rows(
        "SELECT min(file_id), max(file_id) FROM instance_rows "
        f"WHERE serving = 1 AND {member('patient_id', ids, params)}",
        params,
    )
    low, high = rows[0]
    return (low, high) if low is not None else (1, 0)


def _date_expression(level: str) -> str:
    if level == "plan":
        return "(CASE WHEN d.plan_date != '' THEN d.plan_date ELSE d.study_date END)"
    return "d.study_date"
