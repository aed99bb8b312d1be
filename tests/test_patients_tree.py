"""The ``patients/`` tree (issue 10): real files written with pydicom, indexed by the scanner.

Four layers, each on real components: the view with plain calls (names
``uid``, ``id`` and ``name``; hostile values; the plan folders against
``plans/<uid>/``; ``.dicomfs/plans.tsv``), a re-export that renames a plan,
the upgrade of a schema-2 index, and a real FUSE mount driven by ``ls``,
``cp``, ``find``, ``dcmdump`` and ``cat``. Expectations come from what the
test wrote (``Written``) or from the naming rules (``test_human_names``),
never from the code under test.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import BACKENDS, new_index
from fuse_helpers import mounted, require_fuse
from pydicom import config
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian
from schema_helpers import downgrade_to_schema_6
from test_human_names import violations

from dicomfs.demo.patients import DemoSet, write_demo
from dicomfs.errors import IndexCorruptError
from dicomfs.index import SCHEMA_VERSION, IndexReader, IndexWriter
from dicomfs.live.scan import ScanReport, reconcile
from dicomfs.view.listing import cat_bytes
from dicomfs.view.nodes import DirNode, FileNode, Node, NotFound, Rebuilding
from dicomfs.view.plan_table import COLUMNS
from dicomfs.view.tree import View

BuildIndex = Callable[[Path, Sequence[Path], int], ScanReport]

CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
RS_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
PLAN_CLASS = "1.2.840.10008.5.1.4.1.1.481.5"
STUDY_CLASS = "1.2.840.10008.3.1.2.3.1"
ROOT = "1.2.826.0.1.3680043.10.543.77."
PLAN_ENTRIES = [
    "manifest.json",
    "missing.txt",
    "plan.dcm",
    "referenced-by",
    "references",
    "registrations",
]
MULLER = "Müller^Jürgen"
# Fragments of every PatientName written here: none may appear in a path with names = "id".
NAME_FRAGMENTS = ("Müller", "Muller", "Jürgen", "Jurgen", "Nobody", "Dots", "Slash", "Zeile")


# -- writing files -------------------------------------------------------------------------


@dataclass
class Study:
    """One patient's study as written: its values, and every file by SOP Instance UID."""

    root: Path
    key: str  # UID part and folder of this study's files
    patient_id: str | None
    patient_name: str
    charset: str = "ISO_IR 192"
    date: str = "20240305"
    description: str = "Thorax"
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def study_uid(self) -> str:
        return f"{ROOT}{self.key}"

    def uid(self, *parts: int) -> str:
        return ".".join([self.study_uid, *map(str, parts)])


