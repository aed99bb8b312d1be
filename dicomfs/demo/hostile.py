"""Hostile and awkward files for the demo tree (reliability.md B, C, D).

Each file reproduces a failure seen in the wild or in our own trials: files
that pydicom happily turns into garbage (text, random bytes with
``force=True``), files it reads partially without complaint (truncated),
files that exhaust memory or the stack (deflate bomb, deep nesting), UIDs
that would escape a folder if used as names, and duplicate SOP Instance
UIDs. They are built from a real CT slice of the demo so that everything
except the one defect is valid; anything that pydicom would refuse to
write (the bomb, the nesting) is assembled as bytes.

``write_hostile`` is what ``dicomfs demo-data`` adds to the demo tree (and
its bytes must not change). Two more generators serve the reliability suite
(docs/reliability.md): ``write_hostile_corpus`` writes a self-contained set
of hostile *files* (truncated at many offsets, a deflate bomb, 5,000-level
nesting, huge declared lengths, wrong VRs, invalid and path-like UIDs, NUL
and non-UTF-8 text, duplicate UIDs with different content and relational
mismatches), each with the outcome the parser and index must give; and
``write_hostile_tree`` writes hostile *filesystem objects* (FIFOs, sockets,
symlinks inside and escaping the root and in loops, a chmod-000 file,
40-level deep folders, non-UTF-8 names), which cannot live in a tree that is
copied around, so tests call it on a fresh folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import socket
import stat
import struct
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import dcmread
from pydicom.fileset import FileSet
from pydicom.filewriter import dcmwrite, write_dataset, write_file_meta_info
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from dicomfs.dicom.records import RejectKind

__all__ = [
    "BENIGN_DUPLICATE",
    "CONFLICT",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION",
    "INSTANCE",
    "NON_UTF8_NAME",
    "UNSAFE_UID",
    "HostileCorpus",
    "HostileFiles",
    "HostileTree",
    "ct_bytes",
    "remove_hostile_tree",
    "write_hostile",
    "write_hostile_corpus",
    "write_hostile_tree",
]

# Our own implementation identity in every file meta group, so the bytes do
# not change when pydicom's version string does (determinism across upgrades).
IMPLEMENTATION_CLASS_UID = "2.25.305411586837467183431626401306208154938"
IMPLEMENTATION_VERSION = "DICOMFS_DEMO_1"

UNSAFE_UID = "unsafe_uid"
NON_UTF8_NAME = "non_utf8_name"
# Outcomes of write_hostile_corpus besides the RejectKind values.
INSTANCE = "instance"  # indexed, its UIDs may be names
BENIGN_DUPLICATE = "benign_duplicate"  # indexed, same bytes as the copy that serves
CONFLICT = "conflict"  # indexed, different bytes: never served, recorded as a conflict

_CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
_BOMB_CHUNK = 1 << 20
_BOMB_CHUNKS = 200  # 200 MiB inflated from about 200 KB (reliability.md D2)
_NESTING = 5000  # far beyond Python's default recursion limit (reliability.md D3)
_ITEM = b"\xfe\xff\x00\xe0"
_ITEM_END = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
_SEQUENCE_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_UNDEFINED = b"\xff\xff\xff\xff"


@dataclass(frozen=True)
class HostileFiles:
    """Relative path -> expected outcome, duplicates, and UIDs written."""

    hostile: dict[str, str]
    duplicates: dict[str, tuple[str, ...]]
    uids: dict[str, str]


def _meta_bytes(sop_uid: str, transfer_syntax: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(_CT_CLASS)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return b"\x00" * 128 + b"DICM" + buffer.getvalue()


def _identity_bytes(sop_uid: str, study_uid: str, series_uid: str) -> bytes:
    """The few leading elements that make a hand-built file look like a CT."""
    ds = Dataset()
    ds.SOPClassUID = _CT_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "CT"
    ds.PatientID = "HOSTILE"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _deflate_bomb(header: bytes) -> bytes:
    """A deflated dataset whose PixelData inflates to 200 MiB of zeros.

    After Z_FULL_FLUSH the compressor state is reset, so one compressed
    megabyte can be repeated instead of compressing 200 MB every run.
    """
    pixel_header = b"\xe0\x7f\x10\x00OB\x00\x00" + struct.pack("<I", _BOMB_CHUNK * _BOMB_CHUNKS)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = compressor.compress(header + pixel_header) + compressor.flush(zlib.Z_FULL_FLUSH)
    chunk = compressor.compress(bytes(_BOMB_CHUNK)) + compressor.flush(zlib.Z_FULL_FLUSH)
    body = head + chunk * _BOMB_CHUNKS + compressor.flush(zlib.Z_FINISH)
    return body + (b"\x00" if len(body) % 2 else b"")


def _nested_sequences(depth: int) -> bytes:
    """ContentSequence items nested ``depth`` deep, all of undefined length."""
    opening = b"\x40\x00\x30\xa7SQ\x00\x00" + _UNDEFINED + _ITEM + _UNDEFINED
    return opening * depth + (_ITEM_END + _SEQUENCE_END) * depth


def _write_bytes(root: Path, relative: str, data: bytes) -> None:
    # Bytes paths, so names that are not valid UTF-8 round-trip exactly.
    path = os.fsencode(root) + b"/" + os.fsencode(relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def _cut_inside(data: bytes, tag: bytes, into_value: int) -> bytes:
    """Cut ``data`` a few bytes into the value of the first element ``tag``."""
    offset = data.find(tag, 132)
    if offset < 0:
        raise ValueError("template CT slice lacks the expected element")
    return data[: offset + 8 + into_value]


def write_hostile(
    root: Path, *, seed: int, ct_paths: Sequence[str], make_uid: Callable[[str], str]
) -> HostileFiles:
    """Write every hostile case under ``root/hostile/``.

    ``ct_paths`` are relative paths of plain (explicit VR little endian,
    with preamble) CT slices of the first demo patient, used as templates
    and as the originals of the duplicates. ``make_uid(name)`` returns a
    deterministic UID for a name.
    """
    if not ct_paths:
        raise ValueError("at least one plain CT slice is needed as a template")
    hostile: dict[str, str] = {}
    uids: dict[str, str] = {}
    template_path = ct_paths[0]
    template = (root / template_path).read_bytes()
    template_uid = str(dcmread(root / template_path, stop_before_pixels=True).SOPInstanceUID)
    study_uid = make_uid("study")
    series_uid = make_uid("series")

    def put(relative: str, data: bytes, outcome: str, uid: str | None = None) -> None:
        _write_bytes(root, relative, data)
        hostile[relative] = outcome
        if uid is not None:
            uids[relative] = uid

    put("hostile/empty.dcm", b"", RejectKind.NOT_DICOM.value)
    notes = "Patient called, will bring the CD on Monday.\nDICM\n" * 20
    put("hostile/notes.dcm", notes.encode("ascii"), RejectKind.NOT_DICOM.value)
    noise = random.Random(f"dicomfs-demo/{seed}/random").randbytes(4096)
    put("hostile/random.dcm", noise, RejectKind.NOT_DICOM.value)

    # Cut inside ImagePositionPatient (header) and inside the pixel data.
    head_cut = _cut_inside(template, b"\x20\x00\x32\x00DS", 3)
    put("hostile/truncated-header.dcm", head_cut, RejectKind.TRUNCATED.value, template_uid)
    pixel_offset = template.rfind(b"\xe0\x7f\x10\x00")
    pixel_cut = template[: pixel_offset + 12 + (len(template) - pixel_offset - 12) // 2]
    put("hostile/truncated-pixels.dcm", pixel_cut, RejectKind.TRUNCATED.value, template_uid)

    def variant(sop_uid: str, series: str, description: str) -> Dataset:
        ds = dcmread(root / template_path)
        ds.PatientID = "HOSTILE"
        ds.PatientName = "Hostile^Files"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series
        ds.SeriesDescription = description
        ds.FrameOfReferenceUID = make_uid(f"for/{series}")
        ds.SOPInstanceUID = sop_uid
        ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
        return ds

    long_base = make_uid("long-uid")
    unsafe = {
        "hostile/unsafe/passwd.dcm": "../../../etc/passwd",
        "hostile/unsafe/long-uid.dcm": f"{long_base}.{'9' * (79 - len(long_base))}",
        "hostile/unsafe/slash-uid.dcm": f"{make_uid('slash')[:20]}/{make_uid('slash')[20:40]}",
    }
    for relative, sop_uid in unsafe.items():
        buffer = DicomBytesIO()
        # The unsafe values must reach the file unchanged, so pydicom's value
        # checks (process-wide settings) are off for these writes only.
        with config.disable_value_validation():
            dcmwrite(buffer, variant(sop_uid, series_uid, "Unsafe UIDs"), enforce_file_format=True)
        put(relative, buffer.getvalue(), UNSAFE_UID, sop_uid)

    # A valid slice of its own series under a Latin-1 name (reliability.md G8).
    odd_uid = make_uid("non-utf8")
    odd = variant(odd_uid, make_uid("non-utf8-series"), "Latin-1 file name")
    buffer = DicomBytesIO()
    dcmwrite(buffer, odd, enforce_file_format=True)
    put(os.fsdecode(b"hostile/caf\xe9.dcm"), buffer.getvalue(), NON_UTF8_NAME, odd_uid)

    # A real media directory; only DICOMDIR itself is kept, so the instance
    # copies FileSet writes next to it never enter the tree as duplicates.
    fileset = FileSet()
    fileset.ID = "DEMOCD"
    fileset.UID = UID(make_uid("fileset"))
    fileset.add(odd)
    with tempfile.TemporaryDirectory() as scratch:
        fileset.write(scratch)
        dicomdir = Path(scratch, "DICOMDIR").read_bytes()
    put("hostile/DICOMDIR", dicomdir, RejectKind.DICOMDIR.value)

    bomb_uid = make_uid("bomb")
    bomb = _meta_bytes(bomb_uid, DeflatedExplicitVRLittleEndian) + _deflate_bomb(
        _identity_bytes(bomb_uid, study_uid, series_uid)
    )
    put("hostile/bomb.dcm", bomb, RejectKind.TOO_LARGE.value, bomb_uid)

    deep_uid = make_uid("deep")
    deep = (
        _meta_bytes(deep_uid, ExplicitVRLittleEndian)
        + _identity_bytes(deep_uid, study_uid, series_uid)
        + _nested_sequences(_NESTING)
    )
    put("hostile/nested.dcm", deep, RejectKind.TOO_DEEP.value, deep_uid)

    benign_original = ct_paths[1 % len(ct_paths)]
    benign_copy = f"hostile/usb-copy/{Path(benign_original).name}"
    _write_bytes(root, benign_copy, (root / benign_original).read_bytes())

    conflict_original = ct_paths[2 % len(ct_paths)]
    conflict_copy = f"hostile/edited/{Path(conflict_original).name}"
    edited = dcmread(root / conflict_original)
    edited.SeriesDescription = "CT planning 3mm (edited)"
    edited.SeriesInstanceUID = make_uid("conflict-series")
    buffer = DicomBytesIO()
    dcmwrite(buffer, edited, enforce_file_format=True)
    _write_bytes(root, conflict_copy, buffer.getvalue())

    duplicates: dict[str, tuple[str, ...]] = {
        "benign identical copy": (benign_original, benign_copy),
        "conflicting copy": (conflict_original, conflict_copy),
    }
    return HostileFiles(hostile=hostile, duplicates=duplicates, uids=uids)


# ---------------------------------------------------------------------------
# The reliability corpus: hostile files with the outcome each must have
# ---------------------------------------------------------------------------

_PLAN_CLASS = "1.2.840.10008.5.1.4.1.1.481.5"
_LONG_VRS = (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT")
_CT_PIXELS = 16  # rows and columns of the corpus CT: small, but a real image


def _corpus_uid(seed: int, name: str) -> str:
    """A deterministic UID (2.25 + 128-bit integer, PS3.5 B.2) for a name."""
    digest = hashlib.sha256(f"dicomfs-hostile/{seed}/{name}".encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element, built by hand: any bytes may go in."""
    if len(value) % 2:
        value += b"\x00" if vr in (b"UI", b"OB", b"UN") else b" "
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    if vr in _LONG_VRS:
        return head + struct.pack("<HI", 0, len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def _raw_identity(
    sop_uid: bytes,
    *,
    sop_class: bytes = _CT_CLASS.encode(),
    study: bytes,
    series: bytes,
    patient_id: bytes = b"HOSTILE",
    patient_name: bytes = b"Hostile^Files",
    modality: bytes = b"CT",
    charset: bytes = b"",
    extra: Sequence[tuple[int, bytes, bytes]] = (),
) -> bytes:
    """A minimal dataset (no image) whose values are taken as raw bytes."""
    elements = [
        (0x00080016, b"UI", sop_class),
        (0x00080018, b"UI", sop_uid),
        (0x00080060, b"CS", modality),
        (0x00100010, b"PN", patient_name),
        (0x00100020, b"LO", patient_id),
        (0x0020000D, b"UI", study),
        (0x0020000E, b"UI", series),
        *extra,
    ]
    if charset:
        elements.append((0x00080005, b"CS", charset))
    return b"".join(_element(t, vr, v) for t, vr, v in sorted(elements))


def ct_bytes(
    sop_uid: str,
    *,
    study_uid: str,
    series_uid: str,
    patient_id: str = "HOSTILE",
    patient_name: str = "Hostile^Files",
    series_description: str = "Hostile corpus",
    edit: Callable[[Dataset], None] | None = None,
) -> bytes:
    """A small but complete CT file (preamble, file meta, 16x16 pixels), as bytes.

    ``edit`` may change the dataset before it is written; pydicom's value
    checks are off, so an edit may put any value in.
    """
    ds = Dataset()
    ds.SOPClassUID = _CT_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "CT"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesDescription = series_description
    ds.FrameOfReferenceUID = f"{study_uid}.1" if len(study_uid) < 62 else study_uid
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = _CT_PIXELS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    seed = hashlib.sha256(sop_uid.encode("utf-8", "surrogateescape")).digest()
    ds.PixelData = (seed * (2 * _CT_PIXELS * _CT_PIXELS // len(seed) + 1))[
        : 2 * _CT_PIXELS * _CT_PIXELS
    ]
    if edit is not None:
        edit(ds)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(_CT_CLASS)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds.file_meta = meta
    buffer = DicomBytesIO()
    with config.disable_value_validation():
        dcmwrite(buffer, ds, enforce_file_format=True)
    return bytes(buffer.getvalue())


def _element_spans(data: bytes) -> list[tuple[int, int, int]]:
    """(start, value offset, end) of every element after the preamble.

    Only for files written by ``ct_bytes``: explicit VR little endian from
    the file meta on, no sequences.
    """
    spans = []
    offset = 132
    while offset + 8 <= len(data):
        vr = data[offset + 4 : offset + 6]
        if vr in _LONG_VRS:
            length = struct.unpack_from("<I", data, offset + 8)[0]
            value = offset + 12
        else:
            length = struct.unpack_from("<H", data, offset + 6)[0]
            value = offset + 8
        spans.append((offset, value, value + length))
        offset = value + length
    return spans


@dataclass(frozen=True)
class HostileCorpus:
    """What ``write_hostile_corpus`` wrote under ``root``.

    ``expected`` maps a relative path to its outcome: a RejectKind value,
    ``INSTANCE``, ``UNSAFE_UID`` (indexed, flagged, never a name),
    ``BENIGN_DUPLICATE`` or ``CONFLICT`` (indexed copies of a UID another
    file serves). ``uids`` gives the SOP Instance UID in each file that has
    one (raw, as written); ``duplicates`` maps the file that must serve a
    UID to the later copies of it; ``flags`` lists flags a file must carry.
    """

    root: Path
    expected: dict[str, str]
    uids: dict[str, str]
    duplicates: dict[str, tuple[str, ...]]
    flags: dict[str, tuple[str, ...]] = field(default_factory=dict)
    study_uid: str = ""
    series_uid: str = ""

    def paths(self, outcome: str) -> list[str]:
        return sorted(rel for rel, found in self.expected.items() if found == outcome)


def write_hostile_corpus(root: Path, *, seed: int = 0) -> HostileCorpus:
    """Write hostile files under ``root`` (created), each with its required outcome.

    Deterministic for a seed, except the modification times of the
    duplicates, which are set so that the original is the oldest copy.
    """
    root.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}
    uids: dict[str, str] = {}
    flags: dict[str, tuple[str, ...]] = {}
    study, series = _corpus_uid(seed, "study"), _corpus_uid(seed, "series")

    def put(relative: str, data: bytes, outcome: str, uid: str | None = None) -> None:
        _write_bytes(root, relative, data)
        expected[relative] = outcome
        if uid is not None:
            uids[relative] = uid

    def ct(name: str, **kwargs: object) -> tuple[str, bytes]:
        uid = _corpus_uid(seed, name)
        return uid, ct_bytes(uid, study_uid=study, series_uid=series, **kwargs)  # type: ignore[arg-type]

    template_uid, template = ct("template")
    put("valid/template.dcm", template, INSTANCE, template_uid)

    # B1: cut inside every element (its header and its value) and in the preamble.
    cuts = set(range(0, 132, 11)) | {132, 133, len(template) - 1}
    for start, value, end in _element_spans(template):
        cuts.add(start + 2)
        if end - value > 1:
            cuts.add(value + (end - value) // 2)
    for cut in sorted(cuts):
        outcome = RejectKind.NOT_DICOM.value if cut < 132 else RejectKind.TRUNCATED.value
        if cut == 132:  # the DICM prefix and nothing else: no file meta, no dataset
            outcome = RejectKind.NO_IDENTITY.value
        put(f"truncated/at-{cut:05d}.dcm", template[:cut], outcome, template_uid)

    # D2, D3: the deflate bomb and 5,000 nested sequences of the demo.
    bomb_uid = _corpus_uid(seed, "bomb")
    bomb = _meta_bytes(bomb_uid, DeflatedExplicitVRLittleEndian) + _deflate_bomb(
        _identity_bytes(bomb_uid, study, series)
    )
    put("bomb/deflate-bomb.dcm", bomb, RejectKind.TOO_LARGE.value, bomb_uid)
    deep_uid = _corpus_uid(seed, "deep")
    deep = (
        _meta_bytes(deep_uid, ExplicitVRLittleEndian)
        + _identity_bytes(deep_uid, study, series)
        + _nested_sequences(_NESTING)
    )
    put("nesting/5000-levels.dcm", deep, RejectKind.TOO_DEEP.value, deep_uid)

    # Declared lengths far beyond the file.
    huge_uid = _corpus_uid(seed, "huge")
    head = _meta_bytes(huge_uid, ExplicitVRLittleEndian) + _identity_bytes(huge_uid, study, series)
    huge_ob = b"\x09\x00\x10\x10OB\x00\x00" + struct.pack("<I", 0xFFFFFFF0)
    put("lengths/huge-element.dcm", head + huge_ob + bytes(64), RejectKind.TRUNCATED.value)
    huge_sq = b"\x40\x00\x30\xa7SQ\x00\x00" + struct.pack("<I", 0x7FFFFFF0)
    item = _ITEM + struct.pack("<I", 8) + b"\x08\x00\x50\x11UI\x02\x001\x00"
    put("lengths/huge-sequence.dcm", head + huge_sq + item, RejectKind.TRUNCATED.value)
    huge_item = _ITEM + struct.pack("<I", 0x7FFFFFF0) + b"\x08\x00\x55\x11UI\x02\x001\x00"
    sequence = b"\x40\x00\x30\xa7SQ\x00\x00" + struct.pack("<I", len(huge_item)) + huge_item
    # Inside a sequence of correct length: read up to the sequence's end, leniently.
    put("lengths/huge-item.dcm", head + sequence, INSTANCE, huge_uid)
    huge_text = b"\x10\x00\x10\x00PN" + struct.pack("<H", 0xFFFF) + b"A" * 40
    put("lengths/huge-short-length.dcm", head + huge_text, RejectKind.TRUNCATED.value)

    # Wrong VRs: values are read as text whatever the VR says.
    for name, vr_edit in (
        ("patient-id-as-UI", (0x00100020, b"UI", b"HOSTILE")),
        ("series-description-as-US", (0x0008103E, b"US", b"\x01\x00")),
        ("label-as-SQ", (0x00700080, b"SQ", b"")),
    ):
        uid = _corpus_uid(seed, name)
        data = _meta_bytes(uid, ExplicitVRLittleEndian) + _raw_identity(
            uid.encode(), study=study.encode(), series=series.encode(), extra=[vr_edit]
        )
        put(f"vr/{name}.dcm", data, INSTANCE, uid)
    uid = _corpus_uid(seed, "sop-uid-as-LO")
    body = _raw_identity(uid.encode(), study=study.encode(), series=series.encode())
    body = body.replace(b"\x08\x00\x18\x00UI", b"\x08\x00\x18\x00LO", 1)
    put("vr/sop-uid-as-LO.dcm", _meta_bytes(uid, ExplicitVRLittleEndian) + body, INSTANCE, uid)
    uid = _corpus_uid(seed, "unknown-vr")
    unknown = b"\x09\x00\x10\x10ZZ\x04\x00abcd"
    data = _meta_bytes(uid, ExplicitVRLittleEndian) + _raw_identity(
        uid.encode(), study=study.encode(), series=series.encode()
    )
    put("vr/unknown-vr.dcm", data + unknown, INSTANCE, uid)  # read as 2-byte length, skipped
    uid = _corpus_uid(seed, "implicit-labelled-explicit")
    implicit = DicomBytesIO()
    implicit.is_little_endian, implicit.is_implicit_VR = True, True
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = _CT_CLASS, uid, "CT"
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "HOSTILE", study, series
    write_dataset(implicit, ds)
    data = _meta_bytes(uid, ExplicitVRLittleEndian) + implicit.getvalue()
    put("vr/implicit-labelled-explicit.dcm", data, INSTANCE, uid)
    flags["vr/implicit-labelled-explicit.dcm"] = ("vr_mismatch",)

    # C1: UIDs that are not UIDs. Kept, flagged, never a name.
    unsafe: dict[str, bytes] = {
        "dotdot": b"..",
        "dot": b".",
        "passwd": b"../../../etc/passwd",
        "slash": b"1.2/3.4",
        "leading-zero": b"1.2.03.4",
        "too-long": b"1." + b"2" * 63,
        "inner-nul": b"1.2\x00.3",
        "newline": b"1.2.3\n",
        "non-ascii": b"1.2.\xff\xfe",
        "empty-component": b"1..2",
    }
    meta_uid = _corpus_uid(seed, "unsafe-meta")
    for name, raw in unsafe.items():
        data = _meta_bytes(meta_uid, ExplicitVRLittleEndian) + _raw_identity(
            raw, study=study.encode(), series=series.encode()
        )
        # Recorded as the parser reads it: no character set means ISO 646/Latin-1.
        put(f"uids/{name}.dcm", data, UNSAFE_UID, raw.decode("latin-1"))
        flags[f"uids/{name}.dcm"] = ("unsafe_sop_uid",)
    padded = _corpus_uid(seed, "padded")
    data = _meta_bytes(padded, ExplicitVRLittleEndian) + _raw_identity(
        padded.encode() + b"\x00", study=study.encode(), series=series.encode()
    )
    put("uids/trailing-nul-padding.dcm", data, INSTANCE, padded)
    uid = _corpus_uid(seed, "path-like-study")
    data = _meta_bytes(uid, ExplicitVRLittleEndian) + _raw_identity(
        uid.encode(), study=b"..", series=b"../../tmp"
    )
    put("uids/path-like-study-and-series.dcm", data, INSTANCE, uid)
    flags["uids/path-like-study-and-series.dcm"] = (
        "unsafe_uid:StudyInstanceUID",
        "unsafe_uid:SeriesInstanceUID",
    )
    uid = _corpus_uid(seed, "no-sop-uid")
    data = _meta_bytes(uid, ExplicitVRLittleEndian) + _raw_identity(
        b"", study=study.encode(), series=series.encode()
    )
    put("uids/empty-sop-uid.dcm", data, RejectKind.NO_IDENTITY.value)

    # NUL and non-UTF-8 text: decoded leniently, never a name.
    uid = _corpus_uid(seed, "nul-text")
    data = _meta_bytes(uid, ExplicitVRLittleEndian) + _raw_identity(
        uid.encode(),
        study=study.encode(),
        series=series.encode(),
        patient_name=b"Caf\xe9\x00^N\xffl",
        patient_id=b"ID\x00/../\xff",
        charset=b"ISO_IR 192",
        extra=[(0x0008103E, b"LO", b"a/b\x00c\xc3\x28")],
    )
    put("text/nul-and-invalid-utf8.dcm", data, INSTANCE, uid)
    uid = _corpus_uid(seed, "plan-label")
    data = _meta_bytes(uid, ExplicitVRLittleEndian) + _raw_identity(
        uid.encode(),
        sop_class=_PLAN_CLASS.encode(),
        study=study.encode(),
        series=_corpus_uid(seed, "plan-series").encode(),
        modality=b"RTPLAN",
        extra=[(0x300A0002, b"SH", b"../x/\x00\xff")],
    )
    put("text/plan-label-path-like.dcm", data, INSTANCE, uid)

    # C2, C3: one SOP Instance UID in several files. The original is the
    # oldest, so a fresh scan (oldest first) serves it, as a watcher would.
    dup_uid = _corpus_uid(seed, "duplicate")
    variants = {
        "dup/original.dcm": ({}, INSTANCE),
        "dup/identical-copy.dcm": ({}, BENIGN_DUPLICATE),
        "dup/different-content.dcm": ({"series_description": "edited"}, CONFLICT),
        "dup/other-series.dcm": ({"series_uid": _corpus_uid(seed, "other-series")}, CONFLICT),
        "dup/other-study.dcm": ({"study_uid": _corpus_uid(seed, "other-study")}, CONFLICT),
        "dup/other-patient.dcm": ({"patient_id": "OTHER-PATIENT"}, CONFLICT),
    }
    base_time = 1_600_000_000_000_000_000
    for number, (relative, (changes, outcome)) in enumerate(variants.items()):
        options: dict[str, str] = {"study_uid": study, "series_uid": series, **changes}
        put(relative, ct_bytes(dup_uid, **options), outcome, dup_uid)  # type: ignore[arg-type]
        when = base_time + number * 1_000_000_000
        os.utime(os.fsencode(root) + b"/" + relative.encode(), ns=(when, when))
    duplicates = {"dup/original.dcm": tuple(list(variants)[1:])}
    return HostileCorpus(
        root=root,
        expected=expected,
        uids=uids,
        duplicates=duplicates,
        flags=flags,
        study_uid=study,
        series_uid=series,
    )


# ---------------------------------------------------------------------------
# Hostile filesystem objects
# ---------------------------------------------------------------------------

DEEP_LEVELS = 40


@dataclass(frozen=True)
class HostileTree:
    """What ``write_hostile_tree`` made; paths are relative to ``root`` (os.fsdecode'd).

    ``indexed`` must be indexed as instances with their ``uids``; ``absent``
    must never appear in the index (not opened, not followed, ignored);
    ``unreadable`` is the chmod-000 file (root reads it anyway). ``outside``
    holds files the escaping symlinks point at: never indexed from ``root``.
    ``skipped`` names objects this machine would not let us create.
    """

    root: Path
    outside: Path
    indexed: set[str]
    absent: set[str]
    unreadable: set[str]
    uids: dict[str, str]
    skipped: list[str] = field(default_factory=list)


def write_hostile_tree(root: Path, *, outside: Path | None = None, seed: int = 0) -> HostileTree:
    """Write FIFOs, a socket, a device, symlinks, a chmod-000 file, deep and odd names.

    ``outside`` (default: a sibling of ``root``) receives the targets of the
    symlinks that leave the root. Nothing here may block a scanner that
    looks before it opens: the FIFO has no writer.
    """
    outside = outside if outside is not None else root.parent / f"{root.name}-outside"
    root.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    raw_root = os.fsencode(root)
    study, series = _corpus_uid(seed, "tree-study"), _corpus_uid(seed, "tree-series")
    indexed: set[str] = set()
    absent: set[str] = set()
    uids: dict[str, str] = {}
    skipped: list[str] = []

    def dicom(relative: bytes, name: str, *, where: bytes = raw_root) -> str:
        uid = _corpus_uid(seed, f"tree/{name}")
        path = where + b"/" + relative
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(ct_bytes(uid, study_uid=study, series_uid=series))
        return uid

    def good(relative: bytes, name: str) -> None:
        rel = os.fsdecode(relative)
        uids[rel] = dicom(relative, name)
        indexed.add(rel)

    good(b"plain.dcm", "plain")
    deep = b"/".join(b"d%02d" % level for level in range(1, DEEP_LEVELS + 1))
    good(deep + b"/deep.dcm", "deep")
    good(b"latin1-caf\xe9.dcm", "latin1")
    good(b"invalid-utf8-\xff\xfe.dcm", "invalid-utf8")
    good(b"tab\tand\nnewline.dcm", "control-characters")

    for ignored in (b".hidden.dcm", b"incoming.dcm.part", b"incoming.dcm.tmp"):
        dicom(ignored, os.fsdecode(ignored))
        absent.add(os.fsdecode(ignored))

    os.mkfifo(raw_root + b"/pipe.dcm")  # opening it would block forever
    absent.add("pipe.dcm")
    sock_path = raw_root + b"/socket.dcm"
    if len(sock_path) < 100:  # sun_path holds 108 bytes
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(sock_path)
        absent.add("socket.dcm")
    else:
        skipped.append("socket.dcm (path too long for AF_UNIX)")
    try:
        os.mknod(raw_root + b"/null.dcm", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        absent.add("null.dcm")
    except OSError as exc:
        skipped.append(f"null.dcm ({exc.strerror})")

    outside_uid = dicom(b"escaped.dcm", "outside", where=os.fsencode(outside))
    dicom(b"folder/inside-escaped-folder.dcm", "outside-folder", where=os.fsencode(outside))
    links = {
        b"link-inside.dcm": b"plain.dcm",
        b"link-escape.dcm": os.fsencode(outside) + b"/escaped.dcm",
        b"link-escape-folder": os.fsencode(outside) + b"/folder",
        b"link-escape-relative.dcm": b"../" + os.fsencode(outside.name) + b"/escaped.dcm",
        b"loop-a.dcm": b"loop-b.dcm",
        b"loop-b.dcm": b"loop-a.dcm",
        b"loops/up": b"..",
        b"loops/self": b"self",
        b"dangling.dcm": b"nowhere.dcm",
    }
    for link, target in links.items():
        os.makedirs(os.path.dirname(raw_root + b"/" + link), exist_ok=True)
        os.symlink(target, raw_root + b"/" + link)
        absent.add(os.fsdecode(link))

    unreadable = "no-access.dcm"
    uids[unreadable] = dicom(unreadable.encode(), "no-access")
    os.chmod(raw_root + b"/" + unreadable.encode(), 0)
    uids["outside:escaped.dcm"] = outside_uid
    return HostileTree(
        root=root,
        outside=outside,
        indexed=indexed,
        absent=absent,
        unreadable={unreadable},
        uids=uids,
        skipped=skipped,
    )


def remove_hostile_tree(tree: HostileTree) -> None:
    """Undo the chmod 000 so the tree can be deleted by any user."""
    with contextlib.suppress(OSError):
        os.chmod(os.fsencode(tree.root) + b"/no-access.dcm", 0o644)
