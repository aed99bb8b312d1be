"""The demo generator writes what its records claim.

Other tests trust DemoPatient/DemoSet for their expectations, so these tests
check the files against the records with pydicom directly (not with the
project's parser, which is what the other tests exercise).
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicomfs.demo import (
    BIG_ENDIAN,
    DEFLATED,
    EXPLICIT_LE,
    IMPLICIT_NO_PREAMBLE,
    DemoPatient,
    DemoSet,
    demo_data_command,
    write_ct_series,
    write_demo,
)
from dicomfs.dicom.records import UID_PATTERN, RejectKind, is_safe_uid

RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
RT_ION_PLAN = "1.2.840.10008.5.1.4.1.1.481.8"
RT_RECORD = "1.2.840.10008.5.1.4.1.1.481.4"
RT_IMAGE = "1.2.840.10008.5.1.4.1.1.481.1"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
REG = "1.2.840.10008.5.1.4.1.1.66.1"
STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"
TRANSFER_SYNTAX = {
    EXPLICIT_LE: "1.2.840.10008.1.2.1",
    BIG_ENDIAN: "1.2.840.10008.1.2.2",
    DEFLATED: "1.2.840.10008.1.2.1.99",
}
CT_ROWS = 64
CT_SLICES = 8
MR_SLICES = 4


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoSet:
    root = tmp_path_factory.mktemp("demo")
    return write_demo(root, patients=2, ct_slices=CT_SLICES, mr_slices=MR_SLICES, ct_rows=CT_ROWS)


def read(demo: DemoSet, patient: DemoPatient, uid: str, *, pixels: bool = False) -> Dataset:
    force = patient.encodings[uid] == IMPLICIT_NO_PREAMBLE
    return pydicom.dcmread(
        demo.root / patient.files[uid], force=force, stop_before_pixels=not pixels
    )


def uids_of(items: object) -> list[str]:
    return [str(item.ReferencedSOPInstanceUID) for item in items]  # type: ignore[attr-defined]


def all_files(root: Path) -> set[str]:
    return {
        os.fsdecode(os.path.relpath(os.path.join(base, name), os.fsencode(root)))
        for base, _dirs, names in os.walk(os.fsencode(root))
        for name in names
    }


def ui_values(ds: Dataset) -> Iterator[str]:
    for element in ds.iterall():
        if element.VR == "UI" and element.value:
            values = element.value if element.VM > 1 else [element.value]
            yield from (str(v) for v in values)


# ---------------------------------------------------------------------------
# Records and files agree
# ---------------------------------------------------------------------------


def test_every_patient_file_reads_back_with_its_uid(demo: DemoSet) -> None:
    for patient in demo.patients:
        assert set(patient.files) == set(patient.encodings)
        for uid in patient.files:
            ds = read(demo, patient, uid, pixels=True)
            assert str(ds.SOPInstanceUID) == uid
            assert ds.PatientID == patient.patient_id
            assert ds.StudyInstanceUID == patient.study_uid
            if patient.encodings[uid] != IMPLICIT_NO_PREAMBLE:
                # Readable without force: proper preamble and file meta.
                strict = pydicom.dcmread(demo.root / patient.files[uid])
                assert strict.file_meta.MediaStorageSOPInstanceUID == uid


def test_record_names_every_object_written(demo: DemoSet) -> None:
    for patient in demo.patients:
        named = {
            *patient.ct_uids,
            *patient.mr_uids,
            *patient.structure_set_uids,
            patient.plan_uid,
            patient.plan_dose_uid,
            *patient.beam_dose_uids,
            patient.rt_image_uid,
            patient.record_uid,
            patient.verification_image_uid,
            patient.verification_plan_uid,
            patient.registration_uid,
            patient.seg_uid,
            patient.missing_structure_set_plan_uid,
        }
        assert named == set(patient.files)
        assert patient.missing_structure_set_uid not in patient.files
        assert patient.plan_structure_set_uid == patient.structure_set_uids[0]
        assert len(patient.structure_set_uids) >= 2


def test_uids_are_valid_and_unique(demo: DemoSet) -> None:
    seen: dict[str, str] = {}
    for patient in demo.patients:
        for uid in patient.files:
            assert is_safe_uid(uid), uid
            assert uid not in seen, f"{uid} in {patient.patient_id} and {seen[uid]}"
            seen[uid] = patient.patient_id
            for value in ui_values(read(demo, patient, uid)):
                assert is_safe_uid(value), (patient.files[uid], value)
        for value in (
            patient.study_uid,
            patient.ct_series_uid,
            patient.mr_series_uid,
            patient.ct_for_uid,
            patient.mr_for_uid,
            patient.missing_structure_set_uid,
        ):
            assert is_safe_uid(value)


def test_every_file_in_the_tree_is_accounted_for(demo: DemoSet) -> None:
    expected = {path for p in demo.patients for path in p.files.values()}
    expected |= set(demo.hostile)
    expected |= {pair[1] for pair in demo.duplicates.values()}
    assert all_files(demo.root) == expected


# ---------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------


def test_folders_look_like_real_exports(demo: DemoSet) -> None:
    for patient in demo.patients:
        ct_dirs = {Path(patient.files[uid]).parent for uid in patient.ct_uids}
        assert len(ct_dirs) == 1
        assert next(iter(ct_dirs)).parts[0] == "pacs"
        for uid in patient.mr_uids:
            path = Path(patient.files[uid])
            assert path.parts[0] == "cd-import" and path.suffix == ""
        for uid in (patient.plan_uid, *patient.structure_set_uids, patient.plan_dose_uid):
            assert Path(patient.files[uid]).parent not in ct_dirs
            assert Path(patient.files[uid]).parts[0] == "export-tps"
        assert Path(patient.files[patient.record_uid]).suffix == ""


# ---------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------


def test_ct_series_geometry(demo: DemoSet) -> None:
    for patient in demo.patients:
        zs = []
        for number, uid in enumerate(patient.ct_uids, start=1):
            ds = read(demo, patient, uid, pixels=True)
            assert ds.SeriesInstanceUID == patient.ct_series_uid
            assert ds.FrameOfReferenceUID == patient.ct_for_uid
            assert ds.InstanceNumber == number
            assert (ds.Rows, ds.Columns) == (CT_ROWS, CT_ROWS)
            assert len(ds.PixelData) == CT_ROWS * CT_ROWS * 2
            zs.append(float(ds.ImagePositionPatient[2]))
        assert zs == sorted(zs) and len(set(zs)) == len(zs)


def test_big_endian_slice_has_the_same_pixels(demo: DemoSet) -> None:
    patient = demo.patients[0]
    big = [uid for uid in patient.ct_uids if patient.encodings[uid] == BIG_ENDIAN]
    assert len(big) == 1
    ds = read(demo, patient, big[0], pixels=True)
    index = patient.ct_uids.index(big[0])
    other = read(demo, patient, patient.ct_uids[index - 1], pixels=True)
    # Centre pixel (soft tissue, 1064) as each file's byte order stores it.
    centre = (CT_ROWS // 2 * CT_ROWS + CT_ROWS // 2) * 2
    assert int.from_bytes(ds.PixelData[centre : centre + 2], "big") == 1064
    assert int.from_bytes(other.PixelData[centre : centre + 2], "little") == 1064


def test_mr_is_on_its_own_frame_of_reference(demo: DemoSet) -> None:
    for patient in demo.patients:
        assert patient.mr_for_uid != patient.ct_for_uid
        for uid in patient.mr_uids:
            ds = read(demo, patient, uid)
            assert ds.Modality == "MR"
            assert ds.SeriesInstanceUID == patient.mr_series_uid
            assert ds.FrameOfReferenceUID == patient.mr_for_uid


# ---------------------------------------------------------------------------
# Structure sets
# ---------------------------------------------------------------------------


def test_structure_sets_reference_every_ct_slice(demo: DemoSet) -> None:
    for patient in demo.patients:
        slice_z = {
            uid: float(read(demo, patient, uid).ImagePositionPatient[2]) for uid in patient.ct_uids
        }
        for rs_uid in patient.structure_set_uids:
            ds = read(demo, patient, rs_uid)
            (frame,) = ds.ReferencedFrameOfReferenceSequence
            assert frame.FrameOfReferenceUID == patient.ct_for_uid
            (study,) = frame.RTReferencedStudySequence
            assert study.ReferencedSOPClassUID == STUDY_MANAGEMENT
            assert study.ReferencedSOPInstanceUID == patient.study_uid
            (series,) = study.RTReferencedSeriesSequence
            assert series.SeriesInstanceUID == patient.ct_series_uid
            assert uids_of(series.ContourImageSequence) == list(patient.ct_uids)

            numbers = [roi.ROINumber for roi in ds.StructureSetROISequence]
            assert [c.ReferencedROINumber for c in ds.ROIContourSequence] == numbers
            assert [o.ReferencedROINumber for o in ds.RTROIObservationsSequence] == numbers
            for roi in ds.StructureSetROISequence:
                assert roi.ReferencedFrameOfReferenceUID == patient.ct_for_uid
            for roi_contour in ds.ROIContourSequence:
                assert len(roi_contour.ContourSequence) >= 2
                for contour in roi_contour.ContourSequence:
                    assert contour.ContourGeometricType == "CLOSED_PLANAR"
                    data = [float(v) for v in contour.ContourData]
                    assert len(data) == 3 * contour.NumberOfContourPoints >= 9
                    (image_uid,) = uids_of(contour.ContourImageSequence)
                    assert {data[i] for i in range(2, len(data), 3)} == {slice_z[image_uid]}


def test_only_the_first_structure_set_is_named_by_a_plan(demo: DemoSet) -> None:
    for patient in demo.patients:
        named: set[str] = set()
        for uid in patient.files:
            ds = read(demo, patient, uid)
            named.update(uids_of(ds.get("ReferencedStructureSetSequence", [])))
        assert named == {patient.plan_structure_set_uid, patient.missing_structure_set_uid}
        # The other structure sets sit on the same CT series: only the plan
        # reference tells them apart.
        assert not named & set(patient.structure_set_uids[1:])


# ---------------------------------------------------------------------------
# Plans, doses, images, records
# ---------------------------------------------------------------------------


def test_plan_references(demo: DemoSet) -> None:
    for patient in demo.patients:
        plan = read(demo, patient, patient.plan_uid)
        assert plan.SOPClassUID == RT_PLAN
        assert plan.RTPlanGeometry == "PATIENT"
        assert plan.RTPlanLabel
        assert plan.FrameOfReferenceUID == patient.ct_for_uid
        assert uids_of(plan.ReferencedStructureSetSequence) == [patient.plan_structure_set_uid]
        assert uids_of(plan.ReferencedDoseSequence) == [patient.plan_dose_uid]
        beams = plan.BeamSequence
        assert [b.BeamNumber for b in beams] == list(patient.beam_numbers)
        assert uids_of(beams[0].ReferencedReferenceImageSequence) == [patient.rt_image_uid]
        for beam in beams:
            assert len(beam.ControlPointSequence) == beam.NumberOfControlPoints == 2
        (group,) = plan.FractionGroupSequence
        assert [r.ReferencedBeamNumber for r in group.ReferencedBeamSequence] == list(
            patient.beam_numbers
        )
        (target,) = plan.DoseReferenceSequence
        rs = read(demo, patient, patient.plan_structure_set_uid)
        assert target.ReferencedROINumber in {r.ROINumber for r in rs.StructureSetROISequence}


def test_plan_dose_and_beam_doses(demo: DemoSet) -> None:
    for patient in demo.patients:
        plan_dose = read(demo, patient, patient.plan_dose_uid, pixels=True)
        assert plan_dose.DoseSummationType == "PLAN"
        (ref,) = plan_dose.ReferencedRTPlanSequence
        assert ref.ReferencedSOPInstanceUID == patient.plan_uid
        assert "ReferencedFractionGroupSequence" not in ref
        beams_seen = []
        for uid in patient.beam_dose_uids:
            dose = read(demo, patient, uid)
            assert dose.DoseSummationType == "BEAM"
            (ref,) = dose.ReferencedRTPlanSequence
            assert ref.ReferencedSOPClassUID == RT_PLAN
            assert ref.ReferencedSOPInstanceUID == patient.plan_uid
            (group,) = ref.ReferencedFractionGroupSequence
            assert group.ReferencedFractionGroupNumber == 1
            beams_seen += [b.ReferencedBeamNumber for b in group.ReferencedBeamSequence]
        assert sorted(beams_seen) == list(patient.beam_numbers)
        plan = read(demo, patient, patient.plan_uid)
        assert not set(uids_of(plan.ReferencedDoseSequence)) & set(patient.beam_dose_uids)


def test_dose_grid_covers_the_contours(demo: DemoSet) -> None:
    for patient in demo.patients:
        dose = read(demo, patient, patient.plan_dose_uid, pixels=True)
        assert dose.FrameOfReferenceUID == patient.ct_for_uid
        frames = int(dose.NumberOfFrames)
        offsets = [float(v) for v in dose.GridFrameOffsetVector]
        assert len(offsets) == frames >= 3
        assert len(dose.PixelData) == dose.Rows * dose.Columns * frames * 4
        assert float(dose.DoseGridScaling) > 0
        x0, y0, z0 = (float(v) for v in dose.ImagePositionPatient)
        dy, dx = (float(v) for v in dose.PixelSpacing)
        x1, y1 = x0 + dx * (dose.Columns - 1), y0 + dy * (dose.Rows - 1)
        z_range = (z0 + min(offsets), z0 + max(offsets))
        rs = read(demo, patient, patient.plan_structure_set_uid)
        for roi_contour in rs.ROIContourSequence:
            for contour in roi_contour.ContourSequence:
                data = [float(v) for v in contour.ContourData]
                for x, y, z in zip(data[0::3], data[1::3], data[2::3], strict=True):
                    assert x0 <= x <= x1 and y0 <= y <= y1
                    assert z_range[0] <= z <= z_range[1]


def test_drr_names_the_plan_with_the_wrong_class(demo: DemoSet) -> None:
    for patient in demo.patients:
        drr = read(demo, patient, patient.rt_image_uid)
        assert drr.SOPClassUID == RT_IMAGE
        assert list(drr.ImageType) == ["ORIGINAL", "PRIMARY", "DRR"]
        (ref,) = drr.ReferencedRTPlanSequence
        assert ref.ReferencedSOPInstanceUID == patient.plan_uid
        # The deliberate quirk: the hint claims RT Ion Plan, the target is an RT Plan.
        assert ref.ReferencedSOPClassUID == RT_ION_PLAN
        assert drr.ReferencedBeamNumber in patient.beam_numbers


def test_record_names_plan_and_verification_image(demo: DemoSet) -> None:
    for patient in demo.patients:
        record = read(demo, patient, patient.record_uid)
        assert record.SOPClassUID == RT_RECORD
        assert uids_of(record.ReferencedRTPlanSequence) == [patient.plan_uid]
        images = [
            uid
            for beam in record.TreatmentSessionBeamSequence
            for uid in uids_of(beam.get("ReferencedVerificationImageSequence", []))
        ]
        assert images == [patient.verification_image_uid]
        portal = read(demo, patient, patient.verification_image_uid)
        assert portal.SOPClassUID == RT_IMAGE
        assert portal.ImageType[2] == "PORTAL"
        assert "ReferencedRTPlanSequence" not in portal  # reached through the record only


def test_verification_plan(demo: DemoSet) -> None:
    for patient in demo.patients:
        qa = read(demo, patient, patient.verification_plan_uid)
        assert qa.SOPClassUID == RT_PLAN
        assert qa.PlanIntent == "VERIFICATION"
        (ref,) = qa.ReferencedRTPlanSequence
        assert ref.ReferencedSOPInstanceUID == patient.plan_uid
        assert ref.RTPlanRelationship == "VERIFIED_PLAN"
        assert "ReferencedStructureSetSequence" not in qa


def test_plan_with_missing_structure_set(demo: DemoSet) -> None:
    every_uid = {uid for p in demo.patients for uid in p.files} | set(demo.hostile_uids.values())
    for patient in demo.patients:
        plan = read(demo, patient, patient.missing_structure_set_plan_uid)
        assert plan.RTPlanGeometry == "PATIENT"
        assert uids_of(plan.ReferencedStructureSetSequence) == [patient.missing_structure_set_uid]
        assert patient.missing_structure_set_uid not in every_uid


def test_registration(demo: DemoSet) -> None:
    for patient in demo.patients:
        reg = read(demo, patient, patient.registration_uid)
        assert reg.SOPClassUID == REG
        assert reg.FrameOfReferenceUID == patient.ct_for_uid
        items = {item.FrameOfReferenceUID: item for item in reg.RegistrationSequence}
        assert set(items) == {patient.ct_for_uid, patient.mr_for_uid}
        identity = items[patient.ct_for_uid].MatrixRegistrationSequence[0].MatrixSequence[0]
        matrix = [float(v) for v in identity.FrameOfReferenceTransformationMatrix]
        assert matrix == [float(i % 5 == 0) for i in range(16)]
        assert uids_of(items[patient.mr_for_uid].ReferencedImageSequence) == list(patient.mr_uids)


def test_segmentation(demo: DemoSet) -> None:
    for patient in demo.patients:
        seg = read(demo, patient, patient.seg_uid, pixels=True)
        assert seg.SOPClassUID == SEG
        assert seg.FrameOfReferenceUID == patient.ct_for_uid
        assert seg.SegmentationType == "BINARY" and len(seg.SegmentSequence) == 1
        sources = [
            uid
            for frame in seg.PerFrameFunctionalGroupsSequence
            for derivation in frame.DerivationImageSequence
            for uid in uids_of(derivation.SourceImageSequence)
        ]
        assert sources == list(patient.ct_uids)
        frames = int(seg.NumberOfFrames)
        assert frames == len(patient.ct_uids)
        packed = math.ceil(seg.Rows * seg.Columns * frames / 8)
        assert len(seg.PixelData) == packed + packed % 2
        assert any(seg.PixelData)


# ---------------------------------------------------------------------------
# Encodings
# ---------------------------------------------------------------------------


def test_encodings_are_what_they_claim(demo: DemoSet) -> None:
    for patient in demo.patients:
        for uid, encoding in patient.encodings.items():
            data = (demo.root / patient.files[uid]).read_bytes()
            if encoding == IMPLICIT_NO_PREAMBLE:
                assert data[128:132] != b"DICM"
                assert data[:2] == b"\x08\x00"  # group 0008 first: no file meta
                with pytest.raises(InvalidDicomError):
                    pydicom.dcmread(demo.root / patient.files[uid])
                ds = pydicom.dcmread(demo.root / patient.files[uid], force=True)
                assert ds.SOPInstanceUID == uid
                continue
            assert data[:128] == bytes(128) and data[128:132] == b"DICM"
            ds = pydicom.dcmread(demo.root / patient.files[uid], stop_before_pixels=True)
            assert ds.file_meta.TransferSyntaxUID == TRANSFER_SYNTAX[encoding]
            if encoding == BIG_ENDIAN:
                assert b"\x00\x28\x00\x10US\x00\x02" in data  # Rows, big endian
            if encoding == DEFLATED:
                offset = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
                inflated = zlib.decompress(data[offset:], -zlib.MAX_WBITS)
                assert uid.encode("ascii") in inflated


def test_first_patient_has_every_encoding(demo: DemoSet) -> None:
    first = demo.patients[0]
    assert set(first.encodings.values()) == {
        EXPLICIT_LE,
        IMPLICIT_NO_PREAMBLE,
        BIG_ENDIAN,
        DEFLATED,
    }
    assert first.encodings[first.plan_uid] == IMPLICIT_NO_PREAMBLE
    assert first.encodings[first.plan_structure_set_uid] == IMPLICIT_NO_PREAMBLE
    assert DEFLATED in {first.encodings[uid] for uid in first.structure_set_uids}
    for other in demo.patients[1:]:
        assert set(other.encodings.values()) == {EXPLICIT_LE}


# ---------------------------------------------------------------------------
# Hostile files
# ---------------------------------------------------------------------------


def hostile_path(demo: DemoSet, relative: str) -> bytes:
    return os.fsencode(demo.root) + b"/" + os.fsencode(relative)


def read_hostile(demo: DemoSet, relative: str, **kwargs: object) -> Dataset:
    with open(hostile_path(demo, relative), "rb") as handle:
        return pydicom.dcmread(handle, **kwargs)  # type: ignore[arg-type]


def by_outcome(demo: DemoSet, outcome: str) -> list[str]:
    return sorted(path for path, kind in demo.hostile.items() if kind == outcome)


def test_hostile_outcomes_are_known(demo: DemoSet) -> None:
    kinds = {kind.value for kind in RejectKind} | {"unsafe_uid", "non_utf8_name"}
    assert set(demo.hostile.values()) <= kinds
    for needed in ("not_dicom", "truncated", "dicomdir", "too_large", "too_deep", "unsafe_uid"):
        assert by_outcome(demo, needed), needed
    assert all(path.startswith("hostile/") for path in demo.hostile)


def test_not_dicom_files(demo: DemoSet) -> None:
    paths = by_outcome(demo, "not_dicom")
    assert {Path(p).name for p in paths} == {"empty.dcm", "notes.dcm", "random.dcm"}
    assert os.path.getsize(hostile_path(demo, "hostile/empty.dcm")) == 0
    for relative in paths:
        with pytest.raises(InvalidDicomError):
            read_hostile(demo, relative)


def test_truncated_files_are_prefixes_of_a_real_slice(demo: DemoSet) -> None:
    originals = [
        (demo.root / path).read_bytes() for p in demo.patients for path in p.files.values()
    ]
    paths = by_outcome(demo, "truncated")
    assert len(paths) == 2
    for relative in paths:
        data = (demo.root / relative).read_bytes()
        assert any(len(o) > len(data) and o.startswith(data) for o in originals)
    header = (demo.root / "hostile/truncated-header.dcm").read_bytes()
    assert b"\xe0\x7f\x10\x00" not in header  # cut before the pixel data


@pytest.mark.filterwarnings("ignore:.*VR UI:UserWarning")
def test_unsafe_uids(demo: DemoSet) -> None:
    paths = by_outcome(demo, "unsafe_uid")
    written = [demo.hostile_uids[p] for p in paths]
    for relative, uid in zip(paths, written, strict=True):
        ds = read_hostile(demo, relative, stop_before_pixels=True)
        assert str(ds.SOPInstanceUID) == uid
        assert not is_safe_uid(uid)
    assert "../../../etc/passwd" in written
    long = [uid for uid in written if len(uid) == 80]
    assert long and UID_PATTERN.match(long[0])
    assert any("/" in uid and ".." not in uid for uid in written)


def test_non_utf8_file_name_holds_a_valid_slice(demo: DemoSet) -> None:
    (relative,) = by_outcome(demo, "non_utf8_name")
    assert os.fsencode(relative) == b"hostile/caf\xe9.dcm"
    ds = read_hostile(demo, relative)
    assert is_safe_uid(str(ds.SOPInstanceUID))
    assert str(ds.SOPInstanceUID) == demo.hostile_uids[relative]
    assert ds.SeriesInstanceUID not in {p.ct_series_uid for p in demo.patients}
    assert len(ds.PixelData) == CT_ROWS * CT_ROWS * 2


def test_dicomdir(demo: DemoSet) -> None:
    (relative,) = by_outcome(demo, "dicomdir")
    ds = read_hostile(demo, relative)
    assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"
    assert len(ds.DirectoryRecordSequence) >= 1


def test_deflate_bomb(demo: DemoSet) -> None:
    (relative,) = by_outcome(demo, "too_large")
    data = (demo.root / relative).read_bytes()
    assert len(data) < 300_000
    meta = read_hostile(demo, relative, stop_before_pixels=True, specific_tags=[0x00020010])
    assert meta.file_meta.TransferSyntaxUID == TRANSFER_SYNTAX[DEFLATED]
    offset = 132 + 12 + int(meta.file_meta.FileMetaInformationGroupLength)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total, tail = 0, data[offset:]
    while tail and not inflater.eof:  # bounded chunks: never hold 200 MB
        total += len(inflater.decompress(tail, 1 << 22))
        tail = inflater.unconsumed_tail
    assert total >= 200_000_000


def test_deep_nesting_exhausts_pydicom(demo: DemoSet) -> None:
    (relative,) = by_outcome(demo, "too_deep")
    with pytest.raises(RecursionError):
        read_hostile(demo, relative)


def test_duplicates(demo: DemoSet) -> None:
    benign = demo.duplicates["benign identical copy"]
    conflict = demo.duplicates["conflicting copy"]
    assert Path(benign[0]).parent != Path(benign[1]).parent
    assert (demo.root / benign[0]).read_bytes() == (demo.root / benign[1]).read_bytes()
    original = pydicom.dcmread(demo.root / conflict[0], stop_before_pixels=True)
    copy = pydicom.dcmread(demo.root / conflict[1], stop_before_pixels=True)
    assert original.SOPInstanceUID == copy.SOPInstanceUID
    assert original.SeriesInstanceUID != copy.SeriesInstanceUID
    assert original.SeriesDescription != copy.SeriesDescription
    ct = {uid for p in demo.patients for uid in p.ct_uids}
    assert original.SOPInstanceUID in ct


# ---------------------------------------------------------------------------
# Determinism, options, benchmarks
# ---------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first = write_demo(tmp_path / "a", seed=7)
    second = write_demo(tmp_path / "b", seed=7)
    assert first.patients == second.patients
    files = all_files(first.root)
    assert files == all_files(second.root)
    for relative in files:
        a = hostile_path(first, relative)
        b = hostile_path(second, relative)
        with open(a, "rb") as fa, open(b, "rb") as fb:
            assert fa.read() == fb.read(), relative


def test_other_seed_or_shape_gives_other_uids(tmp_path: Path) -> None:
    a = write_demo(tmp_path / "a", seed=1, patients=1, hostile=False)
    b = write_demo(tmp_path / "b", seed=2, patients=1, hostile=False)
    c = write_demo(tmp_path / "c", seed=1, patients=1, hostile=False, ct_rows=32)
    assert not set(a.patients[0].files) & set(b.patients[0].files)
    assert not set(a.patients[0].files) & set(c.patients[0].files)


def test_more_patients_keep_the_first_ones(tmp_path: Path) -> None:
    one = write_demo(tmp_path / "one", patients=1, hostile=False)
    three = write_demo(tmp_path / "three", patients=3, hostile=False)
    assert three.patients[0] == one.patients[0]
    assert len({p.patient_id for p in three.patients}) == 3


@pytest.mark.parametrize(("ct_slices", "ct_rows"), [(1, 8), (2, 100), (3, 64)])
def test_odd_sizes_still_read_back(tmp_path: Path, ct_slices: int, ct_rows: int) -> None:
    demo = write_demo(tmp_path, patients=1, ct_slices=ct_slices, mr_slices=1, ct_rows=ct_rows)
    (patient,) = demo.patients
    for uid in patient.files:
        assert str(read(demo, patient, uid, pixels=True).SOPInstanceUID) == uid
    assert all_files(tmp_path) >= set(demo.hostile)


def test_without_hostile_files(tmp_path: Path) -> None:
    demo = write_demo(tmp_path, patients=1, ct_slices=3, mr_slices=1, hostile=False)
    assert demo.hostile == {} and demo.duplicates == {}
    assert not (tmp_path / "hostile").exists()
    (patient,) = demo.patients
    assert len(patient.ct_uids) == 3 and len(patient.mr_uids) == 1


def test_demo_data_command(tmp_path: Path) -> None:
    demo = demo_data_command(tmp_path, 1, 4)
    assert len(demo.patients) == 1 and len(demo.patients[0].ct_uids) == 4
    assert demo.hostile


def test_rejects_nonsense_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_demo(tmp_path, patients=0)
    with pytest.raises(ValueError):
        write_ct_series(tmp_path, 0)


def test_ct_series_for_benchmarks(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path, 3)
    pixel_bytes = 512 * 512 * 2
    series = set()
    sops = set()
    for path in paths:
        assert pixel_bytes < path.stat().st_size < pixel_bytes + 4096
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert (ds.Rows, ds.Columns) == (512, 512)
        series.add(ds.SeriesInstanceUID)
        sops.add(ds.SOPInstanceUID)
    assert len(series) == 1 and len(sops) == 3
    again = [p.read_bytes() for p in write_ct_series(tmp_path / "again", 3)]
    assert again == [p.read_bytes() for p in paths]
