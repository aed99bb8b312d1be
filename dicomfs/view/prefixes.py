"""The part10 prefix of an index row, also for rows that lack what it is made from.

With the ``part10`` setting a file written without a PS3.10 header is served
with one in front (``dicom.part10``), made from the instance's SOP Class UID,
SOP Instance UID and parser flags: never from a read of the file, so
``stat`` and listings know the size at once. A full ``InstanceRow`` has all
three. A ``ListingRow`` (what ``ls -l`` needs, the rows of ``patients/``
folders) has neither class nor flags, and one query per listed file would
make a folder of a thousand slices cost a thousand queries; so the prefixes
of a whole series are looked up at once and kept.

A kept prefix is used only for exactly the file row it was made for (same
path, inode, size, times, and the same moment the index wrote the row): a
file indexed again after it was kept is looked up again, so what is kept is
never stale, whatever the view's cache TTL. Only the last ``SERIES_KEPT``
series are kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from dicomfs.dicom import part10
from dicomfs.index import FileRow, IndexReader, InstanceRow, ListingRow
from dicomfs.index.pages import NO_LIMIT, listing_page

SERIES_KEPT = 64

_Kept = dict[str, tuple[FileRow, bytes]]  # SOP Instance UID -> (its file row, its prefix)


def rows_to_list(
    reader: IndexReader, series_uid: str, *, full: bool
) -> list[InstanceRow] | list[ListingRow]:
    """The serving instances of one series, by SOP Instance UID, as a folder lists them.

    (The whole index is listed a page at a time: ``view.pages``.)

    ``full`` (the part10 setting): whole rows, which carry what each file's
    prefix is made from, at the cost of decoding every row's flags.
    """
    if not full:
        return listing_page(reader, series_uid=series_uid, limit=NO_LIMIT)
    return reader.series_instances(series_uid)


def prefix_of(inst: InstanceRow) -> bytes:
    """The bytes served before the file of ``inst``: b"" for a file that is PS3.10 already."""
    return part10.prefix(inst.sop_class, inst.sop_uid, inst.flags)


class Prefixes:
    """Prefixes of index rows; safe to share between threads."""

    def __init__(self) -> None:
        self._series: OrderedDict[str, _Kept] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, reader: IndexReader, row: InstanceRow | ListingRow) -> bytes:
        if isinstance(row, InstanceRow):
            return prefix_of(row)
        kept = self._kept(row)
        if kept is None:
            self._load(reader, row.series_uid)
            kept = self._kept(row)
        # Still none: the index changed between the two queries; the file is
        # served as it is, and opening it will find out whether it changed.
        return b"" if kept is None else kept

    def _kept(self, row: ListingRow) -> bytes | None:
        with self._lock:
            series = self._series.get(row.series_uid)
            if series is None:
                return None
            self._series.move_to_end(row.series_uid)
            entry = series.get(row.sop_uid)
        if entry is None or entry[0] != row.file:
            return None
        return entry[1]

    def _load(self, reader: IndexReader, series_uid: str) -> None:
        kept = {i.sop_uid: (i.file, prefix_of(i)) for i in reader.series_instances(series_uid)}
        with self._lock:
            self._series[series_uid] = kept
            self._series.move_to_end(series_uid)
            while len(self._series) > SERIES_KEPT:
                self._series.popitem(last=False)