@contextlib.contextmanager
def lenient() -> Iterator[None]:
    """Hostile values reach the file as they are, without pydicom's checks or warnings."""
    with config.disable_value_validation(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def _common(
    s: Study, sop_class: str, sop_uid: str, modality: str, series: int, description: str
) -> Dataset:
    ds = Dataset()
    with lenient():
        ds.SpecificCharacterSet = s.charset
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.Modality = modality
        if s.patient_id is not None:
            ds.PatientID = s.patient_id
        ds.PatientName = s.patient_name
        ds.StudyInstanceUID = s.study_uid
        ds.SeriesInstanceUID = s.uid(series)
        ds.SeriesNumber = series
        ds.SeriesDescription = description
        ds.StudyDate = s.date
        ds.StudyDescription = s.description
        ds.FrameOfReferenceUID = s.uid(99)
    return ds


def _save(s: Study, ds: Dataset, name: str) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path = s.root / s.key / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with lenient():
        ds.save_as(path, enforce_file_format=True)
    s.files[str(ds.SOPInstanceUID)] = path
    return path


def write_ct(s: Study, numbers: Sequence[int | None], series: int = 2) -> list[str]:
    """CT slices, one per instance number, in the order given (UIDs in that order too)."""
    uids = []
    for i, number in enumerate(numbers, start=1):
        uid = s.uid(series, i)
        ds = _common(s, CT_CLASS, uid, "CT", series, "CT planning")
        if number is not None:
            ds.InstanceNumber = number
        _save(s, ds, f"ct{i}.dcm")
        uids.append(uid)
    return uids


def _ref(sop_class: str, sop_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_uid
    return item


def write_rs(s: Study, ct_uids: Sequence[str], label: str = "Clinical") -> str:
    uid = s.uid(10, 1)
    ds = _common(s, RS_CLASS, uid, "RTSTRUCT", 10, label)
    ds.InstanceNumber = 1
    ds.StructureSetLabel = label
    series = Dataset()
    series.SeriesInstanceUID = s.uid(2)
    series.ContourImageSequence = [_ref(CT_CLASS, u) for u in ct_uids]
    study = _ref(STUDY_CLASS, s.study_uid)
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = s.uid(99)
    frame.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame]
    _save(s, ds, "rs.dcm")
    return uid


def write_plan(
    s: Study,
    number: int,
    label: str,
    *,
    date: str = "20240306",
    approval: str = "APPROVED",
    structure_set: str | None = None,
) -> str:
    uid = s.uid(20, number)
    ds = _common(s, PLAN_CLASS, uid, "RTPLAN", 20, "Plans")
    ds.InstanceNumber = number
    with lenient():
        ds.RTPlanLabel = label
    ds.RTPlanDate = date
    ds.ApprovalStatus = approval
    ds.PlanIntent = "CURATIVE"
    if structure_set is not None:
        ds.ReferencedStructureSetSequence = [_ref(RS_CLASS, structure_set)]
    _save(s, ds, f"plan{number}.dcm")  # a re-export overwrites the same file
    return uid


def write_raw_date(s: Study, date: str) -> str:
    """One CT whose StudyDate holds ``date`` as UTF-8 bytes (pydicom would refuse to encode it)."""
    uid = s.uid(3, 1)
    ds = _common(s, CT_CLASS, uid, "CT", 3, "odd date")
    del ds.StudyDate
    value = date.encode("utf-8")
    ds._dict[Tag(0x00080020)] = RawDataElement(
        Tag(0x00080020), "DA", len(value), value, 0, False, True
    )
    ds.InstanceNumber = 1
    _save(s, ds, "odd-date.dcm")
    return uid


@dataclass
class Corpus:
    root: Path
    index: Path | str
    studies: dict[str, Study]
    plans: dict[str, str]  # plan key -> SOP Instance UID
    ct_by_number: dict[int, str]  # PAT-A's CT slices: InstanceNumber -> SOP Instance UID

    @property
    def files(self) -> dict[str, Path]:
        return {uid: path for s in self.studies.values() for uid, path in s.files.items()}


def write_corpus(root: Path) -> tuple[dict[str, Study], dict[str, str], dict[int, str]]:
    """Seven patients, the awkward values issue 10 lists among them."""
    a = Study(root, "1", "PAT-A", MULLER)  # UTF-8: the hostile labels need it
    numbers = [10, 2, 1]  # UID order is not instance number order
    ct = write_ct(a, numbers)
    rs = write_rs(a, ct)
    plans = {
        "boost1": write_plan(a, 1, "Boost", structure_set=rs),
        "boost2": write_plan(a, 2, "Boost", structure_set=rs),  # same label, date, approval
        "boost3": write_plan(a, 3, "boost", structure_set=rs),  # differs by case only
        "rtl": write_plan(a, 4, "\u200fRTL\u202eLabel", structure_set=rs),
        "con": write_plan(a, 5, "CON", structure_set=rs),
        "dot": write_plan(a, 6, "Plan.", structure_set=rs),
        "tab": write_plan(a, 7, "Tab\tand\nnewline", structure_set=rs),
        "slash": write_plan(a, 8, "../x", structure_set=rs),
    }
    b = Study(
        root,
        "2",
        "PAT-B",
        MULLER,
        charset="ISO_IR 100",
        date="20240101",
        description="Long " * 2000,
    )
    b_ct = write_ct(b, [1])
    plans["prostate"] = write_plan(b, 1, "Prostate", structure_set=write_rs(b, b_ct))
    c = Study(root, "3", None, "Nobody^Known")
    write_ct(c, [1])
    d = Study(root, "4", "../x", "Dots^Slash")
    write_ct(d, [1])
    e = Study(root, "5", "A\x00B", "Nul^Inside")
    write_ct(e, [1])
    f = Study(root, "6", "line\nbreak", "Zeile^Neu")
    write_ct(f, [1])
    g = Study(root, "7", "CON", "Device^Name")
    write_ct(g, [1])
    studies = {"A": a, "B": b, "C": c, "D": d, "E": e, "F": f, "G": g}
    return studies, plans, dict(zip(numbers, ct, strict=True))


@pytest.fixture(scope="module", params=BACKENDS)
def corpus(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    build_index: BuildIndex,
) -> Corpus:
    """The corpus indexed once per backend: every test that takes it runs on both."""
    base = tmp_path_factory.mktemp("patients-tree")
    studies, plans, ct_by_number = write_corpus(base / "src")
    index = new_index(request.param, base, request)
    report = build_index(index, [base / "src"], 1)
    assert report.parsed == sum(len(s.files) for s in studies.values())
    return Corpus(base / "src", index, studies, plans, ct_by_number)


def make_view(index: Path | str, names: str) -> View:
    return View(
        lambda: IndexReader(index), dir_uid=0, dir_gid=0, mount_time_ns=0, names=names, cache_ttl=0
    )


@pytest.fixture
def views(corpus: Corpus) -> Iterator[dict[str, View]]:
    made = {names: make_view(corpus.index, names) for names in ("uid", "id", "name")}
    yield made
    for view in made.values():
        view.close()


def names(view: View, path: str) -> list[str]:
    return [name for name, _ in view.listdir(path)]


def walk(view: View, path: str) -> Iterator[tuple[str, Node]]:
    """Every (path, node) below ``path``, depth first."""
    for name, node in view.listdir(path):
        child = f"{path}/{name}" if path else name
        yield child, node
        if isinstance(node, DirNode):
            yield from walk(view, child)


def tree_files(view: View, path: str) -> dict[str, Node]:
    """{path relative to ``path``: node} of every file below ``path``."""
    return {
        sub[len(path) + 1 :]: node for sub, node in walk(view, path) if isinstance(node, FileNode)
    }


def content(view: View, path: str, node: Node) -> bytes:
    assert isinstance(node, FileNode), path
    if node.real_path is not None:
        return Path(node.real_path).read_bytes()
    return cat_bytes(view, path)


def plan_folders(view: View) -> dict[str, str]:
    """{plans folder path under patients/: the plan's SOP UID, read from plan.dcm's source}."""
    out = {}
    by_path = {os.fsdecode(p): uid for uid, p in _all_files(view).items()}
    for patient in names(view, "patients"):
        for plan in names(view, f"patients/{patient}/plans"):
            node = view.lookup(f"patients/{patient}/plans/{plan}/plan.dcm")
            assert isinstance(node, FileNode) and node.real_path is not None
            out[f"patients/{patient}/plans/{plan}"] = by_path[node.real_path]
    return out


def _all_files(view: View) -> dict[str, str]:
    """{SOP UID: source path} of every instance, from by-sop/."""
    out = {}
    for name, node in view.listdir("by-sop"):
        assert isinstance(node, FileNode) and node.real_path is not None
        out[name.removesuffix(".dcm")] = node.real_path
    return out


def tsv(data: bytes) -> list[dict[str, str]]:
    lines = data.decode("utf-8").split("\n")
    assert lines[-1] == "", "ends with a newline"
    assert lines[0].split("\t") == list(COLUMNS)
    rows = [line.split("\t") for line in lines[1:-1]]
    for row in rows:
        assert len(row) == len(COLUMNS), row
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows]


