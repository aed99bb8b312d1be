"""``dicomfs fetch`` against real PACS on loopback (Orthanc, dcmqrscp), started by the tests.

The forward tests (``--forward-only``, today's behaviour) index a folder
holding only a plan and its doses (what a TPS export often is), so the
package misses its structure set, the DRR and, once the structure set
arrives, the CT slices. The reverse tests index the plan alone: after one
fetch the package must equal the package of the same patient indexed
locally, doses, records and all. The PACS hold both demo patients and a
second study of the first one with a dose naming its plan (out of bounds
by design: only the studies the package lives in are searched), so there
is always something unrelated that must not be retrieved. Configurations:

- Orthanc as shipped: answers IMAGE-level C-FIND, C-GET and C-MOVE;
- Orthanc restricted to STUDY/SERIES level (a Lua filter refuses IMAGE-level
  C-FIND, as series-only PACS do): the series-level fallback must fetch the
  series holding the missing objects and nothing else;
- dcmqrscp, an IMAGE-level archive that logs every retrieve request.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from net_helpers import (
    OUR_AE,
    PACS_AE,
    Dcmqrscp,
    Orthanc,
    free_port,
    running_dcmqrscp,
    running_orthanc,
    series_in_store,
)
from pydicom import dcmread
from pydicom.uid import generate_uid

from dicomfs.commands.net import register
from dicomfs.demo.patients import DemoPatient, DemoSet
from dicomfs.errors import ConfigError
from dicomfs.index import IndexReader, IndexWriter, graph
from dicomfs.live.scan import reconcile
from dicomfs.net.fetch import FetchOptions, fetch
from dicomfs.net.fetch_reverse import REVERSE_MODALITIES
from dicomfs.net.pacs import (
    PacsAddress,
    PacsError,
    load_pacs_table,
    parse_address,
    resolve_pacs,
)

# -- fixtures and helpers ----------------------------------------------------------


def _all_files(demo: DemoSet) -> list[Path]:
    return [demo.root / rel for p in demo.patients for rel in p.files.values()]


def _series_of(demo: DemoSet, patient: DemoPatient, uid: str) -> str:
    return str(
        dcmread(
            demo.root / patient.files[uid], stop_before_pixels=True, force=True
        ).SeriesInstanceUID
    )


@pytest.fixture(scope="module")
def other_study(demo_set: DemoSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second study of patient 1 holding a dose that names its plan.

    Out of bounds by design: the reverse search looks only in the studies
    the package lives in, so no fetch may retrieve it.
    """
    patient = demo_set.patients[0]
    ds = dcmread(demo_set.root / patient.files[patient.beam_dose_uids[0]])
    seed = [patient.study_uid, "another study of the patient"]
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[*seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[*seed, "series"])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[*seed, "dose"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path_factory.mktemp("other-study") / "dose.dcm"
    ds.save_as(path)
    return path


@pytest.fixture(scope="module")
def move_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def full_pacs(
    demo_set: DemoSet, tmp_path_factory: pytest.TempPathFactory, move_port: int, other_study: Path
) -> Iterator[Orthanc]:
    """Orthanc answering every level, holding every object of both demo patients."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc-full"), move_port=move_port) as server:
        server.upload([*_all_files(demo_set), other_study])
        yield server


@pytest.fixture(scope="module")
def series_only_pacs(
    demo_set: DemoSet, tmp_path_factory: pytest.TempPathFactory, other_study: Path
) -> Iterator[Orthanc]:
    """Series-level only, holding everything: the other structure sets and the portal
    image of patient 1 are decoys of the same study, modality and size."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc-series"), series_only=True) as server:
        server.upload([*_all_files(demo_set), other_study])
        yield server


@pytest.fixture(scope="module")
def archive(
    demo_set: DemoSet, tmp_path_factory: pytest.TempPathFactory, other_study: Path
) -> Iterator[Dcmqrscp]:
    """dcmqrscp (IMAGE level, C-GET) holding everything the Orthanc instances hold."""
    with running_dcmqrscp(tmp_path_factory.mktemp("dcmqrscp")) as server:
        server.upload([*_all_files(demo_set), other_study])
        yield server


