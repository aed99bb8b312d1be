"""The pieces every demo writer shares: identities, UIDs, value formats and file writing.

The patient builders, the hostile generators and ``ct_bytes`` all stamp the
same implementation identity into their file meta, name UIDs from a seed,
format DS values and write files or bytes the same way; keeping those here
means a change (say, a new pydicom writing rule) is made once and the demo
stays byte-identical across runs. Also the General modules (Patient, Study,
Series, Equipment, SOP Common) that every patient object starts from.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
)

__all__ = [
    "AXIAL",
    "BIG_ENDIAN",
    "CT_CLASS",
    "DEFLATED",
    "EXPLICIT_LE",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION",
    "IMPLICIT_NO_PREAMBLE",
    "MR_CLASS",
    "REG_CLASS",
    "RT_DOSE_CLASS",
    "RT_IMAGE_CLASS",
    "RT_ION_PLAN_CLASS",
    "RT_PLAN_CLASS",
    "RT_RECORD_CLASS",
    "RT_STRUCT_CLASS",
    "SEG_CLASS",
    "STUDY_MANAGEMENT_CLASS",
    "Study",
    "code",
    "common",
    "content_identification",
    "corpus_uid",
    "ct_identity",
    "dataset_bytes",
    "demo_uid",
    "ds_str",
    "file_meta",
    "frame_of_reference",
    "hash_name",
    "image_pixel",
    "item",
    "ref",
    "referenced_series",
    "save",
    "set_pixels",
    "write_bytes",
]

# How a file is encoded, as the exporter that wrote it would have.
EXPLICIT_LE = "explicit_le"
IMPLICIT_NO_PREAMBLE = "implicit_no_preamble"
BIG_ENDIAN = "big_endian"
DEFLATED = "deflated"

CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
MR_CLASS = "1.2.840.10008.5.1.4.1.1.4"
RT_IMAGE_CLASS = "1.2.840.10008.5.1.4.1.1.481.1"
RT_DOSE_CLASS = "1.2.840.10008.5.1.4.1.1.481.2"
RT_STRUCT_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
RT_RECORD_CLASS = "1.2.840.10008.5.1.4.1.1.481.4"
RT_PLAN_CLASS = "1.2.840.10008.5.1.4.1.1.481.5"
RT_ION_PLAN_CLASS = "1.2.840.10008.5.1.4.1.1.481.8"
REG_CLASS = "1.2.840.10008.5.1.4.1.1.66.1"
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
# Retired Detached Study Management class: what RS writers put in
# RTReferencedStudySequence, whose "instance" is the Study Instance UID.
STUDY_MANAGEMENT_CLASS = "1.2.840.10008.3.1.2.3.1"

# Our own implementation identity in every file meta group, so the bytes do
# not change when pydicom's version string does (determinism across upgrades).
IMPLEMENTATION_CLASS_UID = "2.25.305411586837467183431626401306208154938"
IMPLEMENTATION_VERSION = "DICOMFS_DEMO_1"

# Image Orientation (Patient) of every axial image and grid in the demo.
AXIAL = ("1", "0", "0", "0", "1", "0")

_UUID_NAMESPACE = uuid.UUID("5b0f3e0e-5f6c-4a43-9d59-6a1f0b6d2c11")
_TRANSFER_SYNTAX = {
    EXPLICIT_LE: ExplicitVRLittleEndian,
    BIG_ENDIAN: ExplicitVRBigEndian,
    DEFLATED: DeflatedExplicitVRLittleEndian,
}


# -- UIDs and values --------------------------------------------------------


def demo_uid(seed: int, *parts: object) -> str:
    """A UID that depends only on the seed and a name, so reruns agree."""
    name = "/".join(["dicomfs-demo", str(seed), *map(str, parts)])
    return f"2.25.{uuid.uuid5(_UUID_NAMESPACE, name).int}"


def corpus_uid(seed: int, name: str) -> str:
    """A deterministic UID (2.25 + 128-bit integer, PS3.5 B.2) for a hostile file's name.

    Another name space than ``demo_uid``, so the corpus and the tree never
    share a UID with a demo patient.
    """
    digest = hashlib.sha256(f"dicomfs-hostile/{seed}/{name}".encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def ds_str(value: float, decimals: int = 6) -> str:
    """Format a DS value within 16 characters; str(float) can exceed it."""
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def hash_name(uid: str, length: int = 16) -> str:
    """A short file or folder name derived from a UID, as PACS exports make them."""
    return hashlib.sha1(uid.encode("ascii")).hexdigest()[:length].upper()


# -- sequence items -----------------------------------------------------------


def item(**attributes: object) -> Dataset:
    """A sequence item from keywords, so nested sequences read as one expression."""
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def ref(sop_class: str, sop_uid: str, **more: object) -> Dataset:
    """A Referenced SOP Class / Instance UID item, the edge every reference carries."""
    return item(ReferencedSOPClassUID=sop_class, ReferencedSOPInstanceUID=sop_uid, **more)


def code(value: str, scheme: str, meaning: str) -> Dataset:
    """A coded-concept item."""
    return item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def referenced_series(series_uid: str, sop_class: str, uids: Iterable[str]) -> list[Dataset]:
    """A Referenced Series Sequence (Common Instance Reference) naming one series' instances."""
    instances = [ref(sop_class, uid) for uid in uids]
    return [item(SeriesInstanceUID=series_uid, ReferencedInstanceSequence=instances)]


