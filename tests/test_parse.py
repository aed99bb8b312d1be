"""Tests for dicomfs.dicom.parse: real exports, rejections, known reference paths, fuzzing.

Expected values are read from the files with pydicom (or stated by the
testdata README), never typed in by hand.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import struct
import threading
import tracemalloc
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import data_element_generator
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pydicom.values import convert_SQ

from dicomfs.dicom.parse import MAX_INFLATED_BYTES, parse_bytes, parse_file, parse_fileobj
from dicomfs.dicom.records import Edge, Instance, Level, Rejection, RejectKind, Role, clean_uid
from dicomfs.dicom.references import MAX_WALK_DEPTH, SEQUENCE_TAGS, read_items

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


# -- real files --------------------------------------------------------------


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


# -- file handling -----------------------------------------------------------


def test_file_stat_is_taken_from_the_opened_file(tmp_path: Path) -> None:
    path = tmp_path / "rt.dcm"
    shutil.copy(MIM / "rt.dcm", path)
    result = parse_file(str(path))
    assert result is not None
    st = os.stat(path)
    assert result.stat.path == str(path)
    assert result.stat.skip_key == (st.st_size, st.st_mtime_ns, st.st_ino)
    assert (result.stat.dev, result.stat.uid, result.stat.gid, result.stat.mode) == (
        st.st_dev,
        st.st_uid,
        st.st_gid,
        st.st_mode,
    )


def test_missing_file_gives_none(tmp_path: Path) -> None:
    assert parse_file(str(tmp_path / "gone.dcm")) is None
    assert parse_file(str(tmp_path / "no-dir" / "gone.dcm")) is None


def test_impossible_path_is_a_rejection_not_an_exception() -> None:
    result = parse_file("/tmp/bad\x00name.dcm")
    assert result is not None
    assert isinstance(result.result, Rejection)
    assert result.result.kind is RejectKind.UNREADABLE


def test_non_utf8_file_name(tmp_path: Path) -> None:
    path = os.fsdecode(os.fsencode(tmp_path) + b"/\xff\xfe-plan.dcm")
    shutil.copy(PINNACLE / next(iter(os.listdir(PINNACLE))), os.fsencode(path))
    result = parse_file(path)
    assert result is not None
    assert result.stat.path == path
    assert isinstance(result.result, Instance)


def test_fifo_is_not_regular_and_never_blocks(tmp_path: Path) -> None:
    fifo = tmp_path / "incoming.dcm"
    os.mkfifo(fifo)
    result = run_with_deadline(lambda: parse_file(str(fifo)))
    assert result is not None
    assert result.result.kind is RejectKind.NOT_REGULAR  # type: ignore[attr-defined]


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    link = tmp_path / "link.dcm"
    link.symlink_to(MIM / "rt.dcm")
    dangling = tmp_path / "dangling.dcm"
    dangling.symlink_to(tmp_path / "nowhere.dcm")
    for path in (link, dangling, tmp_path):
        result = parse_file(str(path))
        assert result is not None
        assert isinstance(result.result, Rejection)
        assert result.result.kind is RejectKind.NOT_REGULAR


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a 0000 file anyway")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.dcm"
    shutil.copy(MIM / "rt.dcm", path)
    path.chmod(0)
    result = parse_file(str(path))
    assert result is not None
    assert result.result.kind is RejectKind.UNREADABLE  # type: ignore[union-attr]


# -- rejections --------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"patient list\nname;id\nDoe;1234\n" * 40,
        random.Random(7).randbytes(20_000),
        b"\x00" * 3000,
    ],
    ids=["empty", "text", "random", "zeros"],
)
def test_non_dicom_files(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "image.dcm"
    path.write_bytes(data)
    result = parse_file(str(path))
    assert result is not None
    assert isinstance(result.result, Rejection)
    assert result.result.kind is RejectKind.NOT_DICOM


def test_zero_filled_files_end_quickly() -> None:
    zeros = bytes(8 * 1024 * 1024)  # a million 8-byte "elements"
    for data in (zeros, file_header(ExplicitVRLittleEndian) + identity() + zeros):
        result = run_with_deadline(lambda data=data: parse_bytes(data), 20)
        assert isinstance(result, Rejection)
        assert result.kind in (RejectKind.NOT_DICOM, RejectKind.TOO_LARGE)


def test_dicom_header_without_identity() -> None:
    data = file_header(ExplicitVRLittleEndian) + element(0x00100020, b"LO", b"P1")
    result = parse_bytes(data)
    assert isinstance(result, Rejection)
    assert result.kind is RejectKind.NO_IDENTITY


def test_forced_file_needs_a_grammatical_sop_class() -> None:
    good = identity() + element(0x00100020, b"LO", b"P1")
    assert isinstance(parse_bytes(good), Instance)
    bad = identity(sop_class="CT image") + element(0x00100020, b"LO", b"P1")
    result = parse_bytes(bad)
    assert isinstance(result, Rejection)
    assert result.kind is RejectKind.NOT_DICOM


def top_level_ends(data: bytes) -> set[int]:
    """Offsets where a top-level element ends: a cut there is undetectable."""
    fp = io.BytesIO(data)
    ds = pydicom.dcmread(fp, stop_before_pixels=True)
    fp.seek(0)
    pydicom.filereader.read_preamble(fp, False)
    pydicom.filereader._read_file_meta_info(fp)
    implicit = ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    ends = {fp.tell()}
    for _elem in data_element_generator(fp, implicit, True):
        ends.add(fp.tell())
    return ends


@pytest.mark.parametrize(
    "path", [MIM / "rt.dcm", DCMQI / "01.dcm", DCMQI / "liver.dcm"], ids=lambda p: p.name
)
def test_truncated_files_are_never_instances(path: Path) -> None:
    data = path.read_bytes()
    ends = top_level_ends(data)
    rng = random.Random(path.name)
    cuts = {1, 60, 131, 140, 300, len(data) // 2, len(data) - 1, len(data) - 3}
    cuts |= {rng.randrange(1, len(data)) for _ in range(150)}
    for cut in sorted(cuts - ends):
        result = parse_bytes(data[:cut])
        assert isinstance(result, Rejection), f"cut at {cut} parsed as an instance"
        assert result.kind in (RejectKind.TRUNCATED, RejectKind.NOT_DICOM), (cut, result)


def test_truncated_in_header_and_in_pixel_data_say_where(tmp_path: Path) -> None:
    data = (DCMQI / "01.dcm").read_bytes()
    ds = read(DCMQI / "01.dcm")
    pixel_offset = len(data) - len(ds.PixelData)
    for cut, words in ((pixel_offset + 1000, "PixelData"), (len(data) - 1, "PixelData")):
        path = tmp_path / "cut.dcm"
        path.write_bytes(data[:cut])
        result = parse_file(str(path))
        assert result is not None
        assert isinstance(result.result, Rejection)
        assert result.result.kind is RejectKind.TRUNCATED
        assert words in result.result.reason
        assert str(cut) in result.result.reason
    middle = (pixel_offset + 400) // 2  # somewhere in the header
    result = parse_bytes(data[: middle - middle % 2 + 1])
    assert isinstance(result, Rejection)
    assert result.kind is RejectKind.TRUNCATED


def test_unterminated_undefined_length_sequence_is_truncated() -> None:
    ds = dataset(RT_STRUCT)
    ds.ReferencedFrameOfReferenceSequence = Sequence([item(FrameOfReferenceUID=generate_uid())])
    ds["ReferencedFrameOfReferenceSequence"].is_undefined_length = True
    data = encode(ds)
    assert data.endswith(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    assert isinstance(parse_bytes(data), Instance)
    for cut in (1, 4, 8, 9):
        result = parse_bytes(data[:-cut])
        assert isinstance(result, Rejection), cut
        assert result.kind is RejectKind.TRUNCATED


def test_unterminated_encapsulated_pixel_data_is_truncated() -> None:
    path = get_testdata_file("JPEG2000.dcm")
    data = Path(path).read_bytes()
    assert isinstance(parse_bytes(data), Instance)
    for cut in (2, 8, 100, 2000):
        result = parse_bytes(data[:-cut])
        assert isinstance(result, Rejection), cut
        assert result.kind is RejectKind.TRUNCATED


def test_declared_length_beyond_the_file_is_truncated() -> None:
    data = file_header(ExplicitVRLittleEndian) + identity()
    data += struct.pack("<HH", 0x0009, 0x1010) + b"OB\0\0" + struct.pack("<I", 0xFFFFFFF0)
    result = parse_bytes(data + b"\0" * 100)
    assert isinstance(result, Rejection)
    assert result.kind is RejectKind.TRUNCATED


# -- deflate -----------------------------------------------------------------


def test_small_deflated_file_is_parsed() -> None:
    ds = dataset(RT_PLAN, RTPlanLabel="DEFL")
    ds.ReferencedStructureSetSequence = Sequence([ref(RT_STRUCT, generate_uid())])
    data = encode(ds, DeflatedExplicitVRLittleEndian)
    plan = parse_bytes(data)
    assert isinstance(plan, Instance), plan
    assert plan.transfer_syntax == DeflatedExplicitVRLittleEndian
    assert plan.label == "DEFL"
    structure_set = ds.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID
    assert targets(plan, Role.STRUCTURE_SET) == {structure_set}
    assert isinstance(parse_file(get_testdata_file("image_dfl.dcm")).result, Instance)  # type: ignore[union-attr]


def test_truncated_deflated_file_is_truncated() -> None:
    ds = dataset(RT_PLAN, RTPlanLabel="x" * 16, PlanIntent="CURATIVE")
    data = encode(ds, DeflatedExplicitVRLittleEndian)
    result = parse_bytes(data[:-10])
    assert isinstance(result, Rejection)
    assert result.kind is RejectKind.TRUNCATED


@pytest.fixture(scope="module")
def deflate_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 200 KB that inflates to 200 MB of zeros inside an OB element."""
    inflated = 200 * 1024 * 1024
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    header = identity() + struct.pack("<HH", 0x0042, 0x0011) + b"OB\0\0"
    parts = [compressor.compress(header + struct.pack("<I", inflated))]
    zeros = bytes(1024 * 1024)
    for _ in range(inflated // len(zeros)):
        parts.append(compressor.compress(zeros))
    parts.append(compressor.flush())
    path = tmp_path_factory.mktemp("bomb") / "bomb.dcm"
    path.write_bytes(file_header(DeflatedExplicitVRLittleEndian) + b"".join(parts))
    return path


def test_deflate_bomb_is_too_large_with_bounded_memory(deflate_bomb: Path) -> None:
    assert deflate_bomb.stat().st_size < 400 * 1024
    tracemalloc.start()
    try:
        result = parse_file(str(deflate_bomb))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result is not None
    assert isinstance(result.result, Rejection)
    assert result.result.kind is RejectKind.TOO_LARGE
    assert peak < 50 * 1024 * 1024
    assert MAX_INFLATED_BYTES < 200 * 1024 * 1024


# -- nesting -----------------------------------------------------------------


def test_5000_nested_undefined_length_sequences_are_too_deep() -> None:
    data = file_header(ExplicitVRLittleEndian) + identity()
    data += nested_sequences(5000, undefined=True)
    result = parse_bytes(data)
    assert isinstance(result, Rejection)
    assert result.kind is RejectKind.TOO_DEEP


def test_5000_nested_defined_length_sequences_are_walked_to_a_bound() -> None:
    data = file_header(ExplicitVRLittleEndian) + identity()
    data += nested_sequences(5000, undefined=False)
    result = parse_bytes(data)
    assert isinstance(result, Instance), result
    assert "walk_truncated" in result.flags
    assert result.edges == []


def test_nesting_within_the_bound_is_walked_completely() -> None:
    data = file_header(ExplicitVRLittleEndian, sop_class=CT_IMAGE) + identity()
    data += nested_sequences(MAX_WALK_DEPTH, undefined=False)
    result = parse_bytes(data)
    assert isinstance(result, Instance), result
    assert "walk_truncated" not in result.flags
    (edge,) = result.edges
    assert edge.target_uid == "1.2.840.99.1"
    assert edge.path == ".".join(["ContentSequence[0]"] * MAX_WALK_DEPTH) + (
        ".ReferencedSOPInstanceUID"
    )


# -- identity ----------------------------------------------------------------


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


# -- known reference paths ---------------------------------------------------


def test_plan_paths_roles_and_qualifiers() -> None:
    rs, plan_dose, group_dose, beam_dose, cp_dose = (generate_uid() for _ in range(5))
    drr, setup_photo, brachy_image, prior_plan, radiation = (generate_uid() for _ in range(5))
    ds = dataset(RT_PLAN, RTPlanLabel="P", PlanIntent="CURATIVE")
    ds.ReferencedStructureSetSequence = Sequence([ref(RT_STRUCT, rs)])
    ds.ReferencedDoseSequence = Sequence([ref(RT_DOSE, plan_dose)])
    ds.ReferencedRTPlanSequence = Sequence(
        [ref(RT_PLAN, prior_plan, RTPlanRelationship="PREDECESSOR")]
    )
    ds.FractionGroupSequence = Sequence(
        [item(FractionGroupNumber=1, ReferencedDoseSequence=Sequence([ref(RT_DOSE, group_dose)]))]
    )
    control_points = [item(ControlPointIndex=i) for i in range(3)]
    control_points[2].ReferencedDoseSequence = Sequence([ref(RT_DOSE, cp_dose)])
    ds.BeamSequence = Sequence(
        [
            item(BeamNumber=1),
            item(
                BeamNumber=2,
                ReferencedDoseSequence=Sequence([ref(RT_DOSE, beam_dose)]),
                ReferencedReferenceImageSequence=Sequence([ref(RT_IMAGE, drr)]),
                DefinitionSourceSequence=Sequence(
                    [ref("1.2.840.10008.5.1.4.1.1.481.13", radiation)]
                ),
                ControlPointSequence=Sequence(control_points),
            ),
        ]
    )
    ds.ApplicationSetupSequence = Sequence(
        [
            item(
                ApplicationSetupNumber=4,
                ReferencedReferenceImageSequence=Sequence([ref(RT_IMAGE, brachy_image)]),
            )
        ]
    )
    ds.PatientSetupSequence = Sequence(
        [
            item(
                PatientSetupNumber=1,
                ReferencedSetupImageSequence=Sequence([ref(RT_IMAGE, setup_photo)]),
            )
        ]
    )
    plan = parse_ds(ds)
    by_target = {e.target_uid: e for e in plan.edges}
    assert by_target[rs].role is Role.STRUCTURE_SET
    assert by_target[plan_dose].role is Role.DOSE
    assert by_target[plan_dose].path == "ReferencedDoseSequence[0].ReferencedSOPInstanceUID"
    assert by_target[group_dose].qualifiers == (("fraction_group", "1"),)
    assert by_target[group_dose].path == (
        "FractionGroupSequence[0].ReferencedDoseSequence[0].ReferencedSOPInstanceUID"
    )
    assert by_target[beam_dose].qualifiers == (("beam", "2"),)
    assert by_target[beam_dose].path == (
        "BeamSequence[1].ReferencedDoseSequence[0].ReferencedSOPInstanceUID"
    )
    assert by_target[cp_dose].role is Role.DOSE
    assert by_target[cp_dose].qualifiers == (("beam", "2"), ("control_point", "2"))
    assert by_target[drr].role is Role.REFERENCE_IMAGE
    assert by_target[drr].qualifier("beam") == "2"
    assert by_target[brachy_image].role is Role.REFERENCE_IMAGE
    assert by_target[setup_photo].role is Role.REFERENCE_IMAGE
    assert by_target[prior_plan].role is Role.RELATED_PLAN
    assert by_target[prior_plan].qualifier("relationship") == "PREDECESSOR"
    assert by_target[radiation].role is Role.DEFINITION_SOURCE
    assert by_target[rs].class_hint == RT_STRUCT
    assert len(plan.edges) == 10
    assert plan.plan_intent == "CURATIVE"


def test_ion_plan_uses_the_plan_paths() -> None:
    dose = generate_uid()
    ds = dataset("1.2.840.10008.5.1.4.1.1.481.8")
    ds.IonBeamSequence = Sequence(
        [item(BeamNumber=3, ReferencedDoseSequence=Sequence([ref(RT_DOSE, dose)]))]
    )
    (edge,) = parse_ds(ds).edges
    assert (edge.target_uid, edge.role, edge.qualifiers) == (dose, Role.DOSE, (("beam", "3"),))


def test_dose_paths_and_qualifiers() -> None:
    plan, rs, record, registration, source = (generate_uid() for _ in range(5))
    ds = dataset(RT_DOSE, DoseSummationType="BEAM")
    group = item(
        ReferencedFractionGroupNumber=1,
        ReferencedBeamSequence=Sequence(
            [item(ReferencedBeamNumber=1), item(ReferencedBeamNumber=3)]
        ),
    )
    ds.ReferencedRTPlanSequence = Sequence(
        [ref(RT_PLAN, plan, ReferencedFractionGroupSequence=Sequence([group]))]
    )
    ds.ReferencedStructureSetSequence = Sequence([ref(RT_STRUCT, rs)])
    ds.ReferencedTreatmentRecordSequence = Sequence([ref(RT_BEAMS_RECORD, record)])
    ds.ReferencedSpatialRegistrationSequence = Sequence([ref(SPATIAL_REG, registration)])
    ds.ReferencedInstanceSequence = Sequence([ref(RT_DOSE, source)])
    dose = parse_ds(ds, ImplicitVRLittleEndian)
    by_target = {e.target_uid: e for e in dose.edges}
    assert by_target[plan].role is Role.PLAN
    assert by_target[plan].qualifiers == (
        ("fraction_group", "1"),
        ("beams", "1,3"),
        ("dose_summation_type", "BEAM"),
    )
    assert by_target[rs].role is Role.STRUCTURE_SET
    assert by_target[record].role is Role.TREATMENT_RECORD
    assert by_target[registration].role is Role.REGISTRATION
    assert by_target[source].role is Role.SOURCE_INSTANCE
    assert dose.dose_summation_type == "BEAM"


def test_rt_image_plan_reference_with_beam_and_image_type() -> None:
    plan = generate_uid()
    ds = dataset(RT_IMAGE, ReferencedBeamNumber=2, ReferencedFractionGroupNumber=1)
    ds.ImageType = ["DERIVED", "SECONDARY", "DRR"]
    ds.RTImageLabel = "DRR beam 2"
    ds.ReferencedRTPlanSequence = Sequence([ref(RT_PLAN, plan)])
    image = parse_ds(ds)
    (edge,) = image.edges
    assert edge.role is Role.PLAN
    assert edge.qualifiers == (("beam", "2"), ("fraction_group", "1"), ("image_type", "DRR"))
    assert image.label == "DRR beam 2"


def test_treatment_record_paths() -> None:
    plan, earlier, portal = (generate_uid() for _ in range(3))
    ds = dataset(RT_BEAMS_RECORD)
    ds.ReferencedRTPlanSequence = Sequence([ref(RT_PLAN, plan)])
    ds.ReferencedTreatmentRecordSequence = Sequence([ref(RT_BEAMS_RECORD, earlier)])
    ds.TreatmentSessionBeamSequence = Sequence(
        [
            item(
                ReferencedBeamNumber=5,
                ReferencedVerificationImageSequence=Sequence([ref(RT_IMAGE, portal)]),
            )
        ]
    )
    by_target = {e.target_uid: e for e in parse_ds(ds).edges}
    assert by_target[plan].role is Role.PLAN
    assert by_target[earlier].role is Role.TREATMENT_RECORD
    assert by_target[portal].role is Role.VERIFICATION_IMAGE
    assert by_target[portal].qualifiers == (("beam", "5"),)


def test_second_generation_scope_references_a_legacy_plan() -> None:
    plan = generate_uid()
    ds = dataset("1.2.840.10008.5.1.4.1.1.481.22")
    ds.RTPatientPositionScopeSequence = Sequence(
        [item(ReferencedRTPlanSequence=Sequence([ref(RT_PLAN, plan)]))]
    )
    (edge,) = parse_ds(ds).edges
    assert (edge.target_uid, edge.role) == (plan, Role.PLAN)


def test_spatial_registration_frames_and_images() -> None:
    target_for, source_for, image, series = (generate_uid() for _ in range(4))
    ds = dataset(SPATIAL_REG, FrameOfReferenceUID=target_for)
    ds.RegistrationSequence = Sequence(
        [
            item(FrameOfReferenceUID=target_for),  # the usual identity item
            item(
                FrameOfReferenceUID=source_for,
                ReferencedImageSequence=Sequence([ref("1.2.840.10008.5.1.4.1.1.4", image)]),
            ),
        ]
    )
    ds.ReferencedSeriesSequence = Sequence(
        [
            item(
                SeriesInstanceUID=series,
                ReferencedInstanceSequence=Sequence([ref("1.2.840.10008.5.1.4.1.1.4", image)]),
            )
        ]
    )
    reg = parse_ds(ds)
    frames = {
        (e.target_uid, e.qualifier("registration")) for e in edges(reg, Role.FRAME_OF_REFERENCE)
    }
    assert frames == {(target_for, "target"), (target_for, "source"), (source_for, "source")}
    (image_edge,) = edges(reg, Role.IMAGE)
    assert image_edge.target_uid == image
    assert image_edge.qualifier("registration") == "source"
    # location learned from the Common Instance Reference
    assert (image_edge.study_uid, image_edge.series_uid) == (ds.StudyInstanceUID, series)


def test_deformable_registration_source_frame() -> None:
    target_for, source_for = generate_uid(), generate_uid()
    ds = dataset(DEFORMABLE_REG, FrameOfReferenceUID=target_for)
    ds.DeformableRegistrationSequence = Sequence([item(SourceFrameOfReferenceUID=source_for)])
    reg = parse_ds(ds)
    frames = {(e.target_uid, e.qualifier("registration")) for e in reg.edges}
    assert frames == {(target_for, "target"), (source_for, "source")}


def test_structured_report_evidence_content_and_predecessor() -> None:
    study, series, evidence, cited, state, earlier = (generate_uid() for _ in range(6))
    ds = dataset(COMPREHENSIVE_SR)
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence(
        [
            item(
                StudyInstanceUID=study,
                ReferencedSeriesSequence=Sequence(
                    [
                        item(
                            SeriesInstanceUID=series,
                            ReferencedSOPSequence=Sequence([ref(CT_IMAGE, evidence)]),
                        )
                    ]
                ),
            )
        ]
    )
    image_item = item(ValueType="IMAGE")
    image_item.ReferencedSOPSequence = Sequence(
        [
            ref(
                CT_IMAGE,
                cited,
                ReferencedSOPSequence=Sequence([ref("1.2.840.10008.5.1.4.1.1.11.1", state)]),
            )
        ]
    )
    ds.ContentSequence = Sequence(
        [item(ValueType="CONTAINER", ContentSequence=Sequence([image_item]))]
    )
    ds.PredecessorDocumentsSequence = Sequence(
        [
            item(
                StudyInstanceUID=study,
                ReferencedSeriesSequence=Sequence(
                    [
                        item(
                            SeriesInstanceUID=series,
                            ReferencedSOPSequence=Sequence([ref(COMPREHENSIVE_SR, earlier)]),
                        )
                    ]
                ),
            )
        ]
    )
    report = parse_ds(ds)
    by_target = {e.target_uid: e for e in report.edges}
    assert by_target[evidence].role is Role.EVIDENCE
    assert (by_target[evidence].study_uid, by_target[evidence].series_uid) == (study, series)
    assert by_target[cited].role is Role.EVIDENCE
    assert by_target[cited].path == (
        "ContentSequence[0].ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID"
    )
    assert by_target[state].role is Role.EVIDENCE
    assert by_target[earlier].role is Role.PREDECESSOR
    assert not edges(report, level=Level.SERIES)  # hierarchical series are locations, not edges


def test_generic_walk_finds_private_and_unknown_references() -> None:
    private_target, nested_study, series, frame = (generate_uid() for _ in range(4))
    ds = dataset(CT_IMAGE)
    block = ds.private_block(0x0011, "ACME 1.0", create=True)
    block.add_new(0x10, "SQ", Sequence([ref(RT_PLAN, private_target)]))
    ds.RequestAttributesSequence = Sequence(
        [
            item(
                ReferencedStudySequence=Sequence([ref("1.2.840.10008.3.1.2.3.1", nested_study)]),
            )
        ]
    )
    ds.RelatedSeriesSequence = Sequence(
        [item(StudyInstanceUID=ds.StudyInstanceUID, SeriesInstanceUID=series)]
    )
    ds.FiducialSetSequence = Sequence([item(FrameOfReferenceUID=frame)])
    for transfer_syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian):
        ct = parse_ds(ds, transfer_syntax)
        by_target = {e.target_uid: e for e in ct.edges}
        assert by_target[private_target].role is Role.GENERIC
        assert by_target[private_target].path == "(0011,1010)[0].ReferencedSOPInstanceUID"
        assert by_target[private_target].class_hint == RT_PLAN
        assert (by_target[nested_study].level, by_target[nested_study].role) == (
            Level.STUDY,
            Role.STUDY,
        )
        assert by_target[series].level is Level.SERIES
        assert by_target[series].study_uid == ds.StudyInstanceUID
        assert by_target[series].qualifier("instances_listed") == "no"
        assert by_target[frame].level is Level.FRAME_OF_REFERENCE
        assert len(ct.edges) == 4, transfer_syntax


