"""Plan packages, reverse references and missing lists on indexed real and synthetic data.

Expectations come from the generator's description of what it wrote and
from reading the real files with pydicom here, never from the code under test.
Every test runs on an SQLite index and on a PostgreSQL one (``backend``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from conftest import indexed, new_index

from dicomfs.dicom.records import Level
from dicomfs.errors import UnknownUidError
from dicomfs.index import IndexReader, graph


@pytest.fixture
def demo_reader(
    request: pytest.FixtureRequest, backend: str, open_reader: Callable[[Path | str], IndexReader]
) -> IndexReader:
    return open_reader(indexed(request, backend, "demo_index"))


@pytest.fixture
def real_reader(
    request: pytest.FixtureRequest, backend: str, open_reader: Callable[[Path | str], IndexReader]
) -> IndexReader:
    return open_reader(indexed(request, backend, "real_index"))


def uids(members: list[graph.Member]) -> set[str]:
    return {m.sop_uid for m in members}


def test_demo_plan_package_is_exactly_what_the_plan_needs(demo_set, demo_reader) -> None:  # type: ignore[no-untyped-def]
    for patient in demo_set.patients:
        pkg = graph.package(demo_reader, patient.plan_uid)
        expected = {
            patient.plan_uid,
            patient.plan_structure_set_uid,
            *patient.ct_uids,
            patient.plan_dose_uid,
            *patient.beam_dose_uids,
            patient.rt_image_uid,
            patient.record_uid,
            patient.verification_image_uid,
            patient.verification_plan_uid,
        }
        assert uids(pkg.references) == expected
        # Other structure sets on the same CT series are not the plan's.
        assert not set(patient.structure_set_uids[1:]) & uids(pkg.references)
        assert uids(pkg.referenced_by) == {
            patient.plan_dose_uid,
            *patient.beam_dose_uids,
            patient.rt_image_uid,
            patient.record_uid,
            patient.verification_plan_uid,
        }
        assert {patient.registration_uid, *patient.mr_uids} <= uids(pkg.registrations)
        assert pkg.missing == []
        assert not pkg.truncated


def test_demo_plan_with_absent_structure_set_reports_it_missing(demo_set, demo_reader) -> None:  # type: ignore[no-untyped-def]
    patient = demo_set.patients[0]
    pkg = graph.package(demo_reader, patient.missing_structure_set_plan_uid)
    with_rs = graph.package(demo_reader, patient.plan_uid)
    [missing] = [m for m in pkg.missing if m.expected == "structure_set"]
    assert missing.level is Level.INSTANCE
    assert missing.referenced_by == patient.missing_structure_set_plan_uid
    assert "ReferencedStructureSetSequence" in missing.attribute
    assert demo_reader.instance(missing.uid) is None
    assert with_rs.missing == []


def test_forward_and_reverse_are_symmetric(demo_set, demo_reader) -> None:  # type: ignore[no-untyped-def]
    patient = demo_set.patients[0]
    for edge in graph.forward(demo_reader, patient.plan_uid):
        if edge.level is Level.INSTANCE:
            sources = [src for src, _ in graph.reverse(demo_reader, edge.target_uid)]
            assert patient.plan_uid in sources


def test_unknown_uid_is_a_clear_error(demo_reader: IndexReader) -> None:
    with pytest.raises(UnknownUidError):
        graph.package(demo_reader, "1.2.3.4.5.6.7.8.9")


def test_reindexing_from_scratch_gives_the_same_answers(  # type: ignore[no-untyped-def]
    demo_set, demo_reader: IndexReader, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from dicomfs.index import IndexWriter
    from dicomfs.live.scan import reconcile
    from dicomfs.view.report import manifest

    again = new_index(backend, tmp_path, request)
    writer = IndexWriter(again)
    reconcile(writer, [demo_set.root], workers=1)
    writer.close()
    first, second = demo_reader, IndexReader(again)
    for patient in demo_set.patients:
        assert manifest(graph.package(first, patient.plan_uid)) == manifest(
            graph.package(second, patient.plan_uid)
        )
    assert [r.path for r in first.rejected()] == [r.path for r in second.rejected()]
    assert first.conflicts() == second.conflicts()


# -- real exports (../shared/testdata/real, README there) ----------------------


def read(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path, force=True, stop_before_pixels=True)


def test_monaco_plan_resolves_structure_set_and_all_ct(real_copy: Path, real_reader) -> None:  # type: ignore[no-untyped-def]
    folder = real_copy / "monaco-tinyvmat"
    plan = read(folder / "TinyFS_TinyVMAT.dcm")
    rs = read(folder / "TinyFS_StrctrSets.dcm")
    cts = {read(p).SOPInstanceUID for p in folder.glob("TinyFS_CT1_*.DCM")}
    assert len(cts) == 5
    pkg = graph.package(real_reader, plan.SOPInstanceUID)
    assert {rs.SOPInstanceUID, *cts} <= uids(pkg.references)
    assert not [m for m in pkg.missing if m.expected in ("structure_set", "image")]


def test_mim_structure_set_resolves_all_ct_and_its_study_is_no_missing_instance(
    real_copy: Path, real_reader: IndexReader
) -> None:
    folder = real_copy / "mim-struct-ct"
    rs = read(folder / "rt.dcm")
    cts = {read(p).SOPInstanceUID for p in folder.glob("2.16.*.dcm")}
    pkg = graph.package(real_reader, rs.SOPInstanceUID)
    assert cts <= uids(pkg.references)
    assert pkg.missing == []
    study_uid = rs.StudyInstanceUID
    study_edges = [
        e for e in graph.forward(real_reader, rs.SOPInstanceUID) if e.target_uid == study_uid
    ]
    assert study_edges and all(e.level is Level.STUDY for e in study_edges)


@pytest.mark.parametrize(
    ("folder", "seg_name", "ct_glob"),
    [
        ("dcmqi-seg-ct", "liver.dcm", "0*.dcm"),
        ("highdicom-seg-ct", "seg_image_ct_binary_single_frame.dcm", "ct_image.dcm"),
    ],
)
def test_segmentation_resolves_its_source_images(
    real_copy: Path, real_reader: IndexReader, folder: str, seg_name: str, ct_glob: str
) -> None:
    seg = read(real_copy / folder / seg_name)
    cts = {read(p).SOPInstanceUID for p in (real_copy / folder).glob(ct_glob)}
    assert cts
    pkg = graph.package(real_reader, seg.SOPInstanceUID)
    assert cts <= uids(pkg.references)
    assert pkg.missing == []


def test_pinnacle_dose_is_found_in_reverse_and_structure_set_is_missing(
    real_copy: Path, real_reader: IndexReader
) -> None:
    files = [read(p) for p in (real_copy / "pinnacle-plan-dose").glob("*.dcm")]
    [plan] = [d for d in files if d.Modality == "RTPLAN"]
    [dose] = [d for d in files if d.Modality == "RTDOSE"]
    pkg = graph.package(real_reader, plan.SOPInstanceUID)
    assert dose.SOPInstanceUID in uids(pkg.referenced_by)
    assert dose.SOPInstanceUID in uids(pkg.references)
    # The plan names no structure set at all: the package says one is missing
    # and where to look (the plan's study).
    assert "ReferencedStructureSetSequence" not in plan
    missing = {(m.level, m.uid, m.expected) for m in pkg.missing}
    assert missing == {(Level.STUDY, plan.StudyInstanceUID, "structure_set")}


def test_verification_plan_lists_the_plan_it_verifies_without_expanding_it(  # type: ignore[no-untyped-def]
    demo_set, demo_reader
) -> None:
    patient = demo_set.patients[0]
    pkg = graph.package(demo_reader, patient.verification_plan_uid)
    [related] = [m for m in pkg.references if m.sop_uid == patient.plan_uid]
    assert related.role == "related_plan"
    # Not expanded: the treated plan's anatomy and registrations are not the QA plan's.
    assert not set(patient.ct_uids) & uids(pkg.references)
    assert pkg.registrations == []
