"""The spatial registration that puts the MR on the planning CT's frame of reference.

A rigid CT-MR registration is how a plan's package reaches images on
another frame of reference: the registration names the MR instances, and
the MR is in the package only through it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydicom.dataset import Dataset

from dicomfs.demo.builders import (
    MR_CLASS,
    REG_CLASS,
    content_identification,
    ds_str,
    frame_of_reference,
    hash_name,
    item,
    ref,
    referenced_series,
)
from dicomfs.demo.scenario import PatientScenario

__all__ = ["write_registration"]

_IDENTITY = (1.0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1)
_MR_SHIFT = (1.0, 0, 0, -3, 0, 1, 0, 7, 0, 0, 1, -12, 0, 0, 0, 1)


def _registration_item(for_uid: str, matrix: Sequence[float], images: Iterable[str]) -> Dataset:
    """One frame of reference's rigid matrix, naming the images it applies to (if any)."""
    registered = item(
        FrameOfReferenceUID=for_uid,
        RegistrationTypeCodeSequence=[],
        MatrixRegistrationSequence=[
            item(
                MatrixSequence=[
                    item(
                        FrameOfReferenceTransformationMatrix=[ds_str(v) for v in matrix],
                        FrameOfReferenceTransformationMatrixType="RIGID",
                    )
                ]
            )
        ],
    )
    refs = [ref(MR_CLASS, uid) for uid in images]
    if refs:
        registered.ReferencedImageSequence = refs
    return registered


def write_registration(p: PatientScenario) -> None:
    """The CT-MR registration, saved by the contouring workstation."""
    ds = p.common(
        sop_class=REG_CLASS,
        sop_uid=p.registration,
        modality="REG",
        series_uid=p.uid("reg-series"),
        series_number=60,
        series_description="CT-MR rigid",
        time="110000",
        manufacturer="Demo Workstation",
    )
    frame_of_reference(ds, p.ct_for)
    content_identification(
        ds,
        date=p.study.date,
        time="110000",
        label="CT_MR_REG",
        description="Rigid CT to MR",
        creator="Demo^Physicist",
    )
    ds.RegistrationSequence = [
        _registration_item(p.ct_for, _IDENTITY, ()),
        _registration_item(p.mr_for, _MR_SHIFT, p.mr_uids),
    ]
    # Common Instance Reference is mandatory in the Spatial Registration IOD.
    ds.ReferencedSeriesSequence = referenced_series(p.mr_series, MR_CLASS, p.mr_uids)
    p.writer.write(ds, f"workstation/{p.pid}/REG_{hash_name(p.registration, 8)}.dcm")
