"""Reference edges of one parsed DICOM dataset (dicom-references.md sections 2 and 3.1).

Part of the parser layer: only ``dicomfs.dicom.parse`` and ``reading`` import
this package, and it imports nothing of dicomfs but ``dicomfs.dicom.records``.
It works on pydicom's raw elements instead of ``Dataset.__getitem__`` because
that path runs conversion hooks, validation and VR correction for every
access, while an edge needs a few ASCII strings. Sequences are converted on
demand, once, and only when their raw bytes contain a tag that can carry a
reference: this keeps a CT slice (many sequences, almost no references)
nearly free.

Two passes, as the catalogue recommends: known paths per SOP class give typed
edges with roles and qualifiers; a bounded generic walk then picks up every
other referenced SOP instance, series and frame of reference.

Modules: ``tags`` (the tags and SOP classes the paths name), ``limits``
(what one object may spend, and the ``edges_capped`` flag), ``undefined``
(where an undefined-length value ends), ``raw`` (raw sequences and the
streaming item reader), ``node`` (one dataset read through its raw
elements), ``extractor`` (edge building, coverage and the generic walk), one
module per IOD family (``plans``, ``structures``, ``doses``, ``images``,
``reports``) and ``extract`` (which paths run for which SOP class).
"""

from dicomfs.dicom.references.extract import extract_edges
from dicomfs.dicom.references.extractor import MAX_WALK_DEPTH
from dicomfs.dicom.references.limits import (
    CAPPED_FLAG,
    MAX_EDGES,
    MAX_PYDICOM_BYTES,
    MAX_READ_STEPS,
    Reading,
)
from dicomfs.dicom.references.node import Node
from dicomfs.dicom.references.raw import SEQUENCE_TAGS, iter_items, keyword, read_items
from dicomfs.dicom.references.tags import (
    FOR_UID,
    RT_IMAGE,
    RT_ION_PLAN,
    RT_PLAN,
    RT_STRUCTURE_SET,
    SERIES_UID,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    STUDY_UID,
)
from dicomfs.dicom.references.undefined import FileWindow, UnusualEncoding, value_end

__all__ = [
    "CAPPED_FLAG",
    "FOR_UID",
    "MAX_EDGES",
    "MAX_PYDICOM_BYTES",
    "MAX_READ_STEPS",
    "MAX_WALK_DEPTH",
    "RT_IMAGE",
    "RT_ION_PLAN",
    "RT_PLAN",
    "RT_STRUCTURE_SET",
    "SEQUENCE_TAGS",
    "SERIES_UID",
    "SOP_CLASS_UID",
    "SOP_INSTANCE_UID",
    "STUDY_UID",
    "FileWindow",
    "Node",
    "Reading",
    "UnusualEncoding",
    "extract_edges",
    "iter_items",
    "keyword",
    "read_items",
    "value_end",
]
