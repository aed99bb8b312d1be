"""Shared helpers of the tests/test_parse_*.py files: real data, datasets built in code.

Expected values are read from the files with pydicom (or stated by the
testdata README), never typed in by hand. Datasets are built with pydicom and
encoded in a chosen transfer syntax; malformed files are built byte by byte
(``element``, ``file_header``) because pydicom refuses to write them.
"""

from __future__ import annotations

import io
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from dicomfs.dicom.parse import parse_bytes, parse_file
from dicomfs.dicom.records import Edge, Instance, Level, Role

REAL = Path(__file__).resolve().parent / "data" / "real"
REAL_FILES = sorted(p for p in REAL.glob("*/*") if p.suffix.lower() == ".dcm")
MONACO = REAL / "monaco-tinyvmat"
MIM = REAL / "mim-struct-ct"
DCMQI = REAL / "dcmqi-seg-ct"
PINNACLE = REAL / "pinnacle-plan-dose"
HIGHDICOM = REAL / "highdicom-seg-ct"

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
RT_STRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_IMAGE = "1.2.840.10008.5.1.4.1.1.481.1"
RT_BEAMS_RECORD = "1.2.840.10008.5.1.4.1.1.481.4"
SPATIAL_REG = "1.2.840.10008.5.1.4.1.1.66.1"
DEFORMABLE_REG = "1.2.840.10008.5.1.4.1.1.66.3"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


# -- helpers -----------------------------------------------------------------


def read(path: Path | str) -> Dataset:
    return pydicom.dcmread(path, force=True)


def parse_ok(path: Path | str) -> Instance:
    result = parse_file(str(path))
    assert result is not None
    assert isinstance(result.result, Instance), result.result
    return result.result


def edges(instance: Instance, role: Role | None = None, level: Level | None = None) -> list[Edge]:
    return [
        e
        for e in instance.edges
        if (role is None or e.role is role) and (level is None or e.level is level)
    ]


def targets(instance: Instance, role: Role | None = None, level: Level | None = None) -> set[str]:
    return {e.target_uid for e in edges(instance, role, level)}


def ref(sop_class: str, sop_uid: str, **extra: object) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_uid
    for name, value in extra.items():
        setattr(item, name, value)
    return item


def item(**values: object) -> Dataset:
    ds = Dataset()
    for name, value in values.items():
        setattr(ds, name, value)
    return ds


def dataset(sop_class: str, **values: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "P1"
    for name, value in values.items():
        setattr(ds, name, value)
    return ds


def encode(
    ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian, *, file_format: bool = True
) -> bytes:
    buffer = io.BytesIO()
    if file_format:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        ds.save_as(buffer, enforce_file_format=True)
    else:
        implicit = transfer_syntax == ImplicitVRLittleEndian
        little = transfer_syntax != ExplicitVRBigEndian
        pydicom.dcmwrite(buffer, ds, implicit_vr=implicit, little_endian=little)
    return buffer.getvalue()


def parse_ds(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> Instance:
    result = parse_bytes(encode(ds, transfer_syntax))
    assert isinstance(result, Instance), result
    return result


def element(tag: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element, built by hand for malformed files."""
    if len(value) % 2:
        value += b"\x00" if vr == b"UI" else b" "
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return head + struct.pack("<HI", 0, len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def file_header(transfer_syntax: str, sop_class: str = CT_IMAGE, sop_uid: str = "1.2.3") -> bytes:
    meta = (
        element(0x00020001, b"OB", b"\x00\x01")
        + element(0x00020002, b"UI", sop_class.encode())
        + element(0x00020003, b"UI", sop_uid.encode())
        + element(0x00020010, b"UI", transfer_syntax.encode())
    )
    group_length = element(0x00020000, b"UL", struct.pack("<I", len(meta)))
    return b"\x00" * 128 + b"DICM" + group_length + meta


def identity(sop_class: str = CT_IMAGE, sop_uid: str = "1.2.3") -> bytes:
    return element(0x00080016, b"UI", sop_class.encode()) + element(
        0x00080018, b"UI", sop_uid.encode()
    )


CONTENT_SEQUENCE = 0x0040A730
REF_SOP_UID_TAG = 0x00081155


def nested_sequences(depth: int, *, undefined: bool) -> bytes:
    """``depth`` ContentSequences, one inside the other, a reference at the bottom."""
    inner = element(REF_SOP_UID_TAG, b"UI", b"1.2.840.99.1")
    seq_head = struct.pack("<HH", CONTENT_SEQUENCE >> 16, CONTENT_SEQUENCE & 0xFFFF) + b"SQ\0\0"
    for _ in range(depth):
        if undefined:
            item_ = b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + inner + b"\xfe\xff\x0d\xe0\0\0\0\0"
            inner = seq_head + b"\xff\xff\xff\xff" + item_ + b"\xfe\xff\xdd\xe0\0\0\0\0"
        else:
            item_ = b"\xfe\xff\x00\xe0" + struct.pack("<I", len(inner)) + inner
            inner = seq_head + struct.pack("<I", len(item_)) + item_
    return inner


def run_with_deadline(fn: Callable[[], object], seconds: float = 10.0) -> object:
    box: dict[str, object] = {}
    thread = threading.Thread(target=lambda: box.update(result=fn()), daemon=True)
    thread.start()
    thread.join(timeout=seconds)
    assert not thread.is_alive(), "parse blocked"
    return box["result"]
