"""Hostile and awkward files for the demo tree (reliability.md B, C, D).

Each file reproduces a failure seen in the wild or in our own trials: files
that pydicom happily turns into garbage (text, random bytes with
``force=True``), files it reads partially without complaint (truncated),
files that exhaust memory or the stack (deflate bomb, deep nesting), UIDs
that would escape a folder if used as names, and duplicate SOP Instance
UIDs. They are built from a real CT slice of the demo so that everything
except the one defect is valid; anything that pydicom would refuse to
write (the bomb, the nesting) is assembled as bytes.

No FIFOs or symlinks here: tests create those themselves, because they
cannot live in a plain tree that is copied around.
"""

from __future__ import annotations

import os
import random
import struct
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import dcmread
from pydicom.fileset import FileSet
from pydicom.filewriter import dcmwrite, write_dataset, write_file_meta_info
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from dicomfs.records import RejectKind

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION",
    "NON_UTF8_NAME",
    "UNSAFE_UID",
    "HostileFiles",
    "write_hostile",
]

# Our own implementation identity in every file meta group, so the bytes do
# not change when pydicom's version string does (determinism across upgrades).
IMPLEMENTATION_CLASS_UID = "2.25.305411586837467183431626401306208154938"
IMPLEMENTATION_VERSION = "DICOMFS_DEMO_1"

UNSAFE_UID = "unsafe_uid"
NON_UTF8_NAME = "non_utf8_name"

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
