"""CT and MR images: a patient's planning CT and MR, benchmark CT series, and small CT files.

The planning CT carries a realistic header (the size of a clinical slice at
512 rows, so benchmark timings mean something) and the body/vertebra
phantom; patient 1 gets one big-endian slice. ``ct_bytes`` is the small but
complete CT that the hostile corpus, the hostile tree and tests build their
cases from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from pydicom import config
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomfs.demo.builders import (
    AXIAL,
    BIG_ENDIAN,
    CT_CLASS,
    EXPLICIT_LE,
    MR_CLASS,
    Study,
    common,
    ct_identity,
    dataset_bytes,
    demo_uid,
    ds_str,
    file_meta,
    frame_of_reference,
    hash_name,
    image_pixel,
    save,
    set_pixels,
)
from dicomfs.demo.phantom import CT_FOV, CT_THICKNESS, Grid, Shape, ct_shapes, paint, z_positions
from dicomfs.demo.scenario import PatientScenario

__all__ = ["ct_bytes", "ct_dataset", "write_ct", "write_ct_series", "write_mr"]

_SMALL_CT_PIXELS = 16  # rows and columns of ct_bytes: small, but a real image


def ct_dataset(
    study: Study,
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
    grid = Grid(rows, CT_FOV)
    z = z_positions(count, CT_THICKNESS)[index]
    ds = common(
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
    ds.SliceThickness = ds_str(CT_THICKNESS)
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = ds_str(CT_FOV)
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
    ds.ImagePositionPatient = grid.position(z)
    ds.ImageOrientationPatient = list(AXIAL)
    frame_of_reference(ds, for_uid)
    ds.SliceLocation = ds_str(z)
    image_pixel(ds, rows, rows)
    ds.PixelSpacing = grid.pixel_spacing()
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    set_pixels(ds, paint(grid, ct_shapes(z), 24, ">H" if big_endian else "<H"))
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
    study = Study(
        f"BENCH-{seed}", "Bench^Patient", demo_uid(seed, "bench", "study"), "20240101", "BENCH1"
    )
    series_uid = demo_uid(seed, "bench", "series", rows, count)
    for_uid = demo_uid(seed, "bench", "for")
    paths: list[Path] = []
    for index in range(count):
        sop_uid = demo_uid(seed, "bench", "ct", rows, count, index)
        ds = ct_dataset(
            study,
            sop_uid=sop_uid,
            series_uid=series_uid,
            for_uid=for_uid,
            index=index,
            count=count,
            rows=rows,
        )
        path = root / f"CT{index + 1:06d}.dcm"
        save(ds, path, EXPLICIT_LE)
        paths.append(path)
    return paths


def write_ct(p: PatientScenario) -> None:
    """The planning CT in a PACS export folder; patient 1 has one big-endian slice."""
    folder = f"pacs/{hash_name(p.study.study_uid, 8)}"
    big_endian_index = 3 % p.ct_slices
    for k, uid in enumerate(p.ct_uids):
        big = p.quirky and k == big_endian_index and p.ct_slices > 1
        ds = ct_dataset(
            p.study,
            sop_uid=uid,
            series_uid=p.ct_series,
            for_uid=p.ct_for,
            index=k,
            count=p.ct_slices,
            rows=p.rows,
            big_endian=big,
        )
        p.writer.write(ds, f"{folder}/{hash_name(uid)}.dcm", BIG_ENDIAN if big else EXPLICIT_LE)


def write_mr(p: PatientScenario) -> None:
    """The MR on its own frame of reference, as imported from a CD (no file extensions)."""
    size = max(16, p.rows // 2)
    grid = Grid(size, CT_FOV)
    z = z_positions(p.mr_slices, 5.0)
    for k, uid in enumerate(p.mr_uids):
        ds = p.common(
            sop_class=MR_CLASS,
            sop_uid=uid,
            modality="MR",
            series_uid=p.mr_series,
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
        ds.ImagePositionPatient = [
            ds_str(grid.origin + 3),
            ds_str(grid.origin - 7),
            ds_str(z[k] + 12),
        ]
        ds.ImageOrientationPatient = list(AXIAL)
        frame_of_reference(ds, p.mr_for)
        ds.SliceLocation = ds_str(z[k] + 12)
        image_pixel(ds, size, size)
        ds.PixelSpacing = grid.pixel_spacing()
        shapes = [Shape(-3, 7, 95, 68, 600), Shape(-3, 57, 10, 10, 1500)]
        set_pixels(ds, paint(grid, shapes, 0, "<H"))
        p.writer.write(ds, f"cd-import/CD{p.number:02d}/DICOM/IMG{k + 1:04d}")


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
    ds = ct_identity(sop_uid, study_uid, series_uid, patient_id)
    ds.PatientName = patient_name
    ds.SeriesDescription = series_description
    ds.FrameOfReferenceUID = f"{study_uid}.1" if len(study_uid) < 62 else study_uid
    ds.InstanceNumber = 1
    image_pixel(ds, _SMALL_CT_PIXELS, _SMALL_CT_PIXELS)
    size = 2 * _SMALL_CT_PIXELS * _SMALL_CT_PIXELS
    seed = hashlib.sha256(sop_uid.encode("utf-8", "surrogateescape")).digest()
    ds.PixelData = (seed * (size // len(seed) + 1))[:size]
    if edit is not None:
        edit(ds)
    ds.file_meta = file_meta(CT_CLASS, sop_uid, ExplicitVRLittleEndian)
    with config.disable_value_validation():
        return dataset_bytes(ds)