# -- names = uid / id / name ----------------------------------------------------------------


def test_uid_names_have_no_patients_tree(views: dict[str, View], corpus: Corpus) -> None:
    view = views["uid"]
    assert "patients" not in names(view, "")
    for path in ("patients", "patients/PAT-A", "patients/PAT-A/plans"):
        with pytest.raises(NotFound):
            view.lookup(path)
        with pytest.raises(NotFound):
            view.listdir(path)
    rows = tsv(cat_bytes(view, ".dicomfs/plans.tsv"))
    assert {row["path"] for row in rows} == {f"plans/{uid}" for uid in corpus.plans.values()}


def test_id_names_are_patient_ids_only(views: dict[str, View], corpus: Corpus) -> None:
    view = views["id"]
    assert "patients" in names(view, "")
    assert names(view, "patients") == sorted(
        ["PAT-A", "PAT-B", "no-patient-id", "_x", "AB", "line break", "_CON"]
    )
    every_path = [path for top in names(view, "") for path, _ in walk(view, top)]
    assert len(every_path) > 100
    for path in every_path:
        for fragment in NAME_FRAGMENTS:
            assert fragment not in path, path
    for patient in names(view, "patients"):
        assert names(view, f"patients/{patient}") == ["plans", "studies"]


def test_name_names_add_the_patient_name(views: dict[str, View]) -> None:
    assert names(views["name"], "patients") == sorted(
        [
            f"PAT-A {MULLER}",  # UTF-8
            f"PAT-B {MULLER}",  # the same name in ISO_IR 100, another patient: apart
            "no-patient-id Nobody^Known",
            "_x Dots^Slash",
            "AB Nul^Inside",
            "line break Zeile^Neu",
            "CON Device^Name",  # not a device name once the name follows
        ]
    )


def test_both_trees_hold_the_same_files(views: dict[str, View]) -> None:
    by_id = {
        node.real_path for _, node in walk(views["id"], "patients") if isinstance(node, FileNode)
    }
    by_name = {
        node.real_path for _, node in walk(views["name"], "patients") if isinstance(node, FileNode)
    }
    assert by_id == by_name


