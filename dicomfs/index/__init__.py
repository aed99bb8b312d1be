"""The index: SQLite schema, the one writer, readers, and graph queries over them.

Owns every SQL statement (sqlite-utils). May import ``dicomfs.dicom.records``
and ``dicomfs.errors``, nothing above; everything above reads the index
through the names exported here and ``dicomfs.index.graph``.
"""

from dicomfs.index.store import (
    SCHEMA_VERSION,
    ApplyStats,
    ConflictRow,
    EdgeRow,
    FileRow,
    IndexReader,
    IndexStatus,
    IndexWriter,
    InstanceRow,
    ListingRow,
    RejectedRow,
    default_index_path,
    is_damage,
    is_disk_full,
    set_aside,
)

__all__ = [
    "SCHEMA_VERSION",
    "ApplyStats",
    "ConflictRow",
    "EdgeRow",
    "FileRow",
    "IndexReader",
    "IndexStatus",
    "IndexWriter",
    "InstanceRow",
    "ListingRow",
    "RejectedRow",
    "default_index_path",
    "is_damage",
    "is_disk_full",
    "set_aside",
]
