"""What each writing batch changed, kept in the index so that readers keep what it did not touch.

A plan package costs tens of milliseconds (a dozen queries over a few
hundred members, a manifest), and ``find MNT/plans`` asks for every plan's
package. Kept per index generation alone, every package was thrown away at
each batch ingest writes, however unrelated: a live receiver writes a batch
every few seconds. Issue 13 asks for "a package computed once stays valid
until ingest changes something it depends on".

So every batch that moves the generation also writes one row here: the
generation before and after it, and the UIDs the batch touched, compressed.
For every instance row it added or removed (or whose serving copy changed),
those are its SOP Instance, SOP Class, series, study and frame of reference
UIDs and the targets of its references. Each of the index's lookups selects
rows by one of these values (``IndexReader``: by SOP Instance UID, series,
frame of reference, class, reference target), so an answer whose query
parameters share no value with a batch's set is the same before and after
that batch. A reader records the parameters of the queries behind what it
keeps (``IndexReader.recording``) and, when the generation moves, keeps it
if no batch since touched any of them (``Changes.touches``). A hit may be
false (two unrelated rows that share a series UID): that costs one
recomputation, never a stale answer.

The log is bounded (``KEPT_ROWS`` batches, ``KEPT_BYTES`` compressed): a
reader whose kept answers are older than the oldest row recomputes them, as
before. Compressed, a UID costs about 3 bytes here (measured on the scale
benchmark's UIDs), so a bulk ``dicomfs index`` adds a few bytes per
instance, dropped as the log rolls.
"""

from __future__ import annotations

import zlib
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from dicomfs.index.database import Connection

KEPT_ROWS = 1024  # batches
KEPT_BYTES = 4 << 20  # compressed: about 300,000 instances of a bulk index


def encode(values: Iterable[str]) -> bytes:
    """The set of UIDs a batch touched, as stored: sorted, newline-joined, deflated."""
    return zlib.compress("\n".join(sorted(set(values) - {""})).encode(), 1)


def decode(blob: bytes) -> frozenset[str]:
    text = zlib.decompress(blob).decode()
    return frozenset(text.split("\n")) if text else frozenset()


def record(conn: Connection, previous: int | None, generation: int, values: set[str]) -> None:
    """Log one batch (inside its transaction) and drop the oldest rows past the bounds."""
    conn.execute(
        "INSERT INTO changes(generation, previous, uids) VALUES (?, ?, ?) ON CONFLICT(generation) "
        "DO UPDATE SET previous = excluded.previous, uids = excluded.uids",
        (generation, previous, encode(values)),
    )
    total, cut = 0, None
    rows = conn.execute("SELECT generation, length(uids) FROM changes ORDER BY generation DESC")
    for count, (kept, size) in enumerate(rows):
        total += size
        if count >= KEPT_ROWS or (total > KEPT_BYTES and count > 0):
            cut = kept
            break
    if cut is not None:
        conn.execute("DELETE FROM changes WHERE generation <= ?", (cut,))


def stored_values(conn: Connection, file_id: int) -> list[str]:
    """What is logged of the instance stored for ``file_id`` (before it goes, or once promoted)."""
    row = conn.execute(
        "SELECT sop_uid, sop_class, series_uid, study_uid, for_uid FROM instances "
        "WHERE file_id = ?",
        (file_id,),
    )
    values = [str(v) for found in row for v in found if v]
    targets = conn.execute("SELECT target_uid FROM edge_rows WHERE file_id = ?", (file_id,))
    values.extend(target for (target,) in targets)
    return values


# What a kept answer depends on: the sorted hashes of its queries' UIDs (8 bytes
# each: a plan's few hundred cost a few KB), or None for "on everything".
Depends: TypeAlias = "array[int]"  # array("q")


@dataclass(slots=True)
class Recorded:
    """The hashes of the UIDs queried while recording (``IndexReader.recording``)."""

    hashes: set[int] | None  # None: a query that could depend on any row

    def note(self, params: Sequence[object]) -> None:
        """One query's parameters: its UIDs, or, with none, any row."""
        texts = [hash(p) for p in params if isinstance(p, str)]
        if texts:
            self.add(texts)
        else:
            self.everything()

    def add(self, hashes: Iterable[int]) -> None:
        if self.hashes is not None:
            self.hashes.update(hashes)

    def everything(self) -> None:
        self.hashes = None

    def merge(self, other: Recorded) -> None:
        if other.hashes is None:
            self.everything()
        else:
            self.add(other.hashes)

    @property
    def depends(self) -> Depends | None:
        return None if self.hashes is None else array("q", sorted(self.hashes))


@dataclass(frozen=True, slots=True)
class Changes:
    """The UIDs touched by every batch from one generation to another, hashed."""

    hashes: frozenset[int]

    def touches(self, depends: Depends | None) -> bool:
        """Whether these batches touched anything of ``depends`` (None: depends on all)."""
        return depends is None or not self.hashes.isdisjoint(depends)


def between(rows: Sequence[tuple[int, int | None, bytes]], old: int, new: int) -> Changes | None:
    """The batches after ``old`` up to ``new`` from ``rows`` (the log in generation order).

    None when the log does not join them without a gap: rows rolled off, an
    index rebuilt in place of the one ``old`` came from, or ``new`` not yet
    logged. A reader then recomputes what it kept.
    """
    at, hashes = old, set[int]()
    for generation, previous, blob in rows:
        if generation <= old:
            continue
        if previous != at or generation > new:
            return None
        hashes.update(map(hash, decode(blob)))
        at = generation
        if at == new:
            return Changes(frozenset(hashes))
    return Changes(frozenset()) if at == new else None
