"""The rows the index hands out, and the decoders that build them from SQL results.

Readers and the writer speak SQL; everything above the index speaks these
frozen dataclasses. Each ``*_COLUMNS`` list is kept here, beside the decoder
that reads its result positionally, so that a column added to one cannot be
forgotten in the other.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dicomfs.dicom.records import Edge, Level, Role
from dicomfs.index import roots

# The SOP classes the queries single out (plans view, registration lookups).
PLAN_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan
    "1.2.840.10008.5.1.4.1.1.481.8",  # RT Ion Plan
)
REGISTRATION_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.66.1",  # Spatial Registration
    "1.2.840.10008.5.1.4.1.1.66.3",  # Deformable Spatial Registration
)


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
    ctime_ns: int = 0  # the inode change time the index saw (FileStat.ctime_ns)


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
    """A file the parser refused, and why: what `dicomfs rejected` lists."""

    path: str
    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class ConflictRow:
    """A later copy of a served UID beside the copy that keeps serving it."""

    sop_uid: str
    kind: str
    kept_path: str
    other_path: str
    detail: str


@dataclass(frozen=True, slots=True)
class IndexStatus:
    """The counts `dicomfs status` prints, taken in one query."""

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
    # Objects that hit a per-object bound while parsing (reliability.md D6):
    # indexed with their first references only, flagged edges_capped.
    capped_objects: int = 0
    # Upgraded to schema 3 and not every file's details read again yet: the
    # patients/ tree answers "rebuilding" until the next scan completes.
    details_pending: bool = False

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
            "capped_objects": self.capped_objects,
            "details_pending": self.details_pending,
        }


@dataclass(slots=True)
class ApplyStats:
    """What one batch changed; the ingest layer turns this into progress output."""

    indexed: int = 0
    rejected: int = 0
    removed: int = 0
    benign_duplicates: int = 0
    conflicts: int = 0


FILE_COLUMNS = (
    "f.id, f.path, f.size, f.mtime_ns, f.inode, f.dev, f.uid, f.gid, f.mode, f.indexed_at, "
    "f.ctime_ns"
)
INSTANCE_COLUMNS = (
    "i.sop_uid, i.sop_class, i.modality, i.patient_id, i.study_uid, i.series_uid, i.for_uid, "
    "i.label, i.dose_summation_type, i.series_description, i.instance_number, i.plan_intent, "
    "i.uid_safe, i.flags, " + FILE_COLUMNS
)
# The number of one UID in ``uids``: what a query selecting a study, series or frame
# of reference compares (``i.series_id = {UID_NUMBER}``), since the UID columns of
# the ``instances`` view are lookups and have no index. NULL for a UID never seen.
UID_NUMBER = "(SELECT id FROM uids WHERE uid = ?)"
EDGE_COLUMNS = (
    "e.src_uid, e.target_uid, e.level, e.role, e.path, e.class_hint, e.qualifiers, "
    "e.study_uid, e.series_uid"
)


_EMPTY: tuple[Any, ...] = ()


def decode_path(raw: bytes | str) -> str:
    """A stored path as this host's local path (``roots``).

    Paths are stored as ``os.fsencode`` bytes so that non-UTF-8 names round-trip.
    """
    return os.fsdecode(roots.current().local(os.fsencode(raw)))


def encode_path(path: str, *, shared: bool) -> bytes:
    """A local path as the index stores it (``roots``; ``shared``: a PostgreSQL index)."""
    return roots.current().stored(os.fsencode(path), shared=shared)


def file_row(row: Sequence[Any], offset: int = 0) -> FileRow:
    """``FILE_COLUMNS`` starting at ``offset``: they follow other columns in joins."""
    raw = bytes(row[offset + 1])
    mapping = roots.current()
    return FileRow(
        file_id=row[offset],
        path=os.fsdecode(mapping.local(raw)),  # as decode_path, with the mapping at hand
        size=row[offset + 2],
        mtime_ns=row[offset + 3],
        inode=row[offset + 4],
        dev=row[offset + 5] if mapping.own_device(raw) else 0,  # else another host's numbering
        uid=row[offset + 6],
        gid=row[offset + 7],
        mode=row[offset + 8],
        indexed_at=row[offset + 9],
        ctime_ns=row[offset + 10],
    )


def instance_row(row: Sequence[Any]) -> InstanceRow:
    """A result of ``INSTANCE_COLUMNS``: instance columns, then the file's."""
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
        flags=_EMPTY if row[13] == "[]" else tuple(json.loads(row[13])),
        file=file_row(row, 14),
    )


def edge_row(row: Sequence[Any]) -> EdgeRow:
    """A result of ``EDGE_COLUMNS``; qualifiers are stored as JSON pairs."""
    # Most rows hold none: "[]" costs no JSON decoding (a plan package reads hundreds).
    qualifiers = (
        _EMPTY if row[6] == "[]" else tuple((str(k), str(v)) for k, v in json.loads(row[6]))
    )
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