@pytest.mark.parametrize("setting", ["id", "name"])
def test_every_name_is_safe_and_every_file_is_reachable_by_its_path(
    views: dict[str, View], corpus: Corpus, setting: str
) -> None:
    view = views[setting]
    sources = {os.fsdecode(p) for p in corpus.files.values()}
    reached = set()
    for path, node in walk(view, "patients"):
        for part in path.split("/"):
            assert violations(part) == [], (path, violations(part))
        again = view.lookup(path)
        assert type(again) is type(node)
        if isinstance(node, FileNode):
            assert isinstance(again, FileNode)
            assert again.real_path == node.real_path
            if "/studies/" in path:
                assert node.real_path in sources
                assert cat_bytes(view, path) == Path(node.real_path or "").read_bytes()
                reached.add(node.real_path)
    assert reached == sources  # every instance under its patient's studies/


def test_hostile_values_give_safe_names_and_reachable_files(
    views: dict[str, View], corpus: Corpus
) -> None:
    view = views["id"]
    studies = corpus.studies
    for patient, study in (
        ("_x", "D"),
        ("AB", "E"),
        ("line break", "F"),
        ("_CON", "G"),
        ("no-patient-id", "C"),
    ):
        (uid, source) = next(iter(studies[study].files.items()))
        path = f"patients/{patient}/studies/2024-03-05 Thorax/CT 2 CT planning/CT-00001.dcm"
        node = view.lookup(path)
        assert isinstance(node, FileNode) and node.real_path == str(source), (patient, uid)
        assert cat_bytes(view, path) == source.read_bytes()
    plans = names(view, "patients/PAT-A/plans")
    for expected in (
        "RTLLabel 2024-03-06 APPROVED",  # RLM and RLO dropped
        "CON 2024-03-06 APPROVED",
        "Plan 2024-03-06 APPROVED",  # no trailing dot
        "Tab and newline 2024-03-06 APPROVED",
        "_x 2024-03-06 APPROVED",
    ):
        assert expected in plans, plans
        assert names(view, f"patients/PAT-A/plans/{expected}") == PLAN_ENTRIES
    (study,) = names(view, "patients/PAT-B/studies")  # a 10 kB StudyDescription
    assert study.startswith("2024-01-01 Long Long ")
    assert violations(study) == []
    member = f"patients/PAT-B/studies/{study}/CT 2 CT planning/CT-00001.dcm"
    node = view.lookup(member)
    assert isinstance(node, FileNode)
    assert node.real_path == str(studies["B"].files[studies["B"].uid(2, 1)])


def test_the_same_label_date_and_approval_get_distinct_stable_names(
    views: dict[str, View], corpus: Corpus
) -> None:
    folders = plan_folders(views["id"])
    boost = {
        path.rsplit("/", 1)[1]: uid
        for path, uid in folders.items()
        if path.startswith("patients/PAT-A/plans/")
        and uid in {corpus.plans["boost1"], corpus.plans["boost2"], corpus.plans["boost3"]}
    }
    assert len(boost) == 3  # three folders, one per plan
    assert len({name.casefold() for name in boost}) == 3  # also on Windows
    for name in boost:
        assert name.casefold().startswith("boost 2024-03-06 approved ~"), name
    again = make_view(corpus.index, "id")
    try:
        assert plan_folders(again) == folders  # the same index gives the same paths
    finally:
        again.close()
    with pytest.raises(NotFound):
        views["id"].lookup("patients/PAT-A/plans/Boost 2024-03-06 APPROVED")


def test_a_plan_folder_under_patients_is_its_plans_uid_folder(
    views: dict[str, View], corpus: Corpus
) -> None:
    view = views["id"]
    folders = plan_folders(view)
    assert sorted(folders.values()) == sorted(corpus.plans.values())
    for path, uid in folders.items():
        assert names(view, path) == names(view, f"plans/{uid}") == PLAN_ENTRIES
        mine, theirs = tree_files(view, path), tree_files(view, f"plans/{uid}")
        assert sorted(mine) == sorted(theirs)
        assert len(mine) > 3
        for rel, node in mine.items():
            other = theirs[rel]
            assert isinstance(node, FileNode) and isinstance(other, FileNode)
            assert node.real_path == other.real_path, rel
            assert content(view, f"{path}/{rel}", node) == content(
                view, f"plans/{uid}/{rel}", other
            )


