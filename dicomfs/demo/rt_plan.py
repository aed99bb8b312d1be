"""Treatment planning objects: the RT Plans with their beams, and the RT Doses computed for them.

Each patient gets the clinical plan (naming the clinical structure set and
only the plan dose, although two beam doses also name the plan), a
verification plan on a phantom frame of reference, and a boost plan whose
structure set is deliberately never written. Patient 1's clinical plan has
no preamble or file meta (Monaco-style). Doses are Gaussian blobs around
the target so they look like dose, and scale with the prescription.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from pydicom.dataset import Dataset

from dicomfs.demo.builders import (
    AXIAL,
    EXPLICIT_LE,
    IMPLICIT_NO_PREAMBLE,
    RT_DOSE_CLASS,
    RT_IMAGE_CLASS,
    RT_PLAN_CLASS,
    RT_STRUCT_CLASS,
    ds_str,
    frame_of_reference,
    image_pixel,
    item,
    ref,
    set_pixels,
)
from dicomfs.demo.phantom import Grid
from dicomfs.demo.scenario import PatientScenario

__all__ = ["beam_dataset", "dose_dataset", "plan_dataset", "write_doses", "write_plans"]

_DOSE_GRID = 32
_DOSE_SPACING = 8.0
_DOSE_SCALING = "0.0001"
_PRESCRIPTION_GY = 60.0


def beam_dataset(
    p: PatientScenario, number: int, gantry: float, reference_image: str | None
) -> Dataset:
    """A static photon beam aimed at the PTV; ``reference_image`` names its DRR."""
    iso = [ds_str(p.ptv.cx, 2), ds_str(p.ptv.cy, 2), "0"]
    jaws = [
        item(RTBeamLimitingDeviceType="ASYMX", LeafJawPositions=["-40", "40"]),
        item(RTBeamLimitingDeviceType="ASYMY", LeafJawPositions=["-40", "40"]),
    ]
    first = item(
        ControlPointIndex=0,
        NominalBeamEnergy="6",
        DoseRateSet="600",
        BeamLimitingDevicePositionSequence=jaws,
        GantryAngle=ds_str(gantry),
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
    last = item(ControlPointIndex=1, CumulativeMetersetWeight="1")
    ds = item(
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
            item(RTBeamLimitingDeviceType="ASYMX", NumberOfLeafJawPairs=1),
            item(RTBeamLimitingDeviceType="ASYMY", NumberOfLeafJawPairs=1),
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
        ds.ReferencedReferenceImageSequence = [ref(RT_IMAGE_CLASS, reference_image)]
    return ds


def plan_dataset(
    p: PatientScenario,
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
    """An approved RT Plan: one fraction group delivering the prescription over ``beams``."""
    ds = p.common(
        sop_class=RT_PLAN_CLASS,
        sop_uid=uid,
        modality="RTPLAN",
        series_uid=p.uid("plan-series", uid),
        series_number=20,
        series_description=label,
        time="120000",
        manufacturer="Demo TPS",
    )
    frame_of_reference(ds, for_uid)
    ds.RTPlanLabel = label
    ds.RTPlanName = label
    ds.RTPlanDate = p.study.date
    ds.RTPlanTime = "120000"
    ds.PlanIntent = intent
    ds.RTPlanGeometry = geometry
    if structure_set is not None:
        ds.ReferencedStructureSetSequence = [ref(RT_STRUCT_CLASS, structure_set)]
    ds.PatientSetupSequence = [
        item(PatientSetupNumber=1, PatientPosition="HFS", SetupTechnique="ISOCENTRIC")
    ]
    meterset = ds_str(_PRESCRIPTION_GY / fractions * 100 / max(len(beams), 1), 2)
    ds.FractionGroupSequence = [
        item(
            FractionGroupNumber=1,
            NumberOfFractionsPlanned=fractions,
            NumberOfBeams=len(beams),
            NumberOfBrachyApplicationSetups=0,
            ReferencedBeamSequence=[
                item(
                    ReferencedBeamNumber=beam.BeamNumber,
                    BeamMeterset=meterset,
                    BeamDose=ds_str(_PRESCRIPTION_GY / fractions / len(beams), 4),
                )
                for beam in beams
            ],
        )
    ]
    ds.BeamSequence = list(beams)
    ds.ApprovalStatus = "APPROVED"
    return ds


def write_plans(p: PatientScenario) -> None:
    """The clinical plan, its verification (QA) plan and the orphaned boost plan."""
    ptv = p.rois[1]
    plan = plan_dataset(
        p,
        uid=p.plan,
        label="Prostate",
        intent="CURATIVE",
        geometry="PATIENT",
        for_uid=p.ct_for,
        beams=[beam_dataset(p, 1, p.gantry[0], p.drr), beam_dataset(p, 2, p.gantry[1], None)],
        fractions=30,
        structure_set=p.rs_uids[0],
    )
    plan.ReferencedDoseSequence = [ref(RT_DOSE_CLASS, p.plan_dose)]
    plan.DoseReferenceSequence = [
        item(
            DoseReferenceNumber=1,
            DoseReferenceUID=p.uid("dose-reference"),
            DoseReferenceStructureType="VOLUME",
            DoseReferenceDescription=ptv.name,
            ReferencedROINumber=ptv.number,
            DoseReferenceType="TARGET",
            TargetPrescriptionDose=ds_str(_PRESCRIPTION_GY),
        )
    ]
    encoding = IMPLICIT_NO_PREAMBLE if p.quirky else EXPLICIT_LE
    p.writer.write(plan, p.tps("RP", p.plan), encoding)

    qa = plan_dataset(
        p,
        uid=p.verification_plan,
        label="Prostate QA",
        intent="VERIFICATION",
        geometry="TREATMENT_DEVICE",
        for_uid=p.phantom_for,
        beams=[beam_dataset(p, 1, 0, None), beam_dataset(p, 2, 0, None)],
        fractions=1,
        structure_set=None,
    )
    qa.ReferencedRTPlanSequence = [ref(RT_PLAN_CLASS, p.plan, RTPlanRelationship="VERIFIED_PLAN")]
    p.writer.write(qa, p.tps("RP", p.verification_plan))

    orphan = plan_dataset(
        p,
        uid=p.missing_plan,
        label="Boost",
        intent="CURATIVE",
        geometry="PATIENT",
        for_uid=p.ct_for,
        beams=[beam_dataset(p, 1, p.gantry[0], None)],
        fractions=5,
        structure_set=p.missing_rs,
    )
    p.writer.write(orphan, p.tps("RP", p.missing_plan))


def _dose_pixels(p: PatientScenario, centre_shift: float, peak_gy: float) -> bytes:
    """32-bit dose values of a Gaussian around the PTV, shifted along x per beam."""
    sigma2 = 2.0 * 30.0**2
    peak = peak_gy / float(_DOSE_SCALING)
    grid = Grid(_DOSE_GRID, _DOSE_GRID * _DOSE_SPACING)
    values: list[int] = []
    for z in p.z:
        for row in range(_DOSE_GRID):
            y = grid.origin + row * grid.spacing - p.ptv.cy
            for col in range(_DOSE_GRID):
                x = grid.origin + col * grid.spacing - p.ptv.cx - centre_shift
                values.append(int(peak * math.exp(-(x * x + y * y + z * z) / sigma2)))
    return struct.pack(f"<{len(values)}I", *values)


def dose_dataset(p: PatientScenario, uid: str, beam: int | None) -> Dataset:
    """The plan dose (``beam`` None) or one beam's dose, each naming the clinical plan."""
    label = "PLAN" if beam is None else "BEAM"
    ds = p.common(
        sop_class=RT_DOSE_CLASS,
        sop_uid=uid,
        modality="RTDOSE",
        series_uid=p.uid("dose-series", uid),
        series_number=30,
        series_description=f"Dose {label}",
        time="121500",
        manufacturer="Demo TPS",
    )
    grid = Grid(_DOSE_GRID, _DOSE_GRID * _DOSE_SPACING)
    frame_of_reference(ds, p.ct_for)
    ds.ImagePositionPatient = grid.position(p.z[0])
    ds.ImageOrientationPatient = list(AXIAL)
    ds.PixelSpacing = grid.pixel_spacing()
    ds.SliceThickness = ""
    ds.NumberOfFrames = len(p.z)
    ds.FrameIncrementPointer = 0x3004000C
    ds.GridFrameOffsetVector = [ds_str(z - p.z[0]) for z in p.z]
    image_pixel(ds, _DOSE_GRID, _DOSE_GRID, bits=32, stored=32)
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = label
    ds.DoseGridScaling = _DOSE_SCALING
    ds.TissueHeterogeneityCorrection = "IMAGE"
    plan_ref = ref(RT_PLAN_CLASS, p.plan)
    if beam is not None:
        plan_ref.ReferencedFractionGroupSequence = [
            item(
                ReferencedFractionGroupNumber=1,
                ReferencedBeamSequence=[item(ReferencedBeamNumber=beam)],
            )
        ]
    ds.ReferencedRTPlanSequence = [plan_ref]
    peak = _PRESCRIPTION_GY * (1.05 if beam is None else 0.525)
    shift = 0.0 if beam is None else (-5.0 if beam == 1 else 5.0)
    set_pixels(ds, _dose_pixels(p, shift, peak))
    return ds


def write_doses(p: PatientScenario) -> None:
    """The plan dose and the two beam doses, in the planning system's export."""
    p.writer.write(dose_dataset(p, p.plan_dose, None), p.tps("RD", p.plan_dose))
    for number, uid in zip((1, 2), p.beam_doses, strict=True):
        p.writer.write(dose_dataset(p, uid, number), p.tps("RD", uid))
