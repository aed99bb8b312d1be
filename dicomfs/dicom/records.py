"""Plain records passed between the parser, the index, the graph and the view.

They live in their own module so that every layer can share them without
importing pydicom, SQL or FUSE: the parser produces them, the index stores
and returns them, the graph and the view read them. No I/O happens here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from enum import StrEnum

# PS3.5 9.1: components are "0" or digits without a leading zero, at most
# 64 characters in all. Only UIDs that match may ever become a path name.
UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
UID_MAX_LENGTH = 64


class Record:
    """Base of the records a parse worker sends back: pickled as their fields, in order.

    A dataclass with slots pickles its fields by name, and a frozen one
    sets them back one by one in Python (``__setstate__``). Every parsed
    file crosses a process boundary; as the class and its positional
    values a result pickles in 13 us instead of 20 and loads in 18 us
    instead of 33, in 680 bytes instead of 930 (a CT slice of the scale
    benchmark), and the loading is done by the one process that also
    writes the index.
    """

    __slots__ = ()
    __match_args__: tuple[str, ...] = ()  # the dataclass sets it: the __init__ order

    def __reduce__(self) -> tuple[type[Record], tuple[object, ...]]:
        return type(self), tuple([getattr(self, name) for name in self.__match_args__])


def clean_uid(value: object) -> str:
    """Strip the NUL/space padding writers leave on UI values (PS3.5 6.2)."""
    if value is None:
        return ""
    return str(value).rstrip("\x00 ").lstrip(" ")


def is_safe_uid(uid: str) -> bool:
    """True when ``uid`` may be used as a file or folder name in the mount.

    The grammar excludes ``/``, NUL, ``.`` and ``..`` by construction, so a
    name built from a safe UID can never leave its folder (reliability.md C1).
    """
    return 0 < len(uid) <= UID_MAX_LENGTH and UID_PATTERN.fullmatch(uid) is not None


class Level(StrEnum):
    """What kind of thing an edge points at."""

    INSTANCE = "instance"
    SERIES = "series"
    STUDY = "study"
    FRAME_OF_REFERENCE = "frame_of_reference"


class Role(StrEnum):
    """Why the source object names the target (dicom-references.md section 1)."""

    STRUCTURE_SET = "structure_set"  # plan -> RS; dose (DVH) -> RS
    DOSE = "dose"  # plan -> dose (plan / fraction group / beam / control point)
    REFERENCE_IMAGE = "reference_image"  # plan beam/setup/brachy reference images
    RELATED_PLAN = "related_plan"  # plan -> plan, qualifier "relationship"
    PLAN = "plan"  # dose / RT image / record / 2nd-gen -> plan
    IMAGE = "image"  # RS contour image, registration / SEG source image
    SERIES = "series"  # RS referenced series, source series
    STUDY = "study"  # RS referenced study (SOP-ref syntax, but a study)
    FRAME_OF_REFERENCE = "frame_of_reference"
    TREATMENT_RECORD = "treatment_record"  # dose (RECORD) -> record; record -> record
    VERIFICATION_IMAGE = "verification_image"  # record -> portal image
    REGISTRATION = "registration"  # dose / PS -> spatial registration
    PREDECESSOR = "predecessor"  # RS -> previous RS; SR predecessor documents
    DEFINITION_SOURCE = "definition_source"  # RS ROI -> SEG / fiducials
    SOURCE_IMAGE = "source_image"  # SEG / general reference source images
    SOURCE_INSTANCE = "source_instance"  # dose sum sources, PDF sources
    EVIDENCE = "evidence"  # SR / KOS evidence and content items
    COMMON_INSTANCE = "common_instance"  # Common Instance Reference module
    GENERIC = "generic"  # any other ReferencedSOPInstanceUID found by the walk


@dataclass(frozen=True, slots=True)
class Edge(Record):
    """One reference stored in a source object.

    ``class_hint`` is the ReferencedSOPClassUID as written: a claim by the
    writer, kept for display only; targets are resolved by instance UID
    (dicom-references.md section 4, item 3). ``study_uid``/``series_uid`` are
    where the source object says the target lives, when it says so, so the
    missing list can tell a user which series to retrieve.
    """

    target_uid: str
    level: Level
    role: Role
    path: str
    class_hint: str = ""
    qualifiers: tuple[tuple[str, str], ...] = ()
    study_uid: str = ""
    series_uid: str = ""

    def qualifier(self, name: str) -> str | None:
        for key, value in self.qualifiers:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Details(Record):
    """What people search and name things by (issue 10): read from the file, never trusted.

    Kept apart from the identity so the graph and the mount's UID trees never
    pay for it. Every value is as written (decoded with the file's character
    set, padding stripped), cut to ``DETAIL_MAX`` characters: a 10 kB label
    is hostile input, not a name. Dates are kept only when they are a valid
    DICOM DA (``YYYYMMDD``), times only as their digits; ``patient_name`` is
    the first (alphabetic) component group of the PN value, ``^`` kept.
    """

    patient_name: str = ""
    birth_date: str = ""
    study_date: str = ""
    study_time: str = ""
    study_description: str = ""
    accession: str = ""
    series_number: int | None = None
    series_date: str = ""
    manufacturer: str = ""
    model: str = ""
    plan_name: str = ""
    plan_date: str = ""
    plan_time: str = ""
    approval_status: str = ""
    review_date: str = ""


# The longest value a Details field keeps (characters).
DETAIL_MAX = 256


@dataclass(slots=True)
class Instance(Record):
    """Identity and references of one parsed DICOM instance.

    ``label`` holds the display label of the kind (RTPlanLabel,
    StructureSetLabel, ...). ``flags`` lists problems that did not stop
    indexing, e.g. ``unsafe_sop_uid`` (the instance is kept but its UID is
    never used as a name) or ``no_file_meta``.
    """

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str = ""
    series_uid: str = ""
    frame_of_reference_uid: str = ""
    patient_id: str = ""
    modality: str = ""
    label: str = ""
    dose_summation_type: str = ""
    series_description: str = ""
    instance_number: int | None = None
    plan_intent: str = ""
    transfer_syntax: str = ""
    details: Details = field(default_factory=Details)
    flags: list[str] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    @property
    def uid_is_safe(self) -> bool:
        return is_safe_uid(self.sop_instance_uid)


class RejectKind(StrEnum):
    """Why a file is not an indexable DICOM instance."""

    NOT_DICOM = "not_dicom"  # text, random bytes, empty file
    TRUNCATED = "truncated"  # parsing did not end at the file size
    NO_IDENTITY = "no_identity"  # no valid SOP Class / SOP Instance UID
    DICOMDIR = "dicomdir"  # media directory, not an instance
    TOO_LARGE = "too_large"  # deflate bomb or declared lengths beyond limits
    TOO_DEEP = "too_deep"  # sequence nesting beyond limits (RecursionError)
    OUT_OF_MEMORY = "out_of_memory"
    UNREADABLE = "unreadable"  # OSError: permission, I/O error, vanished
    NOT_REGULAR = "not_regular"  # FIFO, socket, device (a symlink, to the parser)
    SYMLINK = "symlink"  # a symbolic link under a source: recorded, never followed
    MALFORMED = "malformed"  # any other parse failure


@dataclass(frozen=True, slots=True)
class Rejection(Record):
    """A file that was looked at and not indexed, with a reason for humans."""

    kind: RejectKind
    reason: str

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.reason}"


ParseResult = Instance | Rejection


# Flag of an object that hit a per-object bound while parsing, as
# "edges_capped:<reason>" (reliability.md D6; dicom/references/limits.py).
EDGES_CAPPED = "edges_capped"

# FileStat.change_key: size, mtime_ns, inode, permission bits, uid, gid, ctime_ns.
ChangeKey = tuple[int, int, int, int, int, int, int]


def change_key(
    size: int, mtime_ns: int, inode: int, mode: int, uid: int, gid: int, ctime_ns: int
) -> ChangeKey:
    """The change key from its parts, wherever they come from (a ``FileStat``, an
    ``lstat``, an index row): of ``mode`` only the permission bits count."""
    return (size, mtime_ns, inode, mode & 0o7777, uid, gid, ctime_ns)


def stat_change_key(st: os.stat_result) -> ChangeKey:
    """``FileStat.from_stat(path, st).change_key`` without the record.

    A re-scan compares a million unchanged files with the index; making a
    record for each only to compare its key was a third of that work, and
    the call to ``change_key`` a tenth of what is left: the tuple is made
    here, as ``change_key`` makes it (``test_sources`` holds the two equal).
    """
    return (
        st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode & 0o7777, st.st_uid, st.st_gid,
        st.st_ctime_ns,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class FileStat(Record):
    """What the scan saw of a source file; the skip key is (size, mtime_ns, inode, ctime_ns)."""

    path: str  # absolute, os.fsdecode'd (surrogateescape for non-UTF-8 names)
    size: int
    mtime_ns: int
    inode: int
    dev: int
    uid: int
    gid: int
    mode: int  # the whole st_mode: file type and permission bits
    # The inode change time. Unlike mtime, user space cannot set it back: a
    # same-size rewrite in place with the old mtime restored (dd conv=notrunc
    # then touch -d, timestamp-preserving copies, coarse-timestamp
    # filesystems) still moves it (reliability.md C7).
    ctime_ns: int = 0

    @classmethod
    def from_stat(cls, path: str, st: os.stat_result | None) -> FileStat:
        """The record of ``st``; all zeros when the file could not be looked at.

        The scan, the watcher and the parser all build their records here, so
        a file seen by one compares equal to the same file seen by another.
        ``mode`` is the whole ``st_mode``, not only the permission bits: it is
        the faithful record (the type bits say a regular file was parsed), and
        each reader masks what it uses: ``change_key`` the permission bits,
        the view the read bits it mirrors.
        """
        if st is None:
            return cls(path, 0, 0, 0, 0, 0, 0, 0)
        return cls(
            path=path,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            inode=st.st_ino,
            dev=st.st_dev,
            uid=st.st_uid,
            gid=st.st_gid,
            mode=st.st_mode,
            ctime_ns=st.st_ctime_ns,
        )

    @property
    def skip_key(self) -> tuple[int, int, int, int]:
        return (self.size, self.mtime_ns, self.inode, self.ctime_ns)

    @property
    def change_key(self) -> ChangeKey:
        """``skip_key`` plus what the mount mirrors: permission bits, owner, group.

        chmod and chown change neither size, mtime nor inode, and no event
        the watcher asks for reports them; without these the mount would go
        on showing a file's old mode and owner (reliability.md F1).
        """
        return change_key(
            self.size, self.mtime_ns, self.inode, self.mode, self.uid, self.gid, self.ctime_ns
        )


@dataclass(frozen=True, slots=True)
class FileResult(Record):
    """A parsed (or rejected) file together with the stat it was parsed under."""

    stat: FileStat
    result: ParseResult