def test_series_files_are_named_and_sorted_by_instance_number(
    views: dict[str, View], corpus: Corpus
) -> None:
    view = views["id"]
    series = "patients/PAT-A/studies/2024-03-05 Thorax/CT 2 CT planning"
    listed = view.listdir(series)
    assert [name for name, _ in listed] == ["CT-00001.dcm", "CT-00002.dcm", "CT-00010.dcm"]
    files = corpus.studies["A"].files
    for (_, node), number in zip(listed, (1, 2, 10), strict=True):
        assert isinstance(node, FileNode)
        assert node.real_path == str(files[corpus.ct_by_number[number]])
    assert names(view, "patients/PAT-A/studies/2024-03-05 Thorax") == [
        "CT 2 CT planning",
        "RTPLAN 20 Plans",
        "RTSTRUCT 10 Clinical",
    ]
    plan_files = names(view, "patients/PAT-A/studies/2024-03-05 Thorax/RTPLAN 20 Plans")
    assert plan_files == [f"RTPLAN-{n:05d}.dcm" for n in range(1, 9)]


def test_plans_tsv_has_one_line_per_plan_whatever_its_label(
    views: dict[str, View], corpus: Corpus
) -> None:
    view = views["id"]
    rows = tsv(cat_bytes(view, ".dicomfs/plans.tsv"))
    assert sorted(row["plan_uid"] for row in rows) == sorted(corpus.plans.values())
    folders = {uid: path for path, uid in plan_folders(view).items()}
    for row in rows:
        assert row["path"] == folders[row["plan_uid"]]
        assert isinstance(view.lookup(row["path"]), DirNode)
        assert row["state"] == "complete", row


def test_a_study_date_in_other_digits_is_no_date(tmp_path: Path, build_index: BuildIndex) -> None:
    """A StudyDate of fullwidth digits is not a DA: the study folder must not pass it as a date.

    ``details.date`` matches ``\\d``, which takes any script's digits, and
    ``human.iso_date`` checks ``str.isdigit``: the folder became
    ``２０２４-０３-０５ Thorax``, which sorts after every ISO date.
    """
    s = Study(tmp_path / "src", "8", "PAT-H", "Odd^Date")
    write_raw_date(s, "２０２４０３０５")
    build_index(tmp_path / "index.sqlite", [tmp_path / "src"], 1)
    view = make_view(tmp_path / "index.sqlite", "id")
    try:
        assert names(view, "patients/PAT-H/studies") == ["no-date Thorax"]
    finally:
        view.close()


def test_a_patient_id_that_mimics_a_suffixed_name_hides_no_patient(
    tmp_path: Path, build_index: BuildIndex
) -> None:
    """PatientIDs ``X`` and ``x`` share a folder name on Windows, so both get `` ~<hash>``;
    a third patient whose ID is literally ``X ~<hash of X>`` must still have a folder.

    ``human.unique`` counts collisions among the names before suffixing, so
    the suffixed ``X`` and the third patient end up under one key and one of
    them is no longer reachable under patients/.
    """
    mimic = "X ~" + hashlib.sha256(b"X").hexdigest()[:8]
    sources = {}
    for key, pid in (("12", "X"), ("13", "x"), ("14", mimic)):
        s = Study(tmp_path / "src", key, pid, "Same^Name")
        write_ct(s, [1])
        sources[pid] = s.files[s.uid(2, 1)]
    build_index(tmp_path / "index.sqlite", [tmp_path / "src"], 1)
    view = make_view(tmp_path / "index.sqlite", "id")
    try:
        reached = {
            node.real_path for _, node in walk(view, "patients") if isinstance(node, FileNode)
        }
        assert reached == {str(p) for p in sources.values()}, names(view, "patients")
    finally:
        view.close()


def test_series_uids_that_look_like_the_trees_own_words_change_nothing(
    tmp_path: Path, build_index: BuildIndex
) -> None:
    """Series UIDs "series", "plans", "list" (unsafe, still indexed): every file stays reachable.

    The tree caches its listings under keys that hold values from files; a
    value equal to a word of the key scheme must not find another listing.
    """
    s = Study(tmp_path / "src", "15", "PAT-W", "Word^Uid")
    paths = []
    for n, series_uid in enumerate(("series", "plans", "list", "members"), start=1):
        ds = _common(s, CT_CLASS, s.uid(2, n), "CT", n, f"word {series_uid}")
        with lenient():
            ds.SeriesInstanceUID = series_uid
        paths.append(str(_save(s, ds, f"w{n}.dcm")))
    index = tmp_path / "index.sqlite"
    build_index(index, [tmp_path / "src"], 1)
    view = View(
        lambda: IndexReader(index), dir_uid=0, dir_gid=0, mount_time_ns=0, names="id",
        cache_ttl=60,  # every listing cached: the keys are what is tested
    )  # fmt: skip
    try:
        for _ in range(2):  # the second walk answers from the cache
            reached = {
                node.real_path for _, node in walk(view, "patients") if isinstance(node, FileNode)
            }
            assert reached == set(paths)
    finally:
        view.close()


