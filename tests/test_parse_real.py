"""dicomfs.dicom.parse on real exports: identity from the dataset and the edges each one states.

Clinical and research exports (tests/data/real, README there) and pydicom's
test files, including files without a preamble or file meta, big endian and
implicit VR files, and DICOMDIRs, which are not instances.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from parse_helpers import (
    CT_IMAGE,
    DCMQI,
    HIGHDICOM,
    MIM,
    MONACO,
    PINNACLE,
    REAL_FILES,
    dataset,
    edges,
    encode,
    item,
    parse_ok,
    read,
    targets,
)
from pydicom.data import get_testdata_file
from pydicom.sequence import Sequence

from dicomfs.dicom.parse import parse_bytes, parse_file
from dicomfs.dicom.records import Level, Rejection, RejectKind, Role, clean_uid


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_real_file_is_an_instance_with_identity_from_the_dataset(path: Path) -> None:
    instance = parse_ok(path)
    ds = read(path)
    assert instance.sop_class_uid == clean_uid(ds.SOPClassUID)
    assert instance.sop_instance_uid == clean_uid(ds.SOPInstanceUID)
    assert instance.study_uid == clean_uid(ds.get("StudyInstanceUID"))
    assert instance.series_uid == clean_uid(ds.get("SeriesInstanceUID"))
    assert instance.frame_of_reference_uid == clean_uid(ds.get("FrameOfReferenceUID"))
    assert instance.patient_id == str(ds.get("PatientID", ""))
    assert instance.modality == str(ds.get("Modality", ""))
    assert instance.series_description == str(ds.get("SeriesDescription", ""))
    assert instance.dose_summation_type == str(ds.get("DoseSummationType", ""))
    number = ds.get("InstanceNumber")
    assert instance.instance_number == (int(number) if number not in (None, "") else None)
    meta = getattr(ds, "file_meta", None)
    transfer_syntax = meta.get("TransferSyntaxUID", "") if meta is not None else ""
    assert instance.transfer_syntax == transfer_syntax
    assert all(e.target_uid != instance.sop_instance_uid for e in instance.edges)


def test_monaco_files_without_preamble_or_meta_are_accepted_and_flagged() -> None:
    for path in MONACO.iterdir():
        with open(path, "rb") as fh:
            assert fh.read(132)[128:] != b"DICM"
        assert "no_file_meta" in parse_ok(path).flags


def test_monaco_plan_references_the_monaco_structure_set() -> None:
    plan = parse_ok(MONACO / "TinyFS_TinyVMAT.dcm")
    rs_uid = read(MONACO / "TinyFS_StrctrSets.dcm").SOPInstanceUID
    (edge,) = edges(plan, Role.STRUCTURE_SET)
    assert edge.target_uid == rs_uid
    assert edge.level is Level.INSTANCE
    assert edge.path == "ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID"
    assert plan.label == read(MONACO / "TinyFS_TinyVMAT.dcm").RTPlanLabel


def test_monaco_structure_set_references_all_five_ct_slices() -> None:
    rs = parse_ok(MONACO / "TinyFS_StrctrSets.dcm")
    cts = {read(p).SOPInstanceUID for p in MONACO.glob("TinyFS_CT1_*")}
    assert len(cts) == 5
    assert targets(rs, Role.IMAGE, Level.INSTANCE) == cts
    ct_series = {read(p).SeriesInstanceUID for p in MONACO.glob("TinyFS_CT1_*")}
    assert {e.series_uid for e in edges(rs, Role.IMAGE)} == ct_series
    assert rs.label == read(MONACO / "TinyFS_StrctrSets.dcm").StructureSetLabel


def test_mim_structure_set_images_series_and_study_reference() -> None:
    path = MIM / "rt.dcm"
    rs = parse_ok(path)
    ds = read(path)
    cts = {read(p).SOPInstanceUID for p in MIM.glob("2.*.dcm")}
    assert len(cts) == 5
    assert targets(rs, Role.IMAGE, Level.INSTANCE) == cts
    study = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    study_uid = study.ReferencedSOPInstanceUID
    assert targets(rs, Role.STUDY, Level.STUDY) == {study_uid}
    assert study_uid not in targets(rs, level=Level.INSTANCE)  # never a missing "instance"
    series_item = study.RTReferencedSeriesSequence[0]
    (series,) = edges(rs, Role.SERIES, Level.SERIES)
    assert series.target_uid == series_item.SeriesInstanceUID
    assert series.study_uid == study_uid
    assert series.qualifier("instances_listed") == "yes"
    for_uid = ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    assert targets(rs, Role.FRAME_OF_REFERENCE, Level.FRAME_OF_REFERENCE) == {for_uid}
    # a slice named by both the series list and the contours is one edge, first path kept
    assert len(edges(rs, Role.IMAGE)) == 5
    assert all(".ContourImageSequence[" in e.path for e in edges(rs, Role.IMAGE))
    assert all(e.path.startswith("ReferencedFrameOfReferenceSequence[0]") for e in rs.edges)


def test_dcmqi_segmentation_references_the_three_ct_slices() -> None:
    seg = parse_ok(DCMQI / "liver.dcm")
    cts = [read(p) for p in sorted(DCMQI.glob("0*.dcm"))]
    ct_uids = {ct.SOPInstanceUID for ct in cts}
    assert targets(seg, Role.SOURCE_IMAGE) == ct_uids
    assert targets(seg, Role.COMMON_INSTANCE) == ct_uids
    # the Common Instance Reference tells where the source images live
    for edge in edges(seg, Role.SOURCE_IMAGE):
        assert edge.series_uid == cts[0].SeriesInstanceUID
        assert edge.study_uid == cts[0].StudyInstanceUID
    assert seg.label == read(DCMQI / "liver.dcm").ContentLabel


def test_pinnacle_dose_references_the_pinnacle_plan() -> None:
    plan_path, dose_path = sorted(PINNACLE.iterdir(), key=lambda p: p.stat().st_size)
    dose = parse_ok(dose_path)
    plan_uid = read(plan_path).SOPInstanceUID
    (edge,) = edges(dose, Role.PLAN)
    assert edge.target_uid == plan_uid
    assert edge.qualifier("dose_summation_type") == read(dose_path).DoseSummationType
    assert edge.path == "ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID"


def test_pinnacle_study_management_reference_is_a_study_edge() -> None:
    for path in PINNACLE.iterdir():
        instance = parse_ok(path)
        study_uid = read(path).ReferencedStudySequence[0].ReferencedSOPInstanceUID
        assert targets(instance, Role.STUDY, Level.STUDY) == {study_uid}
        assert study_uid not in targets(instance, level=Level.INSTANCE)


def test_highdicom_segmentation_references_its_ct() -> None:
    seg = parse_ok(HIGHDICOM / "seg_image_ct_binary_single_frame.dcm")
    ct_uid = read(HIGHDICOM / "ct_image.dcm").SOPInstanceUID
    assert targets(seg, Role.SOURCE_IMAGE) == {ct_uid}


def test_ct_slices_have_no_references_and_cost_no_sequence_conversion() -> None:
    for path in MIM.glob("2.*.dcm"):
        instance = parse_ok(path)
        assert instance.edges == []
        assert instance.flags == []


@pytest.mark.parametrize("name", ["rtplan.dcm", "rtstruct.dcm", "rtdose.dcm", "rtdose_1frame.dcm"])
def test_pydicom_rt_test_files(name: str) -> None:
    path = get_testdata_file(name)
    instance = parse_ok(path)
    assert instance.sop_instance_uid == read(path).SOPInstanceUID


def test_pydicom_rtstruct_without_preamble_is_accepted() -> None:
    path = get_testdata_file("rtstruct.dcm")
    with open(path, "rb") as fh:
        assert fh.read(132)[128:] != b"DICM"
    rs = parse_ok(path)
    assert "no_file_meta" in rs.flags
    study = read(path).ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    assert targets(rs, Role.STUDY, Level.STUDY) == {study.ReferencedSOPInstanceUID}
    (series,) = edges(rs, Role.SERIES)
    assert series.qualifier("instances_listed") == "no"


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_pydicom_rtplan_related_plan_and_dose_qualifiers() -> None:
    plan_path = get_testdata_file("rtplan.dcm")
    plan = parse_ok(plan_path)
    related = read(plan_path).ReferencedRTPlanSequence[0]
    (edge,) = edges(plan, Role.RELATED_PLAN)
    assert edge.target_uid == related.ReferencedSOPInstanceUID
    assert edge.qualifier("relationship") == related.RTPlanRelationship
    dose_path = get_testdata_file("rtdose.dcm")
    dose = parse_ok(dose_path)
    plan_ref = read(dose_path).ReferencedRTPlanSequence[0]
    (edge,) = edges(dose, Role.PLAN)
    group = plan_ref.ReferencedFractionGroupSequence[0]
    assert edge.qualifier("fraction_group") == str(group.ReferencedFractionGroupNumber)
    beams = ",".join(str(b.ReferencedBeamNumber) for b in group.ReferencedBeamSequence)
    assert edge.qualifier("beams") == beams
    # "0123" has a leading zero: kept as a target, marked, never a name
    assert edge.target_uid == plan_ref.ReferencedSOPInstanceUID
    assert edge.qualifier("unsafe_uid") == "yes"


@pytest.mark.parametrize(
    "name", ["MR_small_bigendian.dcm", "MR_small_implicit.dcm", "ExplVR_BigEnd.dcm", "CT_small.dcm"]
)
def test_big_endian_and_implicit_vr_files(name: str) -> None:
    path = get_testdata_file(name)
    instance = parse_ok(path)
    ds = read(path)
    assert instance.sop_instance_uid == ds.SOPInstanceUID
    assert instance.patient_id == ds.get("PatientID", "")
    assert instance.transfer_syntax == ds.file_meta.TransferSyntaxUID


def test_dicomdir_is_rejected() -> None:
    result = parse_file(get_testdata_file("DICOMDIR"))
    assert result is not None
    assert isinstance(result.result, Rejection)
    assert result.result.kind is RejectKind.DICOMDIR


def test_directory_record_sequence_without_meta_is_a_dicomdir() -> None:
    ds = dataset(CT_IMAGE, DirectoryRecordSequence=Sequence([item(RecordInUseFlag=0xFFFF)]))
    result = parse_bytes(encode(ds, file_format=False))
    assert isinstance(result, Rejection)
    assert result.kind is RejectKind.DICOMDIR