@pytest.fixture(scope="module")
def local_index(
    demo_set: DemoSet, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[DemoPatient], Path]:
    """Every object of a patient indexed locally: the package a fetch must end up with."""
    built: dict[str, Path] = {}

    def index_of(patient: DemoPatient) -> Path:
        if patient.patient_id not in built:
            folder = tmp_path_factory.mktemp("patient")
            for rel in patient.files.values():
                target = folder / "files" / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(demo_set.root / rel, target)
            built[patient.patient_id] = folder / "index.sqlite"
            writer = IndexWriter(built[patient.patient_id])
            reconcile(writer, [folder / "files"], workers=1)
            writer.close()
        return built[patient.patient_id]

    return index_of


def _plan_index(
    tmp_path: Path, demo: DemoSet, patient: DemoPatient, *plans: Path, doses: bool = True
) -> Path:
    """An index of a folder holding only the plan and its doses (plus any extra plan files)."""
    folder = tmp_path / "tps-export"
    folder.mkdir()
    uids = [patient.plan_uid]
    if doses:
        uids += [patient.plan_dose_uid, *patient.beam_dose_uids]
    for uid in uids:
        source = demo.root / patient.files[uid]
        shutil.copy(source, folder / source.name)
    for extra in plans:
        shutil.copy(extra, folder / extra.name)
    index = tmp_path / "index.sqlite"
    writer = IndexWriter(index)
    reconcile(writer, [folder], workers=1)
    writer.close()
    return index


def _missing(index: Path, plan_uid: str) -> list[graph.MissingRef]:
    reader = IndexReader(index)
    try:
        return graph.package(reader, plan_uid).missing
    finally:
        reader.close()


