"""Synthetic, coherent RT patients for tests, demos and benchmarks.

Real patient data cannot live in a repository, and hand-made fixtures drift
from what the code under test expects. So every test computes its
expectations from the :class:`DemoPatient` records returned here, never from
hard-coded UIDs. The data imitates what a clinic's folders actually hold:
files foldered by whoever exported them, several structure sets per CT
series, doses that name the plan and a plan that names only one of them,
wrong ReferencedSOPClassUID hints, files without preamble (Monaco-style),
big-endian and deflated files, and (in ``demo_hostile``) files that must be
rejected or flagged.

This is the one module besides the parser that imports pydicom, because it
writes DICOM rather than reading it. Output is deterministic for a given
seed: UIDs are name-based (``2.25.<uuid5>``, PS3.5 B.2), dates are fixed and
no clock or global random state is used, so two runs are byte-identical.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import random
import struct
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
)

from dicomfs.demo.hostile import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION, write_hostile

__all__ = [
    "BIG_ENDIAN",
    "DEFLATED",
    "EXPLICIT_LE",
    "IMPLICIT_NO_PREAMBLE",
    "DemoPatient",
    "DemoSet",
    "demo_data_command",
    "demo_uid",
    "write_ct_series",
    "write_demo",
]

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


_UUID_NAMESPACE = uuid.UUID("5b0f3e0e-5f6c-4a43-9d59-6a1f0b6d2c11")
_BASE_DATE = _dt.date(2024, 1, 8)
_CT_THICKNESS = 3.0
_CT_FOV = 256.0
_DOSE_GRID = 32
_DOSE_SPACING = 8.0
_DOSE_SCALING = "0.0001"
_PRESCRIPTION_GY = 60.0
_TRANSFER_SYNTAX = {
    EXPLICIT_LE: ExplicitVRLittleEndian,
    BIG_ENDIAN: ExplicitVRBigEndian,
    DEFLATED: DeflatedExplicitVRLittleEndian,
}


@dataclass(frozen=True)
class DemoPatient:
    """Everything a test needs to compute its expectations for one patient.

    ``structure_set_uids[0]`` is the structure set the plan names; the others
    reference the same CT series and must stay out of the plan package.
    ``missing_structure_set_uid`` is named by ``missing_structure_set_plan_uid``
    and deliberately not written. The DRR names the plan (with a wrong RT Ion
    Plan class hint); the portal image does not, so only the record leads to
    it. The verification plan sits on its own phantom frame of reference
    (``verification_plan_for_uid``). ``files`` and ``encodings`` cover every
    instance written for the patient.
    """

    patient_id: str
    study_uid: str
    ct_series_uid: str
    ct_uids: tuple[str, ...]
    mr_series_uid: str
    mr_uids: tuple[str, ...]
    ct_for_uid: str
    mr_for_uid: str
    structure_set_uids: tuple[str, ...]
    plan_uid: str
    plan_structure_set_uid: str
    plan_dose_uid: str
    beam_dose_uids: tuple[str, ...]
    rt_image_uid: str
    record_uid: str
    verification_image_uid: str
    verification_plan_uid: str
    registration_uid: str
    seg_uid: str
    missing_structure_set_plan_uid: str
    missing_structure_set_uid: str
    files: dict[str, str]
    encodings: dict[str, str]
    beam_numbers: tuple[int, ...] = (1, 2)
    verification_plan_for_uid: str = ""


@dataclass(frozen=True)
class DemoSet:
    """What ``write_demo`` wrote.

    ``hostile`` maps a relative path to the RejectKind value it must be
    rejected with, or to a tag for files that are indexed but flagged
    (``unsafe_uid``) or merely awkward (``non_utf8_name``). ``hostile_uids``
    gives the SOP Instance UID written into each hostile file that has one
    (raw, possibly unsafe). ``duplicates`` maps a description to
    ``(original, copy)`` relative paths. Non-UTF-8 paths are ``os.fsdecode``
    strings (surrogateescape).
    """

    root: Path
    patients: tuple[DemoPatient, ...]
    hostile: dict[str, str]
    duplicates: dict[str, tuple[str, ...]]
    hostile_uids: dict[str, str] = field(default_factory=dict)


def demo_uid(seed: int, *parts: object) -> str:
    """A UID that depends only on the seed and a name, so reruns agree."""
    name = "/".join(["dicomfs-demo", str(seed), *map(str, parts)])
    return f"2.25.{uuid.uuid5(_UUID_NAMESPACE, name).int}"


def _ds(value: float, decimals: int = 6) -> str:
    """Format a DS value within 16 characters; str(float) can exceed it."""
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def _ref(sop_class: str, sop_uid: str, **more: object) -> Dataset:
    return _item(ReferencedSOPClassUID=sop_class, ReferencedSOPInstanceUID=sop_uid, **more)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def _hash_name(uid: str, length: int = 16) -> str:
    return hashlib.sha1(uid.encode("ascii")).hexdigest()[:length].upper()


def _save(ds: Dataset, path: Path, encoding: str) -> None:
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
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(ds.SOPClassUID)
    meta.MediaStorageSOPInstanceUID = UID(ds.SOPInstanceUID)
    meta.TransferSyntaxUID = _TRANSFER_SYNTAX[encoding]
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds.file_meta = meta
    dcmwrite(path, ds, enforce_file_format=True)


# ---------------------------------------------------------------------------
# Geometry and pixels
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shape:
    """An axis-aligned ellipse in patient x/y (mm) painted with one value."""

    cx: float
    cy: float
    rx: float
    ry: float
    value: int

    def span(self, y: float) -> tuple[float, float] | None:
        t = (y - self.cy) / self.ry
        if abs(t) >= 1.0:
            return None
        half = self.rx * math.sqrt(1.0 - t * t)
        return self.cx - half, self.cx + half

    def polygon(self, z: float, points: int) -> list[str]:
        coords: list[str] = []
        for k in range(points):
            angle = 2.0 * math.pi * k / points
            x = self.cx + self.rx * math.cos(angle)
            y = self.cy + self.ry * math.sin(angle)
            coords += [_ds(x, 2), _ds(y, 2), _ds(z, 2)]
        return coords


@dataclass(frozen=True)
class _Grid:
    """A square image grid centred on the patient axis."""

    size: int
    fov: float

    @property
    def spacing(self) -> float:
        return self.fov / self.size

    @property
    def origin(self) -> float:
        return -self.fov / 2.0 + self.spacing / 2.0

    def columns(self, x0: float, x1: float) -> tuple[int, int]:
        first = math.ceil((x0 - self.origin) / self.spacing)
        last = math.floor((x1 - self.origin) / self.spacing) + 1
        return max(first, 0), min(last, self.size)


def _paint(grid: _Grid, shapes: Sequence[_Shape], background: int, fmt: str) -> bytes:
    """Unsigned 16-bit pixels, one row at a time with slice assignment.

    Per-pixel Python loops would take seconds for a 512x512 benchmark
    series; painting spans keeps it in milliseconds.
    """
    blank = struct.pack(fmt, background) * grid.size
    values = [struct.pack(fmt, shape.value) for shape in shapes]
    out = bytearray()
    for row in range(grid.size):
        line = bytearray(blank)
        y = grid.origin + row * grid.spacing
        for shape, value in zip(shapes, values, strict=True):
            span = shape.span(y)
            if span is None:
                continue
            c0, c1 = grid.columns(*span)
            if c1 > c0:
                line[c0 * 2 : c1 * 2] = value * (c1 - c0)
        out += line
    return bytes(out)


def _mask_bits(grid: _Grid, shape: _Shape) -> str:
    """One frame of a binary mask as '0'/'1' characters in pixel order."""
    rows: list[str] = []
    for row in range(grid.size):
        line = ["0"] * grid.size
        span = shape.span(grid.origin + row * grid.spacing)
        if span is not None:
            c0, c1 = grid.columns(*span)
            line[c0:c1] = ["1"] * max(c1 - c0, 0)
        rows.append("".join(line))
    return "".join(rows)


def _pack_bits(bits: str) -> bytes:
    """PS3.5 8.1.1: bit-packed pixels, first pixel in the lowest bit, even length."""
    nbytes = (len(bits) + 7) // 8
    nbytes += nbytes % 2
    return int(bits[::-1] or "0", 2).to_bytes(nbytes, "little")


def _z_positions(count: int, thickness: float) -> list[float]:
    return [(k - (count - 1) / 2.0) * thickness for k in range(count)]


def _body(z: float) -> _Shape:
    # Bounded along z, so long benchmark series keep a plausible body.
    return _Shape(0.0, 0.0, 90.0 + 10.0 * math.cos(z / 40.0), 70.0, 1064)


def _ct_shapes(z: float) -> list[_Shape]:
    return [_body(z), _Shape(0.0, 50.0, 12.0, 12.0, 1724)]


# ---------------------------------------------------------------------------
# Common modules
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Study:
    """Patient and study identity shared by every object of one patient."""

    patient_id: str
    patient_name: str
    study_uid: str
    date: str
    accession: str


def _common(
    study: _Study,
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


def _image_pixel(ds: Dataset, rows: int, columns: int, bits: int = 16, stored: int = 12) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = bits
    ds.BitsStored = stored
    ds.HighBit = stored - 1
    ds.PixelRepresentation = 0


def _set_pixels(ds: Dataset, data: bytes, vr: str = "OW") -> None:
    ds.add_new(0x7FE00010, vr, data)


def _ct_dataset(
    study: _Study,
    *,
    sop_uid: str,
    series_uid: str,
    for_uid: str,
    index: int,
    count: int,
    rows: int,
    big_endian: bool = False,
    series_description: str = "CT planning 3mm",
) -> Dataset:
    """One CT slice with a realistic header and a body/vertebra phantom."""
    grid = _Grid(rows, _CT_FOV)
    z = _z_positions(count, _CT_THICKNESS)[index]
    ds = _common(
        study,
        sop_class=CT_CLASS,
        sop_uid=sop_uid,
        modality="CT",
        series_uid=series_uid,
        series_number=2,
        series_description=series_description,
        instance_number=index + 1,
        manufacturer="Demo Medical Systems",
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ManufacturerModelName = "DemoCT 64"
    ds.StationName = "CTSIM1"
    ds.SoftwareVersions = "1.0"
    ds.BodyPartExamined = "PELVIS"
    ds.ScanOptions = "HELICAL MODE"
    ds.SliceThickness = _ds(_CT_THICKNESS)
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = _ds(_CT_FOV)
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "150"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "1000"
    ds.XRayTubeCurrent = 300
    ds.Exposure = 300
    ds.FilterType = "BODY"
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "HFS"
    ds.AcquisitionNumber = 1
    ds.ImagePositionPatient = [_ds(grid.origin), _ds(grid.origin), _ds(z)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = _ds(z)
    _image_pixel(ds, rows, rows)
    ds.PixelSpacing = [_ds(grid.spacing), _ds(grid.spacing)]
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    _set_pixels(ds, _paint(grid, _ct_shapes(z), 24, ">H" if big_endian else "<H"))
    return ds


def write_ct_series(root: Path, count: int, *, rows: int = 512, seed: int = 0) -> list[Path]:
    """Write one CT series of ``count`` slices for benchmarks.

    At ``rows=512`` each file is about 0.5 MB (512x512x2 bytes of pixels plus
    a realistic header), the size of a clinical CT slice, so index and read
    timings mean something.
    """
    if count < 1 or rows < 1:
        raise ValueError("count and rows must be positive")
    root.mkdir(parents=True, exist_ok=True)
    study = _Study(
        f"BENCH-{seed}", "Bench^Patient", demo_uid(seed, "bench", "study"), "20240101", "BENCH1"
    )
    series_uid = demo_uid(seed, "bench", "series", rows, count)
    for_uid = demo_uid(seed, "bench", "for")
    paths: list[Path] = []
    for index in range(count):
        sop_uid = demo_uid(seed, "bench", "ct", rows, count, index)
        ds = _ct_dataset(
            study,
            sop_uid=sop_uid,
            series_uid=series_uid,
            for_uid=for_uid,
            index=index,
            count=count,
            rows=rows,
        )
        path = root / f"CT{index + 1:06d}.dcm"
        _save(ds, path, EXPLICIT_LE)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------
# One patient
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Roi:
    number: int
    name: str
    kind: str
    color: tuple[int, int, int]
    shape: _Shape
    slices: tuple[int, ...]
    points: int


@dataclass
class _Writer:
    """Collects files and encodings while a patient's objects are written."""

    root: Path
    files: dict[str, str] = field(default_factory=dict)
    encodings: dict[str, str] = field(default_factory=dict)

    def write(self, ds: Dataset, relative: str, encoding: str = EXPLICIT_LE) -> str:
        uid = str(ds.SOPInstanceUID)
        _save(ds, self.root / relative, encoding)
        self.files[uid] = relative
        self.encodings[uid] = encoding
        return uid