# -- plans.tsv on the demo patients ----------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, build_index: BuildIndex) -> tuple[DemoSet, Path]:
    base = tmp_path_factory.mktemp("patients-demo")
    demo_set = write_demo(base / "demo", patients=2, ct_slices=2, mr_slices=1, hostile=False)
    build_index(base / "index.sqlite", [demo_set.root], 1)
    return demo_set, base / "index.sqlite"


def test_plans_tsv_states_on_the_demo_patients(demo: tuple[DemoSet, Path]) -> None:
    demo_set, index = demo
    view = make_view(index, "id")
    try:
        rows = tsv(cat_bytes(view, ".dicomfs/plans.tsv"))
        by_uid = {row["plan_uid"]: row for row in rows}
        assert len(rows) == len(by_uid) == 3 * len(demo_set.patients)
        for patient in demo_set.patients:
            complete = by_uid[patient.plan_uid]
            assert complete["state"] == "complete" and complete["missing"] == "0"
            assert complete["label"] == "Prostate"
            assert complete["patient_id"] == patient.patient_id
            assert by_uid[patient.missing_structure_set_plan_uid]["state"] == "1 missing"
            assert by_uid[patient.missing_structure_set_plan_uid]["missing"] == "1"
            assert by_uid[patient.verification_plan_uid]["state"] == "no structure set"
            for uid in (
                patient.plan_uid,
                patient.missing_structure_set_plan_uid,
                patient.verification_plan_uid,
            ):
                path = by_uid[uid]["path"]
                assert path.startswith(f"patients/{patient.patient_id}/plans/")
                node = view.lookup(f"{path}/plan.dcm")
                assert isinstance(node, FileNode)
                assert node.real_path == str(demo_set.root / patient.files[uid])
        assert [row["patient_id"] for row in rows] == sorted(row["patient_id"] for row in rows)
    finally:
        view.close()


# -- re-index: a re-exported plan moves -------------------------------------------------------


def _reconcile(index: Path, roots: Sequence[Path]) -> ScanReport:
    """What ``dicomfs index`` does (commands.local.cmd_index): one reconcile with a writer."""
    writer = IndexWriter(index)
    try:
        return reconcile(writer, roots, workers=1)
    finally:
        writer.close()


def test_a_re_exported_plan_moves_its_folder(tmp_path: Path) -> None:
    s = Study(tmp_path / "src", "9", "PAT-R", "Re^Export")
    ct = write_ct(s, [1, 2])
    rs = write_rs(s, ct)
    uid = write_plan(s, 1, "Draft", structure_set=rs, approval="UNAPPROVED")
    index = tmp_path / "index.sqlite"
    _reconcile(index, [s.root])
    view = make_view(index, "id")
    try:
        old = "patients/PAT-R/plans/Draft 2024-03-06 UNAPPROVED"
        before = tree_files(view, old)
        assert names(view, "patients/PAT-R/plans") == [old.rsplit("/", 1)[1]]
        # The planning system exports the same plan again, renamed and approved.
        write_plan(s, 1, "Final Boost", structure_set=rs, approval="APPROVED")
        report = _reconcile(index, [s.root])
        assert report.parsed == 1
        new = "patients/PAT-R/plans/Final Boost 2024-03-06 APPROVED"
        with pytest.raises(NotFound):
            view.lookup(old)
        with pytest.raises(NotFound):
            view.lookup(f"{old}/plan.dcm")
        assert names(view, "patients/PAT-R/plans") == [new.rsplit("/", 1)[1]]
        assert cat_bytes(view, f"{new}/plan.dcm") == s.files[uid].read_bytes()
        assert b"Final Boost" in cat_bytes(view, f"{new}/plan.dcm")
        after = tree_files(view, new)
        assert sorted(after) == sorted(before)
        assert cat_bytes(view, f"plans/{uid}/plan.dcm") == s.files[uid].read_bytes()
        rows = tsv(cat_bytes(view, ".dicomfs/plans.tsv"))
        assert [(r["label"], r["approval"], r["path"]) for r in rows] == [
            ("Final Boost", "APPROVED", new)
        ]
    finally:
        view.close()


# -- upgrade from schema 2 --------------------------------------------------------------------


def downgrade_to_schema_2(index: Path) -> None:
    """What schema 3 added, taken away again: the index as dicomfs made it before issue 10.

    schema.py's DDL at version 2 differs from version 3 by the ``details``
    table (with its FTS5 index and the triggers that keep it in step) and
    the ``instances_patient`` index; the meta row ``details_pending`` is 3's.
    """
    downgrade_to_schema_6(index)
    conn = sqlite3.connect(index)
    try:
        triggers = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'details'"
            )
        ]
        assert sorted(triggers) == ["details_ad", "details_ai", "details_au"]
        for trigger in triggers:
            conn.execute(f"DROP TRIGGER {trigger}")
        conn.execute("DROP TABLE details_fts")
        conn.execute("DROP TABLE details")
        conn.execute("DROP INDEX instances_patient")
        conn.execute("DELETE FROM meta WHERE key = 'details_pending'")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        conn.commit()
        left = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert not {name for name in left if "details" in name or name == "instances_patient"}
    finally:
        conn.close()