def _run_fetch(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`dicomfs fetch ...` as the lead wires it: register() into a parser, run its handler."""
    parser = argparse.ArgumentParser(prog="dicomfs")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fetch", *argv])
    code = int(args.func(args))
    return code, capsys.readouterr().out


def _needed(demo: DemoSet, patient: DemoPatient) -> set[str]:
    """What the plan-only index misses, transitively: its structure set, the DRR, the CT."""
    return {patient.plan_structure_set_uid, patient.rt_image_uid, *patient.ct_uids}


def _stored_uids(store: Path) -> set[str]:
    return {uid for uids in series_in_store(store).values() for uid in uids}


def _stored_studies(store: Path) -> set[str]:
    return {
        str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)
        for path in store.rglob("*")
        if path.is_file() and not path.name.startswith(".")
    }


def _package_view(index: Path, plan_uid: str) -> dict[str, list[tuple[str, ...]]]:
    """What a package is made of: its members (UID, role, via) and what it misses."""
    reader = IndexReader(index)
    try:
        pkg = graph.package(reader, plan_uid)
    finally:
        reader.close()

    def members(items: list[graph.Member]) -> list[tuple[str, ...]]:
        return sorted((m.sop_uid, m.role, m.via) for m in items)

    return {
        "references": members(pkg.references),
        "referenced_by": members(pkg.referenced_by),
        "registrations": members(pkg.registrations),
        "missing": sorted((m.level.value, m.uid, m.expected) for m in pkg.missing),
    }


def _looked_at_expected(local: Path, patient: DemoPatient) -> set[str]:
    """Objects of the searched kinds in the plan's study that its package does not hold."""
    reader = IndexReader(local)
    try:
        pkg = graph.package(reader, patient.plan_uid)
        held = {m.sop_uid for m in [*pkg.references, *pkg.referenced_by, *pkg.registrations]}
        return {
            i.sop_uid
            for i in reader.study_instances(patient.study_uid)
            if i.modality in REVERSE_MODALITIES and i.sop_uid not in held
        }
    finally:
        reader.close()


def _closed_pacs() -> PacsAddress:
    """An address nobody answers at: fetch must fail clearly, or not call at all."""
    return PacsAddress("NOBODY", "127.0.0.1", free_port())


@dataclass
class FetchBench:
    """One test's index and store folder, and ``dicomfs fetch`` run against them.

    Every fetch test needs the same three things: an index (usually of a
    plan-only export), a store under the test's own folder, and a run of
    the command naming both; this keeps each test down to what it checks.
    """

    demo: DemoSet
    root: Path
    capsys: pytest.CaptureFixture[str]
    index: Path | None = None

    @property
    def store(self) -> Path:
        return self.root / "store"

    def index_plan(self, patient: DemoPatient, *plans: Path, doses: bool = True) -> Path:
        """Index the plan-only export of ``patient`` (see ``_plan_index``) and use it."""
        self.index = _plan_index(self.root, self.demo, patient, *plans, doses=doses)
        return self.index

    def options(self, **changes: Any) -> FetchOptions:
        """FetchOptions for this store and index, with ``changes`` to the defaults."""
        assert self.index is not None, "index a plan (or set .index) first"
        return replace(FetchOptions(store=self.store, index=self.index), **changes)

    def cli(self, target: str, pacs: str, *extra: str) -> tuple[int, str]:
        """`dicomfs fetch TARGET --from PACS --store STORE --index INDEX EXTRA...`."""
        assert self.index is not None, "index a plan (or set .index) first"
        argv = [target, "--from", pacs, "--store", str(self.store), "--index", str(self.index)]
        return _run_fetch([*argv, *extra], self.capsys)


@pytest.fixture
def bench(demo_set: DemoSet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> FetchBench:
    return FetchBench(demo_set, tmp_path, capsys)


@pytest.fixture
def demo_bench(bench: FetchBench, demo_index: Path) -> FetchBench:
    """A bench on the session's demo index, built from every demo file."""
    bench.index = demo_index
    return bench


# -- IMAGE level: exactly the missing objects ------------------------------------


@pytest.mark.slow
def test_fetch_retrieves_exactly_what_the_plan_misses(
    demo_set: DemoSet, full_pacs: Orthanc, bench: FetchBench
) -> None:
    patient = demo_set.patients[0]
    index = bench.index_plan(patient)
    before = {m.uid for m in _missing(index, patient.plan_uid)}
    assert before == {patient.plan_structure_set_uid, patient.rt_image_uid}

    config = bench.root / "dicomfs.toml"
    config.write_text(
        f'[pacs.archive]\nae_title = "{PACS_AE}"\nhost = "127.0.0.1"\n'
        f"port = {full_pacs.dicom_port}\n"
    )
    code, out = bench.cli(
        patient.plan_uid, "archive", "--config", str(config), "--our-ae", OUR_AE, "--forward-only"
    )
    assert code == 0, out
    assert _missing(index, patient.plan_uid) == []
    assert _stored_uids(bench.store) == _needed(demo_set, patient)  # nothing unrelated
    assert f"complete: plan {patient.plan_uid}" in out
    assert "IMAGE level" in out and "C-GET" in out
    assert not list(bench.store.rglob(".incoming-*"))


@pytest.mark.slow
def test_fetch_over_c_move_to_our_own_receiver(
    demo_set: DemoSet,
    full_pacs: Orthanc,
    move_port: int,
    bench: FetchBench,
    local_index: Callable[[DemoPatient], Path],
) -> None:
    """Both halves over C-MOVE: the plan alone locally, the whole package after one fetch."""
    patient = demo_set.patients[1]
    index = bench.index_plan(patient, doses=False)
    code, out = bench.cli(
        patient.plan_uid,
        full_pacs.address,
        "--method",
        "move",
        "--move-port",
        str(move_port),
        "--move-bind",
        "127.0.0.1",
    )
    assert code == 0, out
    assert "C-MOVE" in out and "C-GET" not in out
    assert _package_view(index, patient.plan_uid) == _package_view(
        local_index(patient), patient.plan_uid
    )
    assert _stored_studies(bench.store) == {patient.study_uid}


@pytest.mark.slow
def test_all_missing_fetches_for_every_plan(
    demo_set: DemoSet, full_pacs: Orthanc, bench: FetchBench
) -> None:
    first, second = demo_set.patients
    extra = [demo_set.root / second.files[u] for u in (second.plan_uid, second.plan_dose_uid)]
    index = bench.index_plan(first, *extra)
    code, out = bench.cli("--all-missing", full_pacs.address, "--forward-only")
    assert code == 0, out
    assert _missing(index, first.plan_uid) == [] and _missing(index, second.plan_uid) == []
    assert _stored_uids(bench.store) == _needed(demo_set, first) | _needed(demo_set, second)


@pytest.mark.slow
def test_object_the_pacs_does_not_have_is_reported_still_missing(
    demo_set: DemoSet, full_pacs: Orthanc, bench: FetchBench
) -> None:
    patient = demo_set.patients[0]
    orphan = demo_set.root / patient.files[patient.missing_structure_set_plan_uid]
    bench.index_plan(patient, orphan)
    code, out = bench.cli(
        patient.missing_structure_set_plan_uid, full_pacs.address, "--forward-only"
    )
    assert code == 1
    assert f"not found  structure_set   {patient.missing_structure_set_uid}" in out
    assert f"still missing for plan {patient.missing_structure_set_plan_uid}: 1" in out
    assert _stored_uids(bench.store) == set()


@pytest.mark.slow
def test_plan_naming_no_structure_set_gets_candidates_listed_not_retrieved(
    demo_set: DemoSet, full_pacs: Orthanc, bench: FetchBench
) -> None:
    patient = demo_set.patients[1]
    ds = dcmread(demo_set.root / patient.files[patient.plan_uid])
    del ds.ReferencedStructureSetSequence
    ds.SOPInstanceUID = patient.plan_uid + ".1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    bare = bench.root / "bare-plan.dcm"
    ds.save_as(bare)
    bench.index_plan(patient, bare)
    rs_series = {_series_of(demo_set, patient, uid) for uid in patient.structure_set_uids}

    code, out = bench.cli(str(ds.SOPInstanceUID), full_pacs.address)
    assert code == 1  # a plan naming no structure set stays incomplete: nothing names one
    for series in rs_series:
        assert series in out
    assert "names no structure set" in out
    assert not (series_in_store(bench.store).keys() & rs_series)

    code, out = bench.cli(str(ds.SOPInstanceUID), full_pacs.address, "--candidates")
    assert code == 1
    assert series_in_store(bench.store).keys() >= rs_series


# -- SERIES level only: the fallback ------------------------------------------------


@pytest.mark.slow
def test_series_only_pacs_gets_only_the_series_holding_the_missing_objects(
    demo_set: DemoSet, tmp_path_factory: pytest.TempPathFactory, bench: FetchBench
) -> None:
    patient, other = demo_set.patients
    decoys = {*patient.structure_set_uids[1:], patient.verification_image_uid}
    held = [
        demo_set.root / rel
        for p in demo_set.patients
        for uid, rel in p.files.items()
        if uid not in decoys
    ]
    needed_series = {
        _series_of(demo_set, patient, patient.plan_structure_set_uid),
        _series_of(demo_set, patient, patient.rt_image_uid),
        patient.ct_series_uid,
    }
    unrelated = {patient.mr_series_uid, other.ct_series_uid, other.mr_series_uid}
    with running_orthanc(tmp_path_factory.mktemp("orthanc-strict"), series_only=True) as server:
        server.upload(held)
        index = bench.index_plan(patient)
        code, out = bench.cli(patient.plan_uid, server.address, "--forward-only")
    assert code == 0, out
    assert _missing(index, patient.plan_uid) == []
    stored = series_in_store(bench.store)
    assert set(stored) == needed_series  # no unrelated series at all
    assert not stored.keys() & unrelated
    assert stored[patient.ct_series_uid] == set(patient.ct_uids)  # a series comes whole
    assert "IMAGE level" not in out and "SERIES level" in out


@pytest.mark.slow
def test_series_only_pacs_tries_candidates_one_at_a_time_and_stops_on_arrival(
    demo_set: DemoSet, series_only_pacs: Orthanc, bench: FetchBench
) -> None:
    patient, other = demo_set.patients
    bench.index_plan(patient)
    progress: list[str] = []
    report = fetch(
        parse_address(series_only_pacs.address),
        [patient.plan_uid],
        bench.options(forward_only=True),
        progress=progress.append,
    )
    assert report.complete, progress
    assert report.image_level is False

    order = [s.series_uid for s in report.series_retrieved]
    assert len(order) == len(set(order))  # no series retrieved twice
    rs_series = [s.series_uid for s in report.series_retrieved if s.modality == "RTSTRUCT"]
    rs_of_patient = {_series_of(demo_set, patient, u) for u in patient.structure_set_uids}
    assert set(rs_series) <= rs_of_patient
    assert rs_series[-1] == _series_of(demo_set, patient, patient.plan_structure_set_uid)
    rt_images = [s.series_uid for s in report.series_retrieved if s.modality == "RTIMAGE"]
    assert rt_images[-1] == _series_of(demo_set, patient, patient.rt_image_uid)
    assert order.count(patient.ct_series_uid) == 1
    untouched = {patient.mr_series_uid, other.ct_series_uid, other.mr_series_uid}
    assert not set(order) & untouched
    assert not {s.study_uid for s in report.series_retrieved} - {patient.study_uid}


# -- the reverse half: what names the plan --------------------------------------------


@pytest.mark.slow
def test_one_fetch_from_an_image_level_archive_completes_both_halves(
    demo_set: DemoSet,
    archive: Dcmqrscp,
    bench: FetchBench,
    local_index: Callable[[DemoPatient], Path],
) -> None:
    patient = demo_set.patients[0]
    local = local_index(patient)
    index = bench.index_plan(patient, doses=False)
    log_mark = archive.log_size()
    code, out = bench.cli(patient.plan_uid, archive.address, "--json")
    summary = json.loads(out)
    assert code == 0 and summary["complete"], out

    assert _package_view(index, patient.plan_uid) == _package_view(local, patient.plan_uid)
    reverse = {item["sop_instance_uid"] for item in summary["reverse_found"]}
    assert set(patient.beam_dose_uids) | {patient.record_uid} <= reverse
    # Retrieved only to be looked at: the patient's other plans, doses, images
    # and records of the study, every one of them indexed all the same.
    looked_at = {item["sop_instance_uid"] for item in summary["looked_at"]}
    assert looked_at == _looked_at_expected(local, patient)
    reader = IndexReader(index)
    try:
        assert looked_at <= set(reader.instances(looked_at))
    finally:
        reader.close()
    # Within bounds: the plan's study only (not the other study of the same
    # patient, whose dose names the plan too), and nothing indexed retrieved again.
    assert _stored_studies(bench.store) == {patient.study_uid}
    assert set(archive.retrieved_studies(since=log_mark)) == {patient.study_uid}
    assert patient.plan_uid not in _stored_uids(bench.store)
    assert summary["methods"] == ["get"]


@pytest.mark.slow
def test_one_fetch_from_a_series_only_pacs_completes_both_halves(
    demo_set: DemoSet,
    series_only_pacs: Orthanc,
    bench: FetchBench,
    local_index: Callable[[DemoPatient], Path],
) -> None:
    patient, other = demo_set.patients
    local = local_index(patient)
    index = bench.index_plan(patient, doses=False)
    code, out = bench.cli(patient.plan_uid, series_only_pacs.address)
    assert code == 0, out

    assert _package_view(index, patient.plan_uid) == _package_view(local, patient.plan_uid)
    assert "IMAGE level" not in out and "SERIES level" in out
    assert "(reverse search: in the package now)" in out
    # What is not in the package: the other plans of the study, and the
    # structure sets the series-level search for the plan's had to open.
    stored = series_in_store(bench.store)
    view = _package_view(index, patient.plan_uid)
    parts = ("references", "referenced_by", "registrations")
    members = {uid for part in parts for uid, *_ in view[part]}
    looked_at = {s: uids - members for s, uids in stored.items() if uids - members}
    assert _looked_at_expected(local, patient) <= {u for uids in looked_at.values() for u in uids}
    count = sum(len(uids) for uids in looked_at.values())
    assert f"retrieved to be looked at: {count} object(s) in {len(looked_at)} series" in out
    assert _stored_studies(bench.store) == {patient.study_uid}
    assert not stored.keys() & {other.ct_series_uid, other.mr_series_uid}
    # Series complete in the index are not retrieved again: the plan's own.
    assert _series_of(demo_set, patient, patient.plan_uid) not in stored


@pytest.mark.slow
def test_forward_only_retrieves_no_dose_the_plan_does_not_name(
    demo_set: DemoSet, archive: Dcmqrscp, bench: FetchBench
) -> None:
    patient = demo_set.patients[0]
    index = bench.index_plan(patient, doses=False)
    code, out = bench.cli(patient.plan_uid, archive.address, "--forward-only")
    assert code == 0, out
    stored = _stored_uids(bench.store)
    assert stored == _needed(demo_set, patient) | {patient.plan_dose_uid}
    assert not stored & {*patient.beam_dose_uids, patient.record_uid}
    reverse_hits = _package_view(index, patient.plan_uid)["referenced_by"]
    assert {uid for uid, _role, _via in reverse_hits} == {
        patient.plan_dose_uid,
        patient.rt_image_uid,
    }
    assert "looked at" not in out and "reverse search" not in out


# -- addresses and config ------------------------------------------------------------


def test_pacs_addresses_parse_and_bad_ones_say_why(tmp_path: Path) -> None:
    assert parse_address("ORTHANC@pacs.example:4242") == PacsAddress(
        "ORTHANC", "pacs.example", 4242
    )
    assert parse_address("A B@[::1]:104") == PacsAddress("A B", "::1", 104)
    for bad in ("ORTHANC@host", "@host:1", "X@host:0", "X@host:70000", "WAY_TOO_LONG_AE_TITLE@h:1"):
        with pytest.raises(ConfigError):
            parse_address(bad)
    config = tmp_path / "dicomfs.toml"
    config.write_text('[pacs.main]\nae_title = "MAIN"\nhost = "10.0.0.5"\nport = 104\n')
    assert resolve_pacs("main", config) == PacsAddress("MAIN", "10.0.0.5", 104, "main")
    with pytest.raises(ConfigError, match=r"no \[pacs.other\] entry"):
        resolve_pacs("other", config)
    config.write_text('[pacs.main]\nae_title = "MAIN"\nhost = "h"\n')
    with pytest.raises(ConfigError, match="missing port"):
        load_pacs_table(config)


def test_unreachable_pacs_is_a_clear_error(demo_set: DemoSet, demo_bench: FetchBench) -> None:
    patient = demo_set.patients[0]
    options = demo_bench.options(timeout=10)
    with pytest.raises(PacsError, match=r"cannot associate .* no answer"):
        fetch(_closed_pacs(), [patient.missing_structure_set_plan_uid], options, progress=print)


def test_complete_plan_asks_the_pacs_only_for_what_names_it(
    demo_set: DemoSet,
    demo_index: Path,
    demo_bench: FetchBench,
    capsys: pytest.CaptureFixture[str],
) -> None:
    patient = demo_set.patients[0]
    assert _missing(demo_index, patient.plan_uid) == []
    closed = _closed_pacs()
    options = demo_bench.options(timeout=10, forward_only=True)
    report = fetch(closed, [patient.plan_uid], options, progress=print)
    assert report.complete and not report.outcomes
    capsys.readouterr()
    code, out = demo_bench.cli(patient.plan_uid, str(closed), "--json", "--forward-only")
    assert code == 0
    assert json.loads(out)["complete"] is True
    # Without --forward-only a complete plan is still searched for what names it.
    with pytest.raises(PacsError, match="no answer"):
        fetch(closed, [patient.plan_uid], demo_bench.options(timeout=10), progress=print)


@pytest.mark.slow
def test_pacs_refusing_our_call_is_a_clear_error(
    demo_set: DemoSet, full_pacs: Orthanc, demo_bench: FetchBench
) -> None:
    patient = demo_set.patients[0]
    wrong_title = PacsAddress("NOT_ORTHANC", "127.0.0.1", full_pacs.dicom_port)
    options = demo_bench.options(timeout=10)
    with pytest.raises(PacsError, match=r"rejected the association|without accepting it"):
        fetch(wrong_title, [patient.missing_structure_set_plan_uid], options, progress=print)


def test_fetch_needs_a_plan_or_all_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match="PLAN_UID or --all-missing"):
        _run_fetch(["--from", "A@h:1", "--store", str(tmp_path)], capsys)