class _PatientBuilder:
    """Builds and writes one coherent RT patient; UIDs are fixed up front."""

    def __init__(
        self, root: Path, seed: int, number: int, ct_slices: int, mr_slices: int, rows: int
    ):
        self.seed = seed
        self.number = number
        self.ct_slices = ct_slices
        self.mr_slices = mr_slices
        self.rows = rows
        self.rng = random.Random(f"dicomfs-demo/{seed}/{number}")
        self.writer = _Writer(root)
        pid = f"DEMO-{seed}-{number:03d}"
        self.pid = pid
        date = (_BASE_DATE + _dt.timedelta(days=7 * (number - 1))).strftime("%Y%m%d")
        self.study = _Study(
            pid, f"Demo^Patient{number}", self.uid("study"), date, f"ACC{seed}{number:04d}"
        )
        self.ct_series = self.uid("ct-series")
        self.mr_series = self.uid("mr-series")
        self.ct_for = self.uid("ct-for")
        self.mr_for = self.uid("mr-for")
        self.phantom_for = self.uid("phantom-for")
        self.ct_uids = tuple(self.uid("ct", k) for k in range(ct_slices))
        self.mr_uids = tuple(self.uid("mr", k) for k in range(mr_slices))
        self.rs_uids = tuple(self.uid("rs", k) for k in range(3))
        self.plan = self.uid("plan")
        self.plan_dose = self.uid("plan-dose")
        self.beam_doses = tuple(self.uid("beam-dose", b) for b in (1, 2))
        self.drr = self.uid("drr")
        self.record = self.uid("record")
        self.portal = self.uid("portal")
        self.verification_plan = self.uid("verification-plan")
        self.registration = self.uid("registration")
        self.seg = self.uid("seg")
        self.missing_plan = self.uid("missing-rs-plan")
        self.missing_rs = self.uid("missing-rs")
        self.z = _z_positions(ct_slices, _CT_THICKNESS)
        quarter = ct_slices // 4
        target_slices = tuple(range(quarter, ct_slices - quarter)) or tuple(range(ct_slices))
        self.ptv = _Shape(
            20.0 + self.rng.uniform(-5, 5), -10.0 + self.rng.uniform(-5, 5), 25.0, 25.0, 1
        )
        every = tuple(range(ct_slices))
        self.rois = (
            _Roi(1, "BODY", "EXTERNAL", (0, 255, 0), _body(0.0), every, 32),
            _Roi(2, "PTV", "PTV", (255, 0, 0), self.ptv, target_slices, 24),
            _Roi(3, "SpinalCanal", "ORGAN", (255, 255, 0), _Shape(0, 50, 8, 8, 1), every, 16),
        )
        self.gantry = (self.rng.choice((0, 10, 20)), self.rng.choice((180, 190, 200)))
        # Patient 1 carries the odd encodings, so every other patient is a
        # plain control case.
        self.quirky = number == 1

    def uid(self, *parts: object) -> str:
        # The sizes are part of the name: a demo of another shape has other
        # content, so it must not reuse UIDs (that would be a conflict).
        shape = (self.ct_slices, self.mr_slices, self.rows)
        return demo_uid(self.seed, "patient", self.number, *shape, *parts)

    def common(self, **kwargs: Any) -> Dataset:
        return _common(self.study, **kwargs)

    def tps(self, prefix: str, uid: str) -> str:
        return f"export-tps/{self.pid}/{prefix}.{uid}.dcm"

    # -- images -----------------------------------------------------------

    def write_ct(self) -> None:
        folder = f"pacs/{_hash_name(self.study.study_uid, 8)}"
        big_endian_index = 3 % self.ct_slices
        for k, uid in enumerate(self.ct_uids):
            big = self.quirky and k == big_endian_index and self.ct_slices > 1
            ds = _ct_dataset(
                self.study,
                sop_uid=uid,
                series_uid=self.ct_series,
                for_uid=self.ct_for,
                index=k,
                count=self.ct_slices,
                rows=self.rows,
                big_endian=big,
            )
            self.writer.write(
                ds, f"{folder}/{_hash_name(uid)}.dcm", BIG_ENDIAN if big else EXPLICIT_LE
            )

    def write_mr(self) -> None:
        size = max(16, self.rows // 2)
        grid = _Grid(size, _CT_FOV)
        z = _z_positions(self.mr_slices, 5.0)
        for k, uid in enumerate(self.mr_uids):
            ds = self.common(
                sop_class=MR_CLASS,
                sop_uid=uid,
                modality="MR",
                series_uid=self.mr_series,
                series_number=3,
                series_description="T2 AX",
                instance_number=k + 1,
                manufacturer="Demo MR",
            )
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
            ds.ScanningSequence = "SE"
            ds.SequenceVariant = "SK"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "2D"
            ds.SliceThickness = "5"
            ds.RepetitionTime = "4000"
            ds.EchoTime = "90"
            ds.MagneticFieldStrength = "1.5"
            ds.PatientPosition = "HFS"
            ds.ImagePositionPatient = [_ds(grid.origin + 3), _ds(grid.origin - 7), _ds(z[k] + 12)]
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
            ds.FrameOfReferenceUID = self.mr_for
            ds.PositionReferenceIndicator = ""
            ds.SliceLocation = _ds(z[k] + 12)
            _image_pixel(ds, size, size)
            ds.PixelSpacing = [_ds(grid.spacing), _ds(grid.spacing)]
            shapes = [_Shape(-3, 7, 95, 68, 600), _Shape(-3, 57, 10, 10, 1500)]
            _set_pixels(ds, _paint(grid, shapes, 0, "<H"))
            self.writer.write(ds, f"cd-import/CD{self.number:02d}/DICOM/IMG{k + 1:04d}")

    # -- structure sets ---------------------------------------------------

    def structure_set(self, index: int, label: str, rois: Sequence[_Roi]) -> Dataset:
        ds = self.common(
            sop_class=RT_STRUCT_CLASS,
            sop_uid=self.rs_uids[index],
            modality="RTSTRUCT",
            series_uid=self.uid("rs-series", index),
            series_number=10 + index,
            series_description=label,
            time=f"1{index}0000",
        )
        ds.StructureSetLabel = label
        ds.StructureSetName = label
        ds.StructureSetDate = self.study.date
        ds.StructureSetTime = f"1{index}0000"
        if index == 1:
            # Newer writers add the (optional) top-level Frame of Reference.
            ds.FrameOfReferenceUID = self.ct_for
            ds.PositionReferenceIndicator = ""
        contour_images = [_ref(CT_CLASS, uid) for uid in self.ct_uids]
        series = _item(SeriesInstanceUID=self.ct_series, ContourImageSequence=contour_images)
        study = _ref(
            STUDY_MANAGEMENT_CLASS, self.study.study_uid, RTReferencedSeriesSequence=[series]
        )
        ds.ReferencedFrameOfReferenceSequence = [
            _item(FrameOfReferenceUID=self.ct_for, RTReferencedStudySequence=[study])
        ]
        ds.StructureSetROISequence = [
            _item(
                ROINumber=roi.number,
                ReferencedFrameOfReferenceUID=self.ct_for,
                ROIName=roi.name,
                ROIGenerationAlgorithm="MANUAL" if index == 0 else "AUTOMATIC",
            )
            for roi in rois
        ]
        contours = []
        for roi in rois:
            planes = [
                _item(
                    ContourImageSequence=[_ref(CT_CLASS, self.ct_uids[k])],
                    ContourGeometricType="CLOSED_PLANAR",
                    NumberOfContourPoints=roi.points,
                    ContourNumber=n + 1,
                    ContourData=roi.shape.polygon(self.z[k], roi.points),
                )
                for n, k in enumerate(roi.slices)
            ]
            contours.append(
                _item(
                    ROIDisplayColor=list(roi.color),
                    ReferencedROINumber=roi.number,
                    ContourSequence=planes,
                )
            )
        ds.ROIContourSequence = contours
        ds.RTROIObservationsSequence = [
            _item(
                ObservationNumber=roi.number,
                ReferencedROINumber=roi.number,
                RTROIInterpretedType=roi.kind,
                ROIInterpreter="",
            )
            for roi in rois
        ]
        ds.ApprovalStatus = "APPROVED" if index == 0 else "UNAPPROVED"
        return ds

    def write_structure_sets(self) -> None:
        labels = ("Clinical", "AutoContour", "Review")
        encodings = (
            (IMPLICIT_NO_PREAMBLE, DEFLATED, EXPLICIT_LE)
            if self.quirky
            else (EXPLICIT_LE, EXPLICIT_LE, EXPLICIT_LE)
        )
        for index, label in enumerate(labels):
            rois = self.rois if index != 1 else (self.rois[0], self.rois[2])
            ds = self.structure_set(index, label, rois)
            self.writer.write(ds, self.tps("RS", self.rs_uids[index]), encodings[index])

    # -- plans ------------------------------------------------------------

    def beam(self, number: int, gantry: float, reference_image: str | None) -> Dataset:
        iso = [_ds(self.ptv.cx, 2), _ds(self.ptv.cy, 2), "0"]
        jaws = [
            _item(RTBeamLimitingDeviceType="ASYMX", LeafJawPositions=["-40", "40"]),
            _item(RTBeamLimitingDeviceType="ASYMY", LeafJawPositions=["-40", "40"]),
        ]
        first = _item(
            ControlPointIndex=0,
            NominalBeamEnergy="6",
            DoseRateSet="600",
            BeamLimitingDevicePositionSequence=jaws,
            GantryAngle=_ds(gantry),
            GantryRotationDirection="NONE",
            BeamLimitingDeviceAngle="0",
            BeamLimitingDeviceRotationDirection="NONE",
            PatientSupportAngle="0",
            PatientSupportRotationDirection="NONE",
            TableTopEccentricAngle="0",
            TableTopEccentricRotationDirection="NONE",
            IsocenterPosition=iso,
            SourceToSurfaceDistance="920",
            CumulativeMetersetWeight="0",
        )
        last = _item(ControlPointIndex=1, CumulativeMetersetWeight="1")
        beam = _item(
            BeamNumber=number,
            BeamName=f"G{int(gantry)}",
            BeamDescription=f"Field {number}",
            BeamType="STATIC",
            RadiationType="PHOTON",
            TreatmentMachineName="DemoLinac",
            Manufacturer="Demo Linacs",
            PrimaryDosimeterUnit="MU",
            SourceAxisDistance="1000",
            BeamLimitingDeviceSequence=[
                _item(RTBeamLimitingDeviceType="ASYMX", NumberOfLeafJawPairs=1),
                _item(RTBeamLimitingDeviceType="ASYMY", NumberOfLeafJawPairs=1),
            ],
            ReferencedPatientSetupNumber=1,
            TreatmentDeliveryType="TREATMENT",
            NumberOfWedges=0,
            NumberOfCompensators=0,
            NumberOfBoli=0,
            NumberOfBlocks=0,
            FinalCumulativeMetersetWeight="1",
            NumberOfControlPoints=2,
            ControlPointSequence=[first, last],
        )
        if reference_image is not None:
            beam.ReferencedReferenceImageSequence = [_ref(RT_IMAGE_CLASS, reference_image)]
        return beam

    def plan_dataset(
        self,
        *,
        uid: str,
        label: str,
        intent: str,
        geometry: str,
        for_uid: str,
        beams: Sequence[Dataset],
        fractions: int,
        structure_set: str | None,
    ) -> Dataset:
        ds = self.common(
            sop_class=RT_PLAN_CLASS,
            sop_uid=uid,
            modality="RTPLAN",
            series_uid=self.uid("plan-series", uid),
            series_number=20,
            series_description=label,
            time="120000",
            manufacturer="Demo TPS",
        )
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.RTPlanLabel = label
        ds.RTPlanName = label
        ds.RTPlanDate = self.study.date
        ds.RTPlanTime = "120000"
        ds.PlanIntent = intent
        ds.RTPlanGeometry = geometry
        if structure_set is not None:
            ds.ReferencedStructureSetSequence = [_ref(RT_STRUCT_CLASS, structure_set)]
        ds.PatientSetupSequence = [
            _item(PatientSetupNumber=1, PatientPosition="HFS", SetupTechnique="ISOCENTRIC")
        ]
        meterset = _ds(_PRESCRIPTION_GY / fractions * 100 / max(len(beams), 1), 2)
        ds.FractionGroupSequence = [
            _item(
                FractionGroupNumber=1,
                NumberOfFractionsPlanned=fractions,
                NumberOfBeams=len(beams),
                NumberOfBrachyApplicationSetups=0,
                ReferencedBeamSequence=[
                    _item(
                        ReferencedBeamNumber=beam.BeamNumber,
                        BeamMeterset=meterset,
                        BeamDose=_ds(_PRESCRIPTION_GY / fractions / len(beams), 4),
                    )
                    for beam in beams
                ],
            )
        ]
        ds.BeamSequence = list(beams)
        ds.ApprovalStatus = "APPROVED"
        return ds

    def write_plans(self) -> None:
        ptv = self.rois[1]
        plan = self.plan_dataset(
            uid=self.plan,
            label="Prostate",
            intent="CURATIVE",
            geometry="PATIENT",
            for_uid=self.ct_for,
            beams=[self.beam(1, self.gantry[0], self.drr), self.beam(2, self.gantry[1], None)],
            fractions=30,
            structure_set=self.rs_uids[0],
        )
        plan.ReferencedDoseSequence = [_ref(RT_DOSE_CLASS, self.plan_dose)]
        plan.DoseReferenceSequence = [
            _item(
                DoseReferenceNumber=1,
                DoseReferenceUID=self.uid("dose-reference"),
                DoseReferenceStructureType="VOLUME",
                DoseReferenceDescription=ptv.name,
                ReferencedROINumber=ptv.number,
                DoseReferenceType="TARGET",
                TargetPrescriptionDose=_ds(_PRESCRIPTION_GY),
            )
        ]
        encoding = IMPLICIT_NO_PREAMBLE if self.quirky else EXPLICIT_LE
        self.writer.write(plan, self.tps("RP", self.plan), encoding)

        qa = self.plan_dataset(
            uid=self.verification_plan,
            label="Prostate QA",
            intent="VERIFICATION",
            geometry="TREATMENT_DEVICE",
            for_uid=self.phantom_for,
            beams=[self.beam(1, 0, None), self.beam(2, 0, None)],
            fractions=1,
            structure_set=None,
        )
        qa.ReferencedRTPlanSequence = [
            _ref(RT_PLAN_CLASS, self.plan, RTPlanRelationship="VERIFIED_PLAN")
        ]
        self.writer.write(qa, self.tps("RP", self.verification_plan))

        orphan = self.plan_dataset(
            uid=self.missing_plan,
            label="Boost",
            intent="CURATIVE",
            geometry="PATIENT",
            for_uid=self.ct_for,
            beams=[self.beam(1, self.gantry[0], None)],
            fractions=5,
            structure_set=self.missing_rs,
        )
        self.writer.write(orphan, self.tps("RP", self.missing_plan))

    # -- doses ------------------------------------------------------------

    def dose_pixels(self, centre_shift: float, peak_gy: float) -> bytes:
        sigma2 = 2.0 * 30.0**2
        peak = peak_gy / float(_DOSE_SCALING)
        grid = _Grid(_DOSE_GRID, _DOSE_GRID * _DOSE_SPACING)
        values: list[int] = []
        for z in self.z:
            for row in range(_DOSE_GRID):
                y = grid.origin + row * grid.spacing - self.ptv.cy
                for col in range(_DOSE_GRID):
                    x = grid.origin + col * grid.spacing - self.ptv.cx - centre_shift
                    values.append(int(peak * math.exp(-(x * x + y * y + z * z) / sigma2)))
        return struct.pack(f"<{len(values)}I", *values)

    def dose(self, uid: str, beam: int | None) -> Dataset:
        label = "PLAN" if beam is None else "BEAM"
        ds = self.common(
            sop_class=RT_DOSE_CLASS,
            sop_uid=uid,
            modality="RTDOSE",
            series_uid=self.uid("dose-series", uid),
            series_number=30,
            series_description=f"Dose {label}",
            time="121500",
            manufacturer="Demo TPS",
        )
        grid = _Grid(_DOSE_GRID, _DOSE_GRID * _DOSE_SPACING)
        ds.FrameOfReferenceUID = self.ct_for
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [_ds(grid.origin), _ds(grid.origin), _ds(self.z[0])]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = [_ds(grid.spacing), _ds(grid.spacing)]
        ds.SliceThickness = ""
        ds.NumberOfFrames = len(self.z)
        ds.FrameIncrementPointer = 0x3004000C
        ds.GridFrameOffsetVector = [_ds(z - self.z[0]) for z in self.z]
        _image_pixel(ds, _DOSE_GRID, _DOSE_GRID, bits=32, stored=32)
        ds.DoseUnits = "GY"
        ds.DoseType = "PHYSICAL"
        ds.DoseSummationType = label
        ds.DoseGridScaling = _DOSE_SCALING
        ds.TissueHeterogeneityCorrection = "IMAGE"
        plan_ref = _ref(RT_PLAN_CLASS, self.plan)
        if beam is not None:
            plan_ref.ReferencedFractionGroupSequence = [
                _item(
                    ReferencedFractionGroupNumber=1,
                    ReferencedBeamSequence=[_item(ReferencedBeamNumber=beam)],
                )
            ]
        ds.ReferencedRTPlanSequence = [plan_ref]
        peak = _PRESCRIPTION_GY * (1.05 if beam is None else 0.525)
        shift = 0.0 if beam is None else (-5.0 if beam == 1 else 5.0)
        _set_pixels(ds, self.dose_pixels(shift, peak))
        return ds

    def write_doses(self) -> None:
        self.writer.write(self.dose(self.plan_dose, None), self.tps("RD", self.plan_dose))
        for beam, uid in zip((1, 2), self.beam_doses, strict=True):
            self.writer.write(self.dose(uid, beam), self.tps("RD", uid))

    # -- RT images and treatment record ----------------------------------

    def rt_image(self, uid: str, kind: str, plan_class: str | None, sid: str) -> Dataset:
        size = 32
        ds = self.common(
            sop_class=RT_IMAGE_CLASS,
            sop_uid=uid,
            modality="RTIMAGE",
            series_uid=self.uid("rtimage-series", kind),
            series_number=40,
            series_description=kind,
            time="123000" if kind == "DRR" else "150000",
            manufacturer="Demo TPS" if kind == "DRR" else "Demo Linacs",
        )
        ds.ImageType = ["ORIGINAL", "PRIMARY", kind]
        ds.ConversionType = "WSD"
        _image_pixel(ds, size, size, stored=16)
        ds.RTImageLabel = f"{kind} G{self.gantry[0]}"
        ds.RTImagePlane = "NORMAL"
        ds.ImagePlanePixelSpacing = ["8", "8"]
        ds.RTImagePosition = ["-124", "124"]
        ds.RadiationMachineName = "DemoLinac"
        ds.PrimaryDosimeterUnit = "MU"
        ds.RadiationMachineSAD = "1000"
        ds.RTImageSID = sid
        ds.GantryAngle = _ds(self.gantry[0])
        ds.BeamLimitingDeviceAngle = "0"
        ds.PatientSupportAngle = "0"
        if plan_class is not None:
            ds.ReferencedRTPlanSequence = [_ref(plan_class, self.plan)]
            ds.ReferencedBeamNumber = 1
            ds.ReferencedFractionGroupNumber = 1
        grid = _Grid(size, 256.0)
        _set_pixels(ds, _paint(grid, [_Shape(0, 0, 80, 60, 30000)], 2000, "<H"))
        return ds

    def write_rt_images(self) -> None:
        # Quirk (dicom-references.md 4.3): the DRR claims the plan is an RT
        # Ion Plan; resolution must go by instance UID, not by class.
        drr = self.rt_image(self.drr, "DRR", RT_ION_PLAN_CLASS, "1000")
        self.writer.write(drr, self.tps("RI", self.drr))
        # The portal image does not name the plan (its reference is type 3):
        # only the record's ReferencedVerificationImageSequence leads to it,
        # which exercises the record -> image hop (dicom-references.md 3.3 D).
        portal = self.rt_image(self.portal, "PORTAL", None, "1500")
        self.writer.write(portal, f"record-verify/{self.pid}/PORTAL_{_hash_name(self.portal, 8)}")

    def write_record(self) -> None:
        ds = self.common(
            sop_class=RT_RECORD_CLASS,
            sop_uid=self.record,
            modality="RTRECORD",
            series_uid=self.uid("record-series"),
            series_number=50,
            series_description="Treatment records",
            time="150500",
            manufacturer="Demo Linacs",
        )
        ds.TreatmentDate = self.study.date
        ds.TreatmentTime = "150000"
        ds.ReferencedRTPlanSequence = [_ref(RT_PLAN_CLASS, self.plan)]
        ds.TreatmentMachineSequence = [
            _item(
                TreatmentMachineName="DemoLinac",
                Manufacturer="Demo Linacs",
                InstitutionName="Demo Clinic",
                ManufacturerModelName="Linac 1",
                DeviceSerialNumber="0001",
            )
        ]
        ds.ReferencedFractionGroupNumber = 1
        ds.NumberOfFractionsPlanned = 30
        ds.PrimaryDosimeterUnit = "MU"
        items = []
        for beam, gantry in zip((1, 2), self.gantry, strict=True):
            item = _item(
                ReferencedBeamNumber=beam,
                BeamName=f"G{gantry}",
                BeamType="STATIC",
                RadiationType="PHOTON",
                NumberOfWedges=0,
                NumberOfCompensators=0,
                NumberOfBoli=0,
                NumberOfBlocks=0,
                CurrentFractionNumber=1,
                TreatmentDeliveryType="TREATMENT",
                TreatmentTerminationStatus="NORMAL",
                TreatmentVerificationStatus="VERIFIED",
                SpecifiedPrimaryMeterset="100",
                DeliveredPrimaryMeterset="100",
                NumberOfControlPoints=2,
                ControlPointDeliverySequence=[
                    _item(
                        ReferencedControlPointIndex=k,
                        TreatmentControlPointDate=self.study.date,
                        TreatmentControlPointTime="150000",
                        DeliveredMeterset=_ds(100 * k),
                        GantryAngle=_ds(gantry),
                    )
                    for k in (0, 1)
                ],
            )
            if beam == 1:
                item.ReferencedVerificationImageSequence = [_ref(RT_IMAGE_CLASS, self.portal)]
            items.append(item)
        ds.TreatmentSessionBeamSequence = items
        self.writer.write(ds, f"record-verify/{self.pid}/RT_RECORD_{_hash_name(self.record, 8)}")

    # -- registration and segmentation ------------------------------------

    def write_registration(self) -> None:
        ds = self.common(
            sop_class=REG_CLASS,
            sop_uid=self.registration,
            modality="REG",
            series_uid=self.uid("reg-series"),
            series_number=60,
            series_description="CT-MR rigid",
            time="110000",
            manufacturer="Demo Workstation",
        )
        ds.FrameOfReferenceUID = self.ct_for
        ds.PositionReferenceIndicator = ""
        ds.ContentDate = self.study.date
        ds.ContentTime = "110000"
        ds.ContentLabel = "CT_MR_REG"
        ds.ContentDescription = "Rigid CT to MR"
        ds.ContentCreatorName = "Demo^Physicist"

        def registration(for_uid: str, matrix: list[float], images: Iterable[str]) -> Dataset:
            item = _item(
                FrameOfReferenceUID=for_uid,
                RegistrationTypeCodeSequence=[],
                MatrixRegistrationSequence=[
                    _item(
                        MatrixSequence=[
                            _item(
                                FrameOfReferenceTransformationMatrix=[_ds(v) for v in matrix],
                                FrameOfReferenceTransformationMatrixType="RIGID",
                            )
                        ]
                    )
                ],
            )
            refs = [_ref(MR_CLASS, uid) for uid in images]
            if refs:
                item.ReferencedImageSequence = refs
            return item

        identity = [1.0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
        shift = [1.0, 0, 0, -3, 0, 1, 0, 7, 0, 0, 1, -12, 0, 0, 0, 1]
        ds.RegistrationSequence = [
            registration(self.ct_for, identity, ()),
            registration(self.mr_for, shift, self.mr_uids),
        ]
        # Common Instance Reference is mandatory in the Spatial Registration IOD.
        ds.ReferencedSeriesSequence = [
            _item(
                SeriesInstanceUID=self.mr_series,
                ReferencedInstanceSequence=[_ref(MR_CLASS, uid) for uid in self.mr_uids],
            )
        ]
        self.writer.write(ds, f"workstation/{self.pid}/REG_{_hash_name(self.registration, 8)}.dcm")

    def write_seg(self) -> None:
        grid = _Grid(self.rows, _CT_FOV)
        ds = self.common(
            sop_class=SEG_CLASS,
            sop_uid=self.seg,
            modality="SEG",
            series_uid=self.uid("seg-series"),
            series_number=70,
            series_description="PTV segmentation",
            time="113000",
            manufacturer="Demo Workstation",
        )
        ds.ImageType = ["DERIVED", "PRIMARY"]
        ds.ManufacturerModelName = "DemoSeg"
        ds.DeviceSerialNumber = "0001"
        ds.SoftwareVersions = "1.0"
        ds.FrameOfReferenceUID = self.ct_for
        ds.PositionReferenceIndicator = ""
        ds.ContentDate = self.study.date
        ds.ContentTime = "113000"
        ds.ContentLabel = "PTV"
        ds.ContentDescription = "PTV mask"
        ds.ContentCreatorName = "Demo^Physician"
        _image_pixel(ds, self.rows, self.rows, bits=1, stored=1)
        ds.LossyImageCompression = "00"
        ds.SegmentationType = "BINARY"
        ds.NumberOfFrames = self.ct_slices
        ds.SegmentSequence = [
            _item(
                SegmentNumber=1,
                SegmentLabel="PTV",
                SegmentAlgorithmType="MANUAL",
                SegmentedPropertyCategoryCodeSequence=[
                    _code("M-01000", "SRT", "Morphologically Altered Structure")
                ],
                SegmentedPropertyTypeCodeSequence=[_code("M-80003", "SRT", "Neoplasm, Primary")],
            )
        ]
        dimension_uid = self.uid("seg-dimensions")
        ds.DimensionOrganizationSequence = [_item(DimensionOrganizationUID=dimension_uid)]
        ds.DimensionOrganizationType = "3D"
        ds.DimensionIndexSequence = [
            _item(
                DimensionOrganizationUID=dimension_uid,
                DimensionIndexPointer=0x0062000B,
                FunctionalGroupPointer=0x0062000A,
            ),
            _item(
                DimensionOrganizationUID=dimension_uid,
                DimensionIndexPointer=0x00200032,
                FunctionalGroupPointer=0x00209113,
            ),
        ]
        ds.SharedFunctionalGroupsSequence = [
            _item(
                PixelMeasuresSequence=[
                    _item(
                        PixelSpacing=[_ds(grid.spacing), _ds(grid.spacing)],
                        SliceThickness=_ds(_CT_THICKNESS),
                        SpacingBetweenSlices=_ds(_CT_THICKNESS),
                    )
                ],
                PlaneOrientationSequence=[
                    _item(ImageOrientationPatient=["1", "0", "0", "0", "1", "0"])
                ],
            )
        ]
        frames = []
        target = set(self.rois[1].slices)
        bits: list[str] = []
        for k, uid in enumerate(self.ct_uids):
            source = _ref(
                CT_CLASS,
                uid,
                PurposeOfReferenceCodeSequence=[
                    _code("121322", "DCM", "Source image for image processing operation")
                ],
            )
            frames.append(
                _item(
                    DerivationImageSequence=[
                        _item(
                            SourceImageSequence=[source],
                            DerivationCodeSequence=[_code("113076", "DCM", "Segmentation")],
                        )
                    ],
                    FrameContentSequence=[_item(DimensionIndexValues=[1, k + 1])],
                    PlanePositionSequence=[
                        _item(
                            ImagePositionPatient=[
                                _ds(grid.origin),
                                _ds(grid.origin),
                                _ds(self.z[k]),
                            ]
                        )
                    ],
                    SegmentIdentificationSequence=[_item(ReferencedSegmentNumber=1)],
                )
            )
            if k in target:
                bits.append(_mask_bits(grid, self.ptv))
            else:
                bits.append("0" * (grid.size * grid.size))
        ds.PerFrameFunctionalGroupsSequence = frames
        ds.ReferencedSeriesSequence = [
            _item(
                SeriesInstanceUID=self.ct_series,
                ReferencedInstanceSequence=[_ref(CT_CLASS, uid) for uid in self.ct_uids],
            )
        ]
        _set_pixels(ds, _pack_bits("".join(bits)), vr="OB")
        self.writer.write(ds, f"workstation/{self.pid}/SEG_{_hash_name(self.seg, 8)}.dcm")

    # -- all --------------------------------------------------------------

    def write(self) -> DemoPatient:
        self.write_ct()
        self.write_mr()
        self.write_structure_sets()
        self.write_plans()
        self.write_doses()
        self.write_rt_images()
        self.write_record()
        self.write_registration()
        self.write_seg()
        return DemoPatient(
            patient_id=self.pid,
            study_uid=self.study.study_uid,
            ct_series_uid=self.ct_series,
            ct_uids=self.ct_uids,
            mr_series_uid=self.mr_series,
            mr_uids=self.mr_uids,
            ct_for_uid=self.ct_for,
            mr_for_uid=self.mr_for,
            structure_set_uids=self.rs_uids,
            plan_uid=self.plan,
            plan_structure_set_uid=self.rs_uids[0],
            plan_dose_uid=self.plan_dose,
            beam_dose_uids=self.beam_doses,
            rt_image_uid=self.drr,
            record_uid=self.record,
            verification_image_uid=self.portal,
            verification_plan_uid=self.verification_plan,
            registration_uid=self.registration,
            seg_uid=self.seg,
            missing_structure_set_plan_uid=self.missing_plan,
            missing_structure_set_uid=self.missing_rs,
            files=dict(self.writer.files),
            encodings=dict(self.writer.encodings),
            verification_plan_for_uid=self.phantom_for,
        )


def write_demo(
    root: Path,
    *,
    patients: int = 2,
    ct_slices: int = 8,
    mr_slices: int = 4,
    hostile: bool = True,
    seed: int = 0,
    ct_rows: int = 64,
) -> DemoSet:
    """Write ``patients`` coherent RT patients (and hostile files) under ``root``.

    Patient 1 carries the awkward encodings (plan and clinical RS without
    preamble or file meta, a deflated RS, a big-endian CT slice); the others
    are plain explicit VR little endian, so a failure points at either the
    encoding or the graph.
    """
    if patients < 1 or ct_slices < 1 or mr_slices < 1 or ct_rows < 8:
        raise ValueError("patients, ct_slices and mr_slices must be >= 1 and ct_rows >= 8")
    root.mkdir(parents=True, exist_ok=True)
    built = tuple(
        _PatientBuilder(root, seed, number, ct_slices, mr_slices, ct_rows).write()
        for number in range(1, patients + 1)
    )
    if not hostile:
        return DemoSet(root=root, patients=built, hostile={}, duplicates={})
    first = built[0]
    plain_ct = [first.files[uid] for uid in first.ct_uids if first.encodings[uid] == EXPLICIT_LE]
    result = write_hostile(
        root,
        seed=seed,
        ct_paths=plain_ct,
        make_uid=lambda name: demo_uid(seed, "hostile", ct_slices, mr_slices, ct_rows, name),
    )
    return DemoSet(
        root=root,
        patients=built,
        hostile=result.hostile,
        duplicates=result.duplicates,
        hostile_uids=result.uids,
    )


def demo_data_command(dest: Path, patients: int, ct_slices: int) -> DemoSet:
    """Entry point for ``dicomfs demo-data``: the default demo with hostile files."""
    return write_demo(dest, patients=patients, ct_slices=ct_slices)