def uid_paths(view: View) -> dict[str, tuple[str | None, bytes | None]]:
    """Every path of by-sop/, by-series/ and every plans/<uid>/ with its source (or content)."""
    out: dict[str, tuple[str | None, bytes | None]] = {}
    plan_uids = names(view, "plans")
    assert plan_uids
    for top in ("by-sop", "by-series", *(f"plans/{uid}" for uid in plan_uids)):
        for path, node in walk(view, top):
            if isinstance(node, FileNode):
                generated = cat_bytes(view, path) if node.real_path is None else None
                out[path] = (node.real_path, generated)
            else:
                out[path] = (None, None)
    return out


def test_a_schema_2_index_is_upgraded_and_rebuilds_the_patients_tree(
    tmp_path: Path, build_index: BuildIndex
) -> None:
    demo_set = write_demo(tmp_path / "demo", patients=1, ct_slices=2, mr_slices=1, hostile=False)
    index = tmp_path / "index.sqlite"
    build_index(index, [demo_set.root], 1)
    view = make_view(index, "id")
    expected = uid_paths(view)
    patients_before = [path for path, _ in walk(view, "patients")]
    tsv_before = cat_bytes(view, ".dicomfs/plans.tsv")
    view.close()
    downgrade_to_schema_2(index)

    with pytest.raises(IndexCorruptError, match=r"run `dicomfs index`.* once to upgrade"):
        IndexReader(index)

    writer = IndexWriter(index)  # upgrades in place
    try:
        assert writer.details_pending()
        assert writer.meta("schema_version") == str(SCHEMA_VERSION)
    finally:
        writer.close()
    view = make_view(index, "id")
    try:
        reader = IndexReader(index)
        assert reader.details_pending() and reader.status().details_pending
        reader.close()
        assert "patients" in names(view, "")
        for path in ("patients", "patients/DEMO-0-001", patients_before[-1]):
            with pytest.raises(Rebuilding):
                view.lookup(path) if path != "patients" else view.listdir(path)
        assert uid_paths(view) == expected  # the UID trees answer meanwhile

        report = _reconcile(index, [demo_set.root])
        assert report.parsed == len(demo_set.patients[0].files)  # every file read again
        reader = IndexReader(index)
        assert not reader.details_pending() and not reader.status().details_pending
        reader.close()
        assert uid_paths(view) == expected
        assert [path for path, _ in walk(view, "patients")] == patients_before
        assert cat_bytes(view, ".dicomfs/plans.tsv") == tsv_before
    finally:
        view.close()


def test_plans_tsv_does_not_claim_no_plans_while_details_are_pending(
    tmp_path: Path, build_index: BuildIndex
) -> None:
    """Between the upgrade and the rescan ``details`` is empty: plans.tsv must not read "none".

    The patients/ tree answers Rebuilding then; plans.tsv joined ``details``
    and listed its header alone, as if the archive held no plan (and
    ``dicomfs plans`` printed "no plans", exit 0).
    """
    demo_set = write_demo(tmp_path / "demo", patients=1, ct_slices=2, mr_slices=1, hostile=False)
    index = tmp_path / "index.sqlite"
    build_index(index, [demo_set.root], 1)
    downgrade_to_schema_2(index)
    IndexWriter(index).close()
    view = make_view(index, "id")
    try:
        try:
            rows = tsv(cat_bytes(view, ".dicomfs/plans.tsv"))
        except Rebuilding:
            return  # an honest answer
        assert len(rows) == 3, "plans.tsv lists no plan while the index is upgraded"
    finally:
        view.close()


# -- through the kernel -----------------------------------------------------------------------


@dataclass
class Mounted:
    mnt: Path
    index: Path
    view: View
    demo: DemoSet
    unicode: Study


@pytest.fixture(scope="module")
def fuse_mount(
    tmp_path_factory: pytest.TempPathFactory, build_index: BuildIndex
) -> Iterator[Mounted]:
    require_fuse()
    base = tmp_path_factory.mktemp("patients-fuse")
    src = base / "src"
    demo_set = write_demo(src / "demo", patients=1, ct_slices=2, mr_slices=1, hostile=False)
    s = Study(src, "11", "PAT Ü-1", "Größe^Jürgen", description="Brust links")
    ct = write_ct(s, [1, 2])
    write_plan(s, 1, "Größe ✓ links", structure_set=write_rs(s, ct), date="20240305")
    index = base / "index.sqlite"
    build_index(index, [src], 1)
    mnt = base / "mnt"
    mnt.mkdir()
    view = make_view(index, "id")
    try:
        with mounted(mnt, index, names="id"):
            yield Mounted(mnt, index, view, demo_set, s)
    finally:
        view.close()


