"""Delineations on the planning CT: three RT Structure Sets and a SEG of the target.

Several structure sets per CT series is what clinics hold (the clinical
one, an auto-contour, a review copy); only the first is named by the plan,
so the others must stay out of its package. Patient 1's clinical set has
no preamble or file meta and its auto-contour is deflated. The SEG is a
binary mask of the PTV whose frames name their source CT slices.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset

from dicomfs.demo.builders import (
    AXIAL,
    CT_CLASS,
    DEFLATED,
    EXPLICIT_LE,
    IMPLICIT_NO_PREAMBLE,
    RT_STRUCT_CLASS,
    SEG_CLASS,
    STUDY_MANAGEMENT_CLASS,
    code,
    content_identification,
    ds_str,
    frame_of_reference,
    hash_name,
    image_pixel,
    item,
    ref,
    referenced_series,
    set_pixels,
)
from dicomfs.demo.phantom import CT_FOV, CT_THICKNESS, Grid, mask_bits, pack_bits
from dicomfs.demo.scenario import PatientScenario, Roi

__all__ = ["structure_set", "write_seg", "write_structure_sets"]


def structure_set(p: PatientScenario, index: int, label: str, rois: Sequence[Roi]) -> Dataset:
    """Structure set ``index`` of the patient, contouring ``rois`` on every CT slice they cover."""
    ds = p.common(
        sop_class=RT_STRUCT_CLASS,
        sop_uid=p.rs_uids[index],
        modality="RTSTRUCT",
        series_uid=p.uid("rs-series", index),
        series_number=10 + index,
        series_description=label,
        time=f"1{index}0000",
    )
    ds.StructureSetLabel = label
    ds.StructureSetName = label
    ds.StructureSetDate = p.study.date
    ds.StructureSetTime = f"1{index}0000"
    if index == 1:
        # Newer writers add the (optional) top-level Frame of Reference.
        frame_of_reference(ds, p.ct_for)
    contour_images = [ref(CT_CLASS, uid) for uid in p.ct_uids]
    series = item(SeriesInstanceUID=p.ct_series, ContourImageSequence=contour_images)
    study = ref(STUDY_MANAGEMENT_CLASS, p.study.study_uid, RTReferencedSeriesSequence=[series])
    ds.ReferencedFrameOfReferenceSequence = [
        item(FrameOfReferenceUID=p.ct_for, RTReferencedStudySequence=[study])
    ]
    ds.StructureSetROISequence = [
        item(
            ROINumber=roi.number,
            ReferencedFrameOfReferenceUID=p.ct_for,
            ROIName=roi.name,
            ROIGenerationAlgorithm="MANUAL" if index == 0 else "AUTOMATIC",
        )
        for roi in rois
    ]
    contours = []
    for roi in rois:
        planes = [
            item(
                ContourImageSequence=[ref(CT_CLASS, p.ct_uids[k])],
                ContourGeometricType="CLOSED_PLANAR",
                NumberOfContourPoints=roi.points,
                ContourNumber=n + 1,
                ContourData=roi.shape.polygon(p.z[k], roi.points),
            )
            for n, k in enumerate(roi.slices)
        ]
        contours.append(
            item(
                ROIDisplayColor=list(roi.color),
                ReferencedROINumber=roi.number,
                ContourSequence=planes,
            )
        )
    ds.ROIContourSequence = contours
    ds.RTROIObservationsSequence = [
        item(
            ObservationNumber=roi.number,
            ReferencedROINumber=roi.number,
            RTROIInterpretedType=roi.kind,
            ROIInterpreter="",
        )
        for roi in rois
    ]
    ds.ApprovalStatus = "APPROVED" if index == 0 else "UNAPPROVED"
    return ds


def write_structure_sets(p: PatientScenario) -> None:
    """Clinical, AutoContour (no PTV) and Review sets in the planning system's export."""
    labels = ("Clinical", "AutoContour", "Review")
    encodings = (
        (IMPLICIT_NO_PREAMBLE, DEFLATED, EXPLICIT_LE)
        if p.quirky
        else (EXPLICIT_LE, EXPLICIT_LE, EXPLICIT_LE)
    )
    for index, label in enumerate(labels):
        rois = p.rois if index != 1 else (p.rois[0], p.rois[2])
        ds = structure_set(p, index, label, rois)
        p.writer.write(ds, p.tps("RS", p.rs_uids[index]), encodings[index])