# -- common modules -------------------------------------------------------------


@dataclass(frozen=True)
class Study:
    """Patient and study identity shared by every object of one patient."""

    patient_id: str
    patient_name: str
    study_uid: str
    date: str
    accession: str


def common(
    study: Study,
    *,
    sop_class: str,
    sop_uid: str,
    modality: str,
    series_uid: str,
    series_number: int,
    series_description: str,
    instance_number: int = 1,
    manufacturer: str = "dicomfs demo",
    time: str = "090000",
) -> Dataset:
    """SOP Common, Patient, General Study, (RT) Series and Equipment modules."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = study.date
    ds.InstanceCreationTime = time
    ds.StudyDate = study.date
    ds.SeriesDate = study.date
    ds.StudyTime = "090000"
    ds.SeriesTime = time
    ds.AccessionNumber = study.accession
    ds.Modality = modality
    ds.Manufacturer = manufacturer
    ds.InstitutionName = "Demo Clinic"
    ds.ReferringPhysicianName = "Demo^Referrer"
    ds.StudyDescription = "RT planning"
    ds.SeriesDescription = series_description
    ds.OperatorsName = ""
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    return ds


def ct_identity(
    sop_uid: str, study_uid: str, series_uid: str, patient_id: str = "HOSTILE"
) -> Dataset:
    """The few elements that make a hand-made file a CT instance: class, UIDs, modality, patient.

    What the hostile files and ``ct_bytes`` start from; the element order in
    the file is by tag whatever order they are set in.
    """
    ds = Dataset()
    ds.SOPClassUID = CT_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "CT"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    return ds


def frame_of_reference(ds: Dataset, for_uid: str) -> None:
    """The Frame of Reference module: the UID, with an empty position reference."""
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""


def content_identification(
    ds: Dataset, *, date: str, time: str, label: str, description: str, creator: str
) -> None:
    """Content date, time, label, description and creator of a derived object (REG, SEG)."""
    ds.ContentDate = date
    ds.ContentTime = time
    ds.ContentLabel = label
    ds.ContentDescription = description
    ds.ContentCreatorName = creator


def image_pixel(ds: Dataset, rows: int, columns: int, bits: int = 16, stored: int = 12) -> None:
    """The Image Pixel module of a monochrome, unsigned image."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = bits
    ds.BitsStored = stored
    ds.HighBit = stored - 1
    ds.PixelRepresentation = 0


def set_pixels(ds: Dataset, data: bytes, vr: str = "OW") -> None:
    """Pixel Data with an explicit VR, so big-endian and bit-packed data go in as given."""
    ds.add_new(0x7FE00010, vr, data)


# -- writing --------------------------------------------------------------------


def file_meta(sop_class: str, sop_uid: str, transfer_syntax: str) -> FileMetaDataset:
    """A File Meta group with our implementation identity (see IMPLEMENTATION_CLASS_UID)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    return meta


def save(ds: Dataset, path: Path, encoding: str) -> None:
    """Write ``ds`` the way the named exporter would.

    ``implicit_no_preamble`` imitates TPS exports (Monaco) that carry neither
    the 128-byte preamble nor a File Meta group (dicom-references.md 4.1).
    Big-endian callers must have swapped OW pixel data already: pydicom
    writes OB/OW bytes as given.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if encoding == IMPLICIT_NO_PREAMBLE:
        dcmwrite(path, ds, implicit_vr=True, little_endian=True)
        return
    ds.file_meta = file_meta(ds.SOPClassUID, ds.SOPInstanceUID, _TRANSFER_SYNTAX[encoding])
    dcmwrite(path, ds, enforce_file_format=True)


def dataset_bytes(ds: Dataset) -> bytes:
    """``ds`` (which has its file meta) as the bytes of a file with preamble.

    Callers that must let invalid values through wrap this in
    ``pydicom.config.disable_value_validation()`` themselves, around the
    edits as well as the write.
    """
    buffer = DicomBytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return bytes(buffer.getvalue())


def write_bytes(root: str | bytes | os.PathLike[str], relative: str | bytes, data: bytes) -> None:
    """Write ``data`` to ``root/relative``, making folders on the way.

    Bytes paths, so names that are not valid UTF-8 round-trip exactly.
    """
    path = os.fsencode(root) + b"/" + os.fsencode(relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
