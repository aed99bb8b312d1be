"""Folders as big as the archive, read a page at a time by key (issue 13).

``by-sop/`` and ``objects/`` have one entry per instance: at ten million
files, a listing built whole costs gigabytes and minutes before the kernel
sees its first entry. These queries return the rows after a key, in key
order, ``limit`` at a time (keyset pagination on the index that serves the
order, never OFFSET), so a listing holds one page and each page is one
statement: no read transaction outlives it (reliability.md E5). Keys are
unique and ordered, so an instance added or removed between two pages
appears at most once and never breaks the listing.
"""

from __future__ import annotations

from typing import Literal

from dicomfs.index.reader import IndexReader
from dicomfs.index.rows import (
    FILE_COLUMNS,
    INSTANCE_COLUMNS,
    UID_NUMBER,
    InstanceRow,
    ListingRow,
    file_row,
    instance_row,
)

PAGE = 1000  # rows per page: a few hundred kilobytes of rows and nodes
# A LIMIT that bounds nothing, in both engines (SQLite takes -1, PostgreSQL NULL).
NO_LIMIT = 2**62


def _after(key: str | None, column: str) -> tuple[str, tuple[str, ...]]:
    return ("", ()) if key is None else (f" AND {column} > ?", (key,))


def listing_page(
    reader: IndexReader,
    after: str | None = None,
    limit: int = PAGE,
    *,
    series_uid: str | None = None,
) -> list[ListingRow]:
    """Serving instances (of one series, or all) with SOP Instance UID after ``after``.

    Only what ``ls -l`` shows: building full rows (JSON per row) would take
    most of a listing's budget.

    The limit is part of the statement's text, not a parameter: PostgreSQL
    plans a statement run often once for any parameters, and with an unknown
    limit it read a whole series' worth of the archive in SOP UID order (a
    scan of ``instances_serving``: 20-45 ms at 100,000 files) rather than
    the series by its index and a sort of its rows (0.1 ms).
    """
    where, params = _after(after, "i.sop_uid")
    if series_uid is not None:
        where, params = f"{where} AND i.series_id = {UID_NUMBER}", (*params, series_uid)
    bound = "" if limit >= NO_LIMIT else f" LIMIT {int(limit)}"
    return [
        ListingRow(row[0], row[1], row[2], row[3], bool(row[4]), file_row(row, 5))
        for row in reader.rows(
            "SELECT i.sop_uid, i.modality, i.study_uid, i.series_uid, i.uid_safe, "
            f"{FILE_COLUMNS} FROM instances i JOIN files f ON f.id = i.file_id "
            f"WHERE i.serving = 1{where} ORDER BY i.sop_uid{bound}",
            params,
        )
    ]


def instance_page(
    reader: IndexReader, after: str | None = None, limit: int = PAGE
) -> list[InstanceRow]:
    """Like ``listing_page`` over the whole index, with full rows (the part10 setting)."""
    where, params = _after(after, "i.sop_uid")
    return [
        instance_row(row)
        for row in reader.rows(
            f"SELECT {INSTANCE_COLUMNS} FROM instances i JOIN files f ON f.id = i.file_id "
            f"WHERE i.serving = 1{where} ORDER BY i.sop_uid LIMIT ?",
            (*params, limit),
        )
    ]


def uid_page(
    reader: IndexReader,
    column: Literal["series_uid", "study_uid"],
    after: str | None = None,
    limit: int = PAGE,
) -> list[str]:
    """Distinct series or study UIDs after ``after``: the UIDs in order, each with one seek.

    UIDs are stored once (``uids``, which also holds the other kind and
    frames of reference); one that no serving instance has as this kind
    costs a seek on the partial index and is passed over.
    """
    number = "series_id" if column == "series_uid" else "study_id"
    where, params = _after(after, "u.uid")
    return [
        row[0]
        for row in reader.rows(
            f"SELECT u.uid FROM uids u WHERE u.uid != ''{where} AND EXISTS ("
            f"SELECT 1 FROM instance_rows r WHERE r.serving = 1 AND r.{number} = u.id) "
            "ORDER BY u.uid LIMIT ?",
            (*params, limit),
        )
    ]


def sop_uid_page(
    reader: IndexReader, after: bytes | None = None, limit: int = PAGE
) -> list[tuple[bytes, int]]:
    """(SOP Instance UID as bytes, file id) of serving instances after ``after``.

    What a plain listing of ``by-sop/`` or ``objects/`` needs, read in the
    order of the ``instances_serving`` index with no join (SQLite 3.40 still
    reads each row: it does not take a partial index as covering), as the
    bytes the kernel is handed: a page of a ten-million-entry listing. The
    file id (the row id: read for free) numbers a ``by-sop/`` entry
    (``fuse.fsinfo.file_inode``).
    """
    # UID text as bytes and back: SQLite by CAST, PostgreSQL by its conversion functions.
    as_bytes, as_text = (
        ("convert_to(sop_uid, 'UTF8')", "convert_from(?, 'UTF8')")
        if reader.postgres
        else ("CAST(sop_uid AS BLOB)", "CAST(? AS TEXT)")
    )
    where, params = ("", ()) if after is None else (f" AND sop_uid > {as_text}", (after,))
    return reader.rows(
        f"SELECT {as_bytes}, file_id FROM instances WHERE serving = 1{where} "
        "ORDER BY sop_uid LIMIT ?",
        (*params, limit),
    )
