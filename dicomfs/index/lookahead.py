"""What a batch's files need to know of a PostgreSQL index, asked in a few queries up front.

The writer asks for each file whether its path is indexed, whether another
file has its SOP Instance UID, and the numbers of its study, series and frame
of reference (``writer``). On SQLite each question costs microseconds; to a
database server each is a round trip (0.16 ms on loopback, more across a
network), and waiting for them made indexing into PostgreSQL about six round
trips a file. A ``Lookahead`` asks them once for the whole batch, with arrays
(``= ANY``), and hands out the ids of new files from the table's own
sequence, so that what is left for each new file is inserts whose results
nobody reads: the writer sends those in a pipeline (psycopg's pipeline mode)
and waits once.

The answers stay true for the batch: they are asked after the writers' lock
is held (no other host writes meanwhile), and the writer tells the lookahead
what it adds (``added``). What the batch removes or rewrites is not taken
back, so a UID may be reported as present when it left: that only sends the
file to the writer's duplicate rule, which asks the index itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from dicomfs.dicom.records import FileResult, Instance
from dicomfs.index.database import Connection, storable_text
from dicomfs.index.rows import encode_path

# The tables that number what many rows repeat: (table, column); schema.py.
UIDS = ("uids", "uid")
PATHS = ("edge_paths", "path")


class Lookahead:
    """One batch's answers: indexed paths, present UIDs, ids for new files."""

    def __init__(self, conn: Connection, paths: Iterable[bytes], sop_uids: Iterable[str]) -> None:
        wanted = list(dict.fromkeys(paths))
        self._file_ids: dict[bytes, int] = {
            bytes(path): int(file_id)
            for path, file_id in conn.execute(
                "SELECT path, id FROM files WHERE path = ANY(?)", (wanted,)
            )
        }
        uids = list(dict.fromkeys(storable_text(u) for u in sop_uids))
        self._present: set[str] = {
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT sop_uid FROM instance_rows WHERE sop_uid = ANY(?)", (uids,)
            )
        }
        new = sum(1 for path in wanted if path not in self._file_ids)
        # Ascending, as the rows of a first copy must be numbered in scan order.
        self._new_ids: Iterator[int] = iter(
            sorted(
                int(row[0])
                for row in conn.execute(
                    "SELECT nextval(pg_get_serial_sequence('files', 'id')) "
                    "FROM generate_series(1, ?)",
                    (new,),
                )
            )
        )

    @classmethod
    def of_batch(
        cls, conn: Connection, results: Sequence[FileResult], numbered: dict[tuple[str, str], int]
    ) -> Lookahead:
        """Ask for ``results``; the numbers of their UIDs and attribute paths go to ``numbered``
        (the writer's, keyed by (table, value))."""
        instances = [r.result for r in results if isinstance(r.result, Instance)]
        uids = {u for i in instances for u in (i.study_uid, i.series_uid, i.frame_of_reference_uid)}
        uids.update(u for i in instances for e in i.edges for u in (e.study_uid, e.series_uid))
        paths = {e.path for i in instances for e in i.edges}
        for (table, column), values in ((UIDS, uids), (PATHS, paths)):
            found = numbers(conn, table, column, values)
            numbered.update(((table, value), n) for value, n in found.items())
        return cls(
            conn,
            (encode_path(r.stat.path, shared=True) for r in results),
            (i.sop_instance_uid for i in instances),
        )

    def file_id(self, path: bytes) -> int | None:
        """The id of the indexed file at ``path``, or None."""
        return self._file_ids.get(path)

    def new_file(self, path: bytes) -> int:
        """An id for the file at ``path``, which is not indexed yet; remembered."""
        file_id = next(self._new_ids)
        self._file_ids[path] = file_id
        return file_id

    def alone(self, sop_uid: str) -> bool:
        """True when no row has ``sop_uid`` (no copy to weigh against)."""
        return storable_text(sop_uid) not in self._present

    def added(self, sop_uid: str) -> None:
        """A row with ``sop_uid`` was written in this batch."""
        self._present.add(storable_text(sop_uid))


def numbers(conn: Connection, table: str, column: str, values: Iterable[str]) -> dict[str, int]:
    """The numbers already given to ``values`` in ``table`` (``uids``, ``edge_paths``)."""
    by_stored = {storable_text(v): v for v in values}
    found = conn.execute(
        f"SELECT {column}, id FROM {table} WHERE {column} = ANY(?)", (list(by_stored),)
    )
    return {by_stored[value]: int(number) for value, number in found if value in by_stored}