def _seg_frame(p: PatientScenario, grid: Grid, k: int, ct_uid: str) -> Dataset:
    """Per-frame functional groups of SEG frame ``k``: its source slice and position."""
    source = ref(
        CT_CLASS,
        ct_uid,
        PurposeOfReferenceCodeSequence=[
            code("121322", "DCM", "Source image for image processing operation")
        ],
    )
    return item(
        DerivationImageSequence=[
            item(
                SourceImageSequence=[source],
                DerivationCodeSequence=[code("113076", "DCM", "Segmentation")],
            )
        ],
        FrameContentSequence=[item(DimensionIndexValues=[1, k + 1])],
        PlanePositionSequence=[item(ImagePositionPatient=grid.position(p.z[k]))],
        SegmentIdentificationSequence=[item(ReferencedSegmentNumber=1)],
    )


def write_seg(p: PatientScenario) -> None:
    """A binary SEG of the PTV, one frame per CT slice, from the contouring workstation."""
    grid = Grid(p.rows, CT_FOV)
    ds = p.common(
        sop_class=SEG_CLASS,
        sop_uid=p.seg,
        modality="SEG",
        series_uid=p.uid("seg-series"),
        series_number=70,
        series_description="PTV segmentation",
        time="113000",
        manufacturer="Demo Workstation",
    )
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.ManufacturerModelName = "DemoSeg"
    ds.DeviceSerialNumber = "0001"
    ds.SoftwareVersions = "1.0"
    frame_of_reference(ds, p.ct_for)
    content_identification(
        ds,
        date=p.study.date,
        time="113000",
        label="PTV",
        description="PTV mask",
        creator="Demo^Physician",
    )
    image_pixel(ds, p.rows, p.rows, bits=1, stored=1)
    ds.LossyImageCompression = "00"
    ds.SegmentationType = "BINARY"
    ds.NumberOfFrames = p.ct_slices
    ds.SegmentSequence = [
        item(
            SegmentNumber=1,
            SegmentLabel="PTV",
            SegmentAlgorithmType="MANUAL",
            SegmentedPropertyCategoryCodeSequence=[
                code("M-01000", "SRT", "Morphologically Altered Structure")
            ],
            SegmentedPropertyTypeCodeSequence=[code("M-80003", "SRT", "Neoplasm, Primary")],
        )
    ]
    dimension_uid = p.uid("seg-dimensions")
    ds.DimensionOrganizationSequence = [item(DimensionOrganizationUID=dimension_uid)]
    ds.DimensionOrganizationType = "3D"
    ds.DimensionIndexSequence = [
        item(
            DimensionOrganizationUID=dimension_uid,
            DimensionIndexPointer=0x0062000B,
            FunctionalGroupPointer=0x0062000A,
        ),
        item(
            DimensionOrganizationUID=dimension_uid,
            DimensionIndexPointer=0x00200032,
            FunctionalGroupPointer=0x00209113,
        ),
    ]
    ds.SharedFunctionalGroupsSequence = [
        item(
            PixelMeasuresSequence=[
                item(
                    PixelSpacing=grid.pixel_spacing(),
                    SliceThickness=ds_str(CT_THICKNESS),
                    SpacingBetweenSlices=ds_str(CT_THICKNESS),
                )
            ],
            PlaneOrientationSequence=[item(ImageOrientationPatient=list(AXIAL))],
        )
    ]
    target = set(p.rois[1].slices)
    empty = "0" * (grid.size * grid.size)
    ds.PerFrameFunctionalGroupsSequence = [
        _seg_frame(p, grid, k, uid) for k, uid in enumerate(p.ct_uids)
    ]
    bits = [mask_bits(grid, p.ptv) if k in target else empty for k in range(len(p.ct_uids))]
    ds.ReferencedSeriesSequence = referenced_series(p.ct_series, CT_CLASS, p.ct_uids)
    set_pixels(ds, pack_bits("".join(bits)), vr="OB")
    p.writer.write(ds, f"workstation/{p.pid}/SEG_{hash_name(p.seg, 8)}.dcm")
