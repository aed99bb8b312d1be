"""dicomfs.dicom.parse on identity: UIDs, labels, numbers and flags of the Instance record.

Unsafe and over-long UIDs are kept and flagged (reliability.md C1), padding
is stripped, the dataset's UID wins over the file meta (D1), text is decoded
with the character set and a transfer syntax that lies about VR encoding is
caught.
"""

from __future__ import annotations

import warnings

import pytest
from parse_helpers import (
    CT_IMAGE,
    RT_PLAN,
    dataset,
    element,
    encode,
    file_header,
    identity,
    parse_ds,
)
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dicomfs.dicom.parse import parse_bytes
from dicomfs.dicom.records import Instance


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_unsafe_sop_instance_uid_is_kept_and_flagged() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dataset(CT_IMAGE)
        ds.SOPInstanceUID = "../../etc/passwd"
        ds.StudyInstanceUID = "1.2.3/4"
    instance = parse_ds(ds)
    assert instance.sop_instance_uid == "../../etc/passwd"
    assert "unsafe_sop_uid" in instance.flags
    assert "unsafe_uid:StudyInstanceUID" in instance.flags
    assert not instance.uid_is_safe


@pytest.mark.filterwarnings("ignore:The value length")
def test_over_long_uid_is_flagged() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dataset(CT_IMAGE)
        ds.SOPInstanceUID = "1." + "2" * 70
    instance = parse_ds(ds)
    assert instance.sop_instance_uid == "1." + "2" * 70
    assert "unsafe_sop_uid" in instance.flags


def test_uid_padding_is_stripped() -> None:
    data = file_header(ExplicitVRLittleEndian, sop_uid="1.2.34") + element(
        0x00080016, b"UI", CT_IMAGE.encode()
    )
    data += element(0x00080018, b"UI", b"1.2.34\x00\x00")  # padded by a sloppy writer
    data += element(0x0020000D, b"UI", b"1.2.5 ")
    instance = parse_bytes(data)
    assert isinstance(instance, Instance), instance
    assert instance.sop_instance_uid == "1.2.34"
    assert instance.study_uid == "1.2.5"
    assert instance.flags == []  # meta UID equal once both are clean


def test_meta_uid_mismatch_uses_the_dataset_uid() -> None:
    ds = dataset(CT_IMAGE)
    data = encode(ds)
    uid = ds.SOPInstanceUID.encode()
    other = uid[:-1] + (b"1" if uid[-1:] != b"1" else b"2")
    assert data.index(uid) < 132 + 200  # first copy: the file meta
    mismatched = parse_bytes(data.replace(uid, other, 1))
    assert isinstance(mismatched, Instance)
    assert mismatched.sop_instance_uid == ds.SOPInstanceUID
    assert "meta_uid_mismatch" in mismatched.flags
    assert "meta_uid_mismatch" not in parse_bytes(data).flags  # type: ignore[union-attr]


def test_text_values_are_decoded_with_the_character_set() -> None:
    ds = dataset(RT_PLAN, SpecificCharacterSet="ISO_IR 100", RTPlanLabel="Müller")
    ds.PatientID = "Åsa-1"
    ds.SeriesDescription = "Thorax  "
    instance = parse_ds(ds)
    assert instance.patient_id == "Åsa-1"
    assert instance.label == "Müller"
    assert instance.series_description == "Thorax"


def test_iso_2022_values_are_decoded_although_their_bytes_are_ascii() -> None:
    """Japanese in ISO 2022 IR 87: escape sequences are ASCII bytes, the text is not."""
    ds = dataset(RT_PLAN, SpecificCharacterSet=["", "ISO 2022 IR 87"])
    ds.PatientName = "Yamada^Tarou=山田^太郎"
    ds.RTPlanLabel = "前立腺"
    ds.StudyDescription = "胸部"
    instance = parse_ds(ds)
    assert instance.details.patient_name == "Yamada^Tarou"  # the alphabetic group
    assert instance.label == "前立腺"
    assert instance.details.study_description == "胸部"


@pytest.mark.filterwarnings("ignore:Invalid value for VR", "ignore:The value length")
def test_details_are_bounded_and_normalised() -> None:
    ds = dataset(RT_PLAN, SpecificCharacterSet="ISO_IR 192")
    ds.PatientName = "Mu\u0308ller^Ju\u0308rgen"  # NFD, as macOS writes
    ds.StudyDescription = "x" * 10_000
    ds.StudyDate = "20241301"  # no month 13
    ds.RTPlanDate = "20240229"
    ds.ApprovalStatus = "approved"
    instance = parse_ds(ds)
    assert instance.details.patient_name == "Müller^Jürgen"
    assert len(instance.details.study_description) == 256
    assert (instance.details.study_date, instance.details.plan_date) == ("", "20240229")
    assert instance.details.approval_status == "APPROVED"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(b"12", 12), (b" 7 ", 7), (b"-3", -3), (b"abc", None), (b"1.5", None), (b"99999999999", None)],
)
def test_instance_number_tolerates_garbage(raw: bytes, expected: int | None) -> None:
    data = identity() + element(0x00200013, b"IS", raw)
    instance = parse_bytes(data)
    assert isinstance(instance, Instance), instance
    assert instance.instance_number == expected


def test_header_only_image_is_flagged() -> None:
    ds = dataset(CT_IMAGE, Rows=2, Columns=2)
    assert "no_pixel_data" in parse_ds(ds).flags
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = bytes(8)
    assert "no_pixel_data" not in parse_ds(ds).flags


def test_transfer_syntax_that_lies_about_vr_encoding() -> None:
    ds = dataset(RT_PLAN, RTPlanLabel="LIAR")
    data = encode(ds, ExplicitVRLittleEndian)
    explicit = ExplicitVRLittleEndian.encode() + bytes(1)  # padded to 20 bytes
    implicit = ImplicitVRLittleEndian.encode() + bytes(3)  # same length, NUL padding
    plan = parse_bytes(data.replace(explicit, implicit, 1))
    assert isinstance(plan, Instance), plan
    assert plan.transfer_syntax == ImplicitVRLittleEndian
    assert plan.label == "LIAR"
    assert "vr_mismatch" in plan.flags