def test_edges_skip_own_uid_and_empty_targets_and_mark_unsafe_targets() -> None:
    ds = dataset(CT_IMAGE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.ReferencedImageSequence = Sequence(
            [
                ref(CT_IMAGE, ds.SOPInstanceUID),
                ref(CT_IMAGE, ""),
                ref(CT_IMAGE, "../x"),
                ref(CT_IMAGE, "1.2.3", ReferencedFrameNumber=[1, 2]),
            ]
        )
    ct = parse_ds(ds)
    assert [(e.target_uid, e.qualifiers) for e in ct.edges] == [
        ("../x", (("unsafe_uid", "yes"),)),
        ("1.2.3", (("frame", "1,2"),)),
    ]
    assert ct.edges[0].path == "ReferencedImageSequence[2].ReferencedSOPInstanceUID"


def test_undefined_length_sequences_are_read_like_defined_ones() -> None:
    rs_uid = generate_uid()
    ds = dataset(RT_PLAN)
    ds.ReferencedStructureSetSequence = Sequence([ref(RT_STRUCT, rs_uid)])
    ds["ReferencedStructureSetSequence"].is_undefined_length = True
    ds.ReferencedStructureSetSequence[0].is_undefined_length_sequence_item = True
    assert targets(parse_ds(ds), Role.STRUCTURE_SET) == {rs_uid}


def test_large_sequences_beyond_the_defer_size_are_still_read() -> None:
    ds = dataset(RT_STRUCT)
    images = [ref(CT_IMAGE, generate_uid()) for _ in range(2000)]  # > 64 KB of items
    ds.ReferencedFrameOfReferenceSequence = Sequence(
        [
            item(
                FrameOfReferenceUID=generate_uid(),
                RTReferencedStudySequence=Sequence(
                    [
                        ref(
                            "1.2.840.10008.3.1.2.3.1",
                            ds.StudyInstanceUID,
                            RTReferencedSeriesSequence=Sequence(
                                [
                                    item(
                                        SeriesInstanceUID=generate_uid(),
                                        ContourImageSequence=Sequence(images),
                                    )
                                ]
                            ),
                        )
                    ]
                ),
            )
        ]
    )
    data = encode(ds)
    assert len(data) > 128 * 1024
    rs = parse_bytes(data)
    assert isinstance(rs, Instance)
    assert targets(rs, Role.IMAGE) == {i.ReferencedSOPInstanceUID for i in images}


def test_parse_fileobj_on_an_open_file() -> None:
    path = MONACO / "TinyFS_TinyVMAT.dcm"
    with open(path, "rb") as fh:
        result = parse_fileobj(fh, path.stat().st_size)
    assert isinstance(result, Instance)


def raw_sequences(elems: list[RawDataElement | DataElement]) -> list[RawDataElement]:
    """Raw sequence values in ``elems``, also inside sequences pydicom already parsed."""
    found = []
    for elem in elems:
        if isinstance(elem, DataElement):
            if elem.VR == "SQ":
                for item_ in elem.value:
                    found += raw_sequences(list(item_._dict.values()))
        elif elem.value and (elem.VR == "SQ" or (elem.VR is None and elem.tag in SEQUENCE_TAGS)):
            found.append(elem)
    return found


def comparable(elem: RawDataElement) -> tuple[int, str | None, int, bytes]:
    return (int(elem.tag), elem.VR, elem.length, elem.value or b"")


def compare_fast_reader(path: Path | str) -> int:
    """Check every nested sequence the fast reader accepts against pydicom; count them."""
    data = Path(path).read_bytes()
    ds = read(path)
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    implicit = syntax == ImplicitVRLittleEndian or (syntax is None and ds.is_implicit_VR)
    fp = io.BytesIO(data)
    if data[128:132] == b"DICM":
        fp.seek(132)
        pydicom.filereader._read_file_meta_info(fp)
    pending = raw_sequences(list(data_element_generator(fp, implicit, True)))
    compared = 0
    while pending:
        sequence = pending.pop()
        assert sequence.value is not None
        is_implicit = bool(sequence.is_implicit_VR)
        fast = read_items(sequence.value, is_implicit, True, 0)
        slow = convert_SQ(sequence.value, is_implicit, True, None, 0)
        assert len(fast) == len(slow)
        for fast_item, slow_item in zip(fast, slow, strict=True):
            slow_elems = list(slow_item._dict.values())
            assert [comparable(e) for e in fast_item.values()] == [
                comparable(e) for e in slow_elems
            ]
            pending.extend(raw_sequences(slow_elems))
        compared += 1
    return compared


PYDICOM_RT = [get_testdata_file(n) for n in ("rtplan.dcm", "rtdose.dcm", "rtstruct.dcm")]


@pytest.mark.parametrize("path", REAL_FILES + PYDICOM_RT, ids=lambda p: Path(p).name)
def test_fast_item_reader_agrees_with_pydicom(path: Path) -> None:
    compare_fast_reader(path)


def test_fast_item_reader_is_exercised_by_defined_length_files() -> None:
    # Most exporters here write undefined-length sequences, which pydicom
    # parses while reading; highdicom, dcm4che (Pinnacle) and pydicom do not.
    assert compare_fast_reader(HIGHDICOM / "seg_image_ct_binary_single_frame.dcm") > 10
    assert compare_fast_reader(get_testdata_file("rtplan.dcm")) > 10


def test_fast_item_reader_leaves_unusual_encodings_to_pydicom() -> None:
    ds = dataset(RT_PLAN)
    structure_set = ref(RT_STRUCT, generate_uid())
    structure_set.is_undefined_length_sequence_item = True  # inside a defined-length SQ
    ds.ReferencedStructureSetSequence = Sequence([structure_set])
    assert targets(parse_ds(ds), Role.STRUCTURE_SET) == {structure_set.ReferencedSOPInstanceUID}


def test_large_implicit_vr_sequences_beyond_the_defer_size_are_still_read() -> None:
    ds = dataset(RT_PLAN)
    doses = [ref(RT_DOSE, generate_uid()) for _ in range(1500)]
    ds.ReferencedDoseSequence = Sequence(doses)
    data = encode(ds, ImplicitVRLittleEndian)
    assert len(data) > 96 * 1024
    plan = parse_bytes(data)
    assert isinstance(plan, Instance)
    assert targets(plan, Role.DOSE) == {d.ReferencedSOPInstanceUID for d in doses}


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


# -- fuzzing -----------------------------------------------------------------

SMALL_REAL = [
    (MONACO / "TinyFS_StrctrSets.dcm").read_bytes(),
    (MONACO / "TinyFS_CT1_image00000.DCM").read_bytes(),
    (MIM / "rt.dcm").read_bytes(),
    (HIGHDICOM / "seg_image_ct_binary_single_frame.dcm").read_bytes(),
    sorted(PINNACLE.iterdir(), key=lambda p: p.stat().st_size)[0].read_bytes(),
    Path(get_testdata_file("rtplan.dcm")).read_bytes(),
]
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_end_in_a_record_or_rejection(data: bytes) -> None:
    assert isinstance(parse_bytes(data), Instance | Rejection)


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_after_a_dicom_header(data: bytes) -> None:
    assert isinstance(parse_bytes(b"\0" * 128 + b"DICM" + data), Instance | Rejection)
    assert isinstance(parse_bytes(file_header(ExplicitVRLittleEndian) + data), Instance | Rejection)


mutation = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "overwrite"]),
    st.floats(0, 1, exclude_max=True),
    st.binary(min_size=1, max_size=8),
)


@FUZZ
@given(st.sampled_from(range(len(SMALL_REAL))), st.lists(mutation, min_size=1, max_size=6))
def test_mutated_real_files_end_in_a_record_or_rejection(
    index: int, mutations: list[tuple[str, float, bytes]]
) -> None:
    data = bytearray(SMALL_REAL[index])
    for op, where, payload in mutations:
        at = int(where * len(data)) if data else 0
        if op == "flip" and data:
            data[at] ^= payload[0] or 0xFF
        elif op == "insert":
            data[at:at] = payload
        elif op == "delete":
            del data[at : at + len(payload)]
        else:
            data[at : at + len(payload)] = payload
    result = parse_bytes(bytes(data))
    assert isinstance(result, Instance | Rejection)
    if isinstance(result, Instance):
        assert result.sop_instance_uid
        assert all(e.target_uid for e in result.edges)