def run(*args: str | Path) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        env=dict(os.environ, LC_ALL="C.UTF-8"),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode("utf-8")


UNICODE_PLAN = "patients/PAT Ü-1/plans/Größe ✓ links 2024-03-05 APPROVED"


@pytest.mark.fuse
def test_ls_of_patients_and_of_a_plan_folder(fuse_mount: Mounted) -> None:
    m = fuse_mount
    assert run("ls", "-1", m.mnt).split() == [
        "by-series",
        "by-sop",
        "by-study",
        "objects",
        "patients",
        "plans",
    ]
    patients = run("ls", "-1", m.mnt / "patients").splitlines()
    assert patients == ["DEMO-0-001", "PAT Ü-1"]
    assert patients == names(m.view, "patients")
    assert run("ls", "-1", m.mnt / UNICODE_PLAN).splitlines() == PLAN_ENTRIES
    demo_plans = run("ls", "-1", m.mnt / "patients/DEMO-0-001/plans").splitlines()
    assert demo_plans == names(m.view, "patients/DEMO-0-001/plans")
    assert "Prostate 2024-01-08 APPROVED" in demo_plans
    long = run("ls", "-l", m.mnt / UNICODE_PLAN / "references")
    assert "RTSTRUCT_" in long and "CT_" in long


@pytest.mark.fuse
@pytest.mark.parametrize(
    "plan", [UNICODE_PLAN, "patients/DEMO-0-001/plans/Prostate 2024-01-08 APPROVED"]
)
def test_cp_r_of_a_plan_folder_copies_its_sources(
    fuse_mount: Mounted, tmp_path: Path, plan: str
) -> None:
    m = fuse_mount
    run("cp", "-r", m.mnt / plan, tmp_path / "copy")
    copied = {
        str(p.relative_to(tmp_path / "copy")): p.read_bytes()
        for p in (tmp_path / "copy").rglob("*")
        if p.is_file()
    }
    expected = tree_files(m.view, plan)
    assert sorted(copied) == sorted(expected)
    for rel, node in expected.items():
        assert copied[rel] == content(m.view, f"{plan}/{rel}", node), rel
    manifest = json.loads(copied["manifest.json"])
    assert manifest  # a real document, copied whole


@pytest.mark.fuse
def test_find_counts_every_file(fuse_mount: Mounted) -> None:
    m = fuse_mount
    found = run("find", m.mnt / "patients", "-name", "*.dcm").splitlines()
    in_studies = [path for path in found if "/studies/" in path]
    instances = len(m.demo.patients[0].files) + len(m.unicode.files)
    assert len(in_studies) == instances
    expected = [p for p, n in walk(m.view, "patients") if isinstance(n, FileNode)]
    assert len(found) == len([p for p in expected if p.endswith(".dcm")])
    assert sorted(os.path.relpath(p, m.mnt) for p in found) == sorted(
        p for p in expected if p.endswith(".dcm")
    )


@pytest.mark.fuse
@pytest.mark.parametrize(
    ("plan", "label"),
    [
        (UNICODE_PLAN, "Clinical"),
        ("patients/DEMO-0-001/plans/Prostate 2024-01-08 APPROVED", "Clinical"),
    ],
)
def test_dcmdump_reads_the_structure_set_by_its_human_path(
    fuse_mount: Mounted, plan: str, label: str
) -> None:
    if shutil.which("dcmdump") is None and os.environ.get("CI") == "true":
        pytest.fail("dcmdump (dcmtk) must be installed in CI")
    if shutil.which("dcmdump") is None:
        pytest.skip("dcmdump (dcmtk) is not installed")
    (rs,) = sorted((fuse_mount.mnt / plan / "references").glob("RTSTRUCT_*.dcm"))
    out = run("dcmdump", rs)
    line = next(line for line in out.splitlines() if "StructureSetLabel" in line)
    assert f"[{label}]" in line


@pytest.mark.fuse
def test_cat_plans_tsv(fuse_mount: Mounted) -> None:
    m = fuse_mount
    data = run("cat", m.mnt / ".dicomfs/plans.tsv")
    assert data.encode() == cat_bytes(m.view, ".dicomfs/plans.tsv")
    rows = tsv(data.encode())
    assert len(rows) == 4
    paths = {row["path"] for row in rows}
    assert UNICODE_PLAN in paths
    for path in paths:
        assert (m.mnt / path / "plan.dcm").is_file()
