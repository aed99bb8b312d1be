"""Treatment delivery objects: the DRR, the portal image and the treatment record.

These test the less obvious hops of a plan's package: the DRR names the
plan but with a wrong class hint (RT Ion Plan), so resolution must go by
instance UID; the portal image does not name the plan at all and is
reached only through the record's verification-image reference.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from dicomfs.demo.builders import (
    RT_IMAGE_CLASS,
    RT_ION_PLAN_CLASS,
    RT_PLAN_CLASS,
    RT_RECORD_CLASS,
    ds_str,
    hash_name,
    image_pixel,
    item,
    ref,
    set_pixels,
)
from dicomfs.demo.phantom import Grid, Shape, paint
from dicomfs.demo.scenario import PatientScenario

__all__ = ["rt_image", "write_record", "write_rt_images"]


def rt_image(p: PatientScenario, uid: str, kind: str, plan_class: str | None, sid: str) -> Dataset:
    """A 32x32 RT Image of beam 1; it names the plan (as ``plan_class``) unless that is None."""
    size = 32
    ds = p.common(
        sop_class=RT_IMAGE_CLASS,
        sop_uid=uid,
        modality="RTIMAGE",
        series_uid=p.uid("rtimage-series", kind),
        series_number=40,
        series_description=kind,
        time="123000" if kind == "DRR" else "150000",
        manufacturer="Demo TPS" if kind == "DRR" else "Demo Linacs",
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", kind]
    ds.ConversionType = "WSD"
    image_pixel(ds, size, size, stored=16)
    ds.RTImageLabel = f"{kind} G{p.gantry[0]}"
    ds.RTImagePlane = "NORMAL"
    ds.ImagePlanePixelSpacing = ["8", "8"]
    ds.RTImagePosition = ["-124", "124"]
    ds.RadiationMachineName = "DemoLinac"
    ds.PrimaryDosimeterUnit = "MU"
    ds.RadiationMachineSAD = "1000"
    ds.RTImageSID = sid
    ds.GantryAngle = ds_str(p.gantry[0])
    ds.BeamLimitingDeviceAngle = "0"
    ds.PatientSupportAngle = "0"
    if plan_class is not None:
        ds.ReferencedRTPlanSequence = [ref(plan_class, p.plan)]
        ds.ReferencedBeamNumber = 1
        ds.ReferencedFractionGroupNumber = 1
    grid = Grid(size, 256.0)
    set_pixels(ds, paint(grid, [Shape(0, 0, 80, 60, 30000)], 2000, "<H"))
    return ds


def write_rt_images(p: PatientScenario) -> None:
    """The DRR in the planning system's export, the portal image with the records."""
    # Quirk (dicom-references.md 4.3): the DRR claims the plan is an RT
    # Ion Plan; resolution must go by instance UID, not by class.
    drr = rt_image(p, p.drr, "DRR", RT_ION_PLAN_CLASS, "1000")
    p.writer.write(drr, p.tps("RI", p.drr))
    # The portal image does not name the plan (its reference is type 3):
    # only the record's ReferencedVerificationImageSequence leads to it,
    # which exercises the record -> image hop (dicom-references.md 3.3 D).
    portal = rt_image(p, p.portal, "PORTAL", None, "1500")
    p.writer.write(portal, f"record-verify/{p.pid}/PORTAL_{hash_name(p.portal, 8)}")


def _session_beam(p: PatientScenario, beam: int, gantry: int) -> Dataset:
    """One delivered beam of the first fraction; beam 1 names the portal image."""
    delivered = item(
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
            item(
                ReferencedControlPointIndex=k,
                TreatmentControlPointDate=p.study.date,
                TreatmentControlPointTime="150000",
                DeliveredMeterset=ds_str(100 * k),
                GantryAngle=ds_str(gantry),
            )
            for k in (0, 1)
        ],
    )
    if beam == 1:
        delivered.ReferencedVerificationImageSequence = [ref(RT_IMAGE_CLASS, p.portal)]
    return delivered


def write_record(p: PatientScenario) -> None:
    """The treatment record of fraction 1, naming the plan and (beam 1) the portal image."""
    ds = p.common(
        sop_class=RT_RECORD_CLASS,
        sop_uid=p.record,
        modality="RTRECORD",
        series_uid=p.uid("record-series"),
        series_number=50,
        series_description="Treatment records",
        time="150500",
        manufacturer="Demo Linacs",
    )
    ds.TreatmentDate = p.study.date
    ds.TreatmentTime = "150000"
    ds.ReferencedRTPlanSequence = [ref(RT_PLAN_CLASS, p.plan)]
    ds.TreatmentMachineSequence = [
        item(
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
    ds.TreatmentSessionBeamSequence = [
        _session_beam(p, beam, gantry) for beam, gantry in zip((1, 2), p.gantry, strict=True)
    ]
    p.writer.write(ds, f"record-verify/{p.pid}/RT_RECORD_{hash_name(p.record, 8)}")
