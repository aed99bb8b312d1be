"""The index: SQLite schema, the one writer, readers, and graph queries over them.

Owns every SQL statement (sqlite-utils): ``schema`` (tables and their
check), ``rows`` (what queries return), ``reader``, ``writer`` and
``recovery`` (the index file: default place, damage, setting aside),
``changes`` (what each batch touched). May
import ``dicomfs.dicom.records`` and ``dicomfs.errors``, nothing above;
everything above reads the index through the names exported here and
``dicomfs.index.graph``.
"""

from dicomfs.index.changes import Changes, Depends
from dicomfs.index.database import as_target, default_index_path, is_unreachable, is_url, shown
from dicomfs.index.database import errors as index_errors
from dicomfs.index.reader import IndexReader
from dicomfs.index.recovery import is_damage, is_disk_full, set_aside
from dicomfs.index.rows import (
    ApplyStats,
    ConflictRow,
    EdgeRow,
    FileRow,
    IndexStatus,
    InstanceRow,
    ListingRow,
    RejectedRow,
)
from dicomfs.index.schema import SCHEMA_VERSION
from dicomfs.index.writer import IndexWriter

__all__ = [
    "SCHEMA_VERSION",
    "ApplyStats",
    "Changes",
    "ConflictRow",
    "Depends",
    "EdgeRow",
    "FileRow",
    "IndexReader",
    "IndexStatus",
    "IndexWriter",
    "InstanceRow",
    "ListingRow",
    "RejectedRow",
    "as_target",
    "default_index_path",
    "index_errors",
    "is_damage",
    "is_disk_full",
    "is_unreachable",
    "is_url",
    "set_aside",
    "shown",
]
