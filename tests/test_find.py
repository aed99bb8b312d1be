"""``dicomfs find`` (issue 10): real files written with pydicom, indexed by the real scanner.

Two indexes: a small one whose every value the test chose (two patients
with one name in two cases, names in three character sets, plan dates,
hostile IDs and descriptions, an unsafe UID), and the demo set. The search
is asked through ``index.search.find`` and through the command line
(``cli.main``, table and ``--json``); every path printed is resolved by the
mount's own tree (``view.tree.View``). Expectations come from ``FILES``,
never from the code under test.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import BACKENDS, new_index
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomfs.commands.cli import main
from dicomfs.commands.find_cmd import mount_path
from dicomfs.index import IndexReader
from dicomfs.index.search import Hit, Query, find, parse_date_range
from dicomfs.view.nodes import DirNode, FileNode
from dicomfs.view.tree import View

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
ESC = "\x1b"


@dataclass(frozen=True)
class File:
    """One instance the test writes: identity, then any other attribute by keyword."""

    patient_id: str
    name: str
    study: str
    series: str
    sop: str
    modality: str = "CT"
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def sop_class(self) -> str:
        return {"CT": CT, "MR": MR, "RTPLAN": RT_PLAN}[self.modality]


# fmt: off
FILES = (
    File("SAME-1", "Smith^John", "2.25.1001", "2.25.1101", "2.25.1111",
         values={"StudyDate": "20240105", "StudyDescription": "Chest CT",
                 "SeriesDescription": "Thorax"}),
    File("SAME-1", "Smith^John", "2.25.1001", "2.25.1101", "2.25.1112",
         values={"StudyDate": "20240105", "StudyDescription": "Chest CT",
                 "SeriesDescription": "Thorax"}),
    File("SAME-2", "SMITH^JOHN", "2.25.1002", "2.25.1201", "2.25.1211", "MR",
         values={"StudyDate": "20240310", "StudyDescription": "Brain MR",
                 "SeriesDescription": "T1 sagittal"}),
    File("mixedCase-7", "Müller^Jürgen", "2.25.1003", "2.25.1301", "2.25.1311", "RTPLAN",
         values={"SpecificCharacterSet": "ISO_IR 100", "StudyDate": "20231231",
                 "StudyDescription": "Kopf-Hals", "RTPlanLabel": "Kopf Hals",
                 "RTPlanName": "Head & Neck boost", "RTPlanDate": "20240102"}),
    File("mixedCase-7", "Müller^Jürgen", "2.25.1003", "2.25.1302", "2.25.1312",
         values={"SpecificCharacterSet": "ISO_IR 100", "StudyDate": "20231231",
                 "StudyDescription": "Kopf-Hals", "SeriesDescription": "Planungs-CT"}),
    # A plan without a plan date (type 2): it is dated by its study.
    File("mixedCase-7", "Müller^Jürgen", "2.25.1003", "2.25.1303", "2.25.1313", "RTPLAN",
         values={"SpecificCharacterSet": "ISO_IR 100", "StudyDate": "20231231",
                 "RTPlanLabel": "NOT OR", "RTPlanName": 'say "NEAR(x y)" AND *'}),
    File("RU-1", "Иванов^Иван", "2.25.1004", "2.25.1401", "2.25.1411",
         values={"SpecificCharacterSet": "ISO_IR 144", "StudyDate": "20240601",
                 "StudyDescription": "Грудь"}),
    File("JP-1", "山田^太郎", "2.25.1005", "2.25.1501", "2.25.1511", "MR",
         values={"SpecificCharacterSet": "ISO_IR 192", "StudyDate": "20240602",
                 "StudyDescription": "頭部"}),
    # Hostile IDs: SQL LIKE and glob characters, quotes; "AXYB" and "XZY" are
    # what "A*B" and "X_Y" would also match if they were read as patterns.
    File("A%_1", 'O"Brien^Pat', "2.25.1006", "2.25.1601", "2.25.1611",
         values={"StudyDate": "20240701", "StudyDescription": "100% _done_"}),
    File("A*B", "Star^Ann", "2.25.1007", "2.25.1701", "2.25.1711",
         values={"StudyDate": "20240702", "StudyDescription": f"{ESC}[31mred{ESC}[0m",
                 "SeriesDescription": "tab\there"}),
    File("AXYB", "Plain^Ann", "2.25.1008", "2.25.1801", "2.25.1811",
         values={"StudyDate": "20240703"}),
    File("X_Y", "Under^Score", "2.25.1009", "2.25.1901", "2.25.1911",
         values={"StudyDate": "20240704"}),
    File("XZY", "No^Date", "2.25.1010", "2.25.2001", "2.25.2011"),
    # UIDs that may not be names: leading zeros (study) and a path (instance).
    File("UNSAFE", "Unsafe^Uid", "1.02.3", "2.25.2101", "../../etc/passwd",
         values={"StudyDate": "20240705"}),
)
# fmt: on
PATIENTS = sorted({f.patient_id for f in FILES})


def write(folder: Path, files: Sequence[File]) -> None:
    """Each ``File`` as a DICOM file with File Meta, hostile values unchanged."""
    folder.mkdir(parents=True, exist_ok=True)
    with config.disable_value_validation():
        for number, spec in enumerate(files):
            ds = Dataset()
            for keyword, value in spec.values.items():
                setattr(ds, keyword, value)
            ds.SOPClassUID = spec.sop_class
            ds.SOPInstanceUID = spec.sop
            ds.StudyInstanceUID = spec.study
            ds.SeriesInstanceUID = spec.series
            ds.PatientID = spec.patient_id
            ds.PatientName = spec.name
            ds.Modality = spec.modality
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = spec.sop_class
            ds.file_meta.MediaStorageSOPInstanceUID = spec.sop
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.save_as(folder / f"{number:03d}.dcm", enforce_file_format=True)


@pytest.fixture(scope="module", params=BACKENDS)
def index(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    build_index: Callable[..., Any],
) -> Path | str:
    """The files indexed once per backend: every test that takes it runs on both."""
    root = tmp_path_factory.mktemp("find")
    write(root / "src", FILES)
    path = new_index(request.param, root, request)
    report = build_index(path, [root / "src"], 1)
    assert report.rejected == 0
    return path


@pytest.fixture(scope="module")
def reader(index: Path | str) -> Iterator[IndexReader]:
    r = IndexReader(index)
    yield r
    r.close()


def search(reader: IndexReader, **query: Any) -> list[Hit]:
    return find(reader, Query(**query))


def ids(hits: list[Hit]) -> set[str]:
    return {h.patient_id for h in hits}


def uids(hits: list[Hit]) -> set[str]:
    return {h.uid for h in hits}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["find", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


# -- patient IDs -------------------------------------------------------------------


def test_no_filter_finds_every_study(reader: IndexReader) -> None:
    hits = search(reader)
    assert uids(hits) == {f.study for f in FILES}
    assert all(h.level == "study" for h in hits)
    assert [h.patient_id for h in hits] == sorted(h.patient_id for h in hits)


def test_an_exact_id_is_exact_and_then_any_case(reader: IndexReader) -> None:
    assert ids(search(reader, patient="SAME-1")) == {"SAME-1"}
    assert ids(search(reader, patient="same-1")) == {"SAME-1"}
    assert ids(search(reader, patient="MIXEDCASE-7")) == {"mixedCase-7"}
    assert search(reader, patient="SAME") == []


def test_id_wildcards_ignore_case(reader: IndexReader) -> None:
    assert ids(search(reader, patient="same-?")) == {"SAME-1", "SAME-2"}
    assert ids(search(reader, patient="s*")) == {"SAME-1", "SAME-2"}
    assert ids(search(reader, patient="*-7")) == {"mixedCase-7"}
    assert ids(search(reader, patient="*")) == set(PATIENTS)
    assert ids(search(reader, patient="")) == set(PATIENTS)


def test_hostile_ids_are_values_not_patterns(reader: IndexReader) -> None:
    # % and _ are SQL LIKE wildcards, [ a glob class: here they are characters.
    assert ids(search(reader, patient="A%_1")) == {"A%_1"}
    assert ids(search(reader, patient="X_Y")) == {"X_Y"}
    assert search(reader, patient="A%") == []
    assert search(reader, patient="[AX]*") == []
    # * is always the DICOM wildcard (DICOM has no escape for it).
    assert ids(search(reader, patient="A*B")) == {"A*B", "AXYB"}
    assert ids(search(reader, patient='A"*')) == set()


# -- patient names -----------------------------------------------------------------


def test_two_patients_with_one_name(reader: IndexReader) -> None:
    both = {"SAME-1", "SAME-2"}
    assert ids(search(reader, name="Smith^John")) == both
    assert ids(search(reader, name="smith^john")) == both
    assert ids(search(reader, name="smi*")) == both  # full-text prefix, then checked
    assert ids(search(reader, name="*^JOHN")) == both  # leading wildcard: every name
    assert ids(search(reader, name="smith^j?hn")) == both
    assert search(reader, name="smith") == []  # the whole name, as DICOM matches
    assert ids(search(reader, name="smith*", patient="SAME-2")) == {"SAME-2"}


def test_names_in_other_character_sets(reader: IndexReader) -> None:
    assert ids(search(reader, name="müller*")) == {"mixedCase-7"}
    assert ids(search(reader, name="MÜLLER^JÜRGEN")) == {"mixedCase-7"}
    assert search(reader, name="muller*") == []  # names keep their accents
    assert ids(search(reader, name="иванов^иван")) == {"RU-1"}
    assert ids(search(reader, name="Ив*")) == {"RU-1"}
    assert ids(search(reader, name="山田*")) == {"JP-1"}
    hit = search(reader, patient="JP-1")[0]
    assert (hit.patient_name, hit.description) == ("山田^太郎", "頭部")


def test_hostile_names(reader: IndexReader) -> None:
    assert ids(search(reader, name='o"brien^pat')) == {"A%_1"}
    assert ids(search(reader, name='O"*')) == {"A%_1"}
    assert search(reader, name="%") == []


# -- dates, modalities, levels -----------------------------------------------------


def test_date_ranges(reader: IndexReader) -> None:
    def dated(start: str, end: str) -> set[str]:
        return ids(search(reader, date_from=start, date_to=end))

    assert dated("20240105", "20240105") == {"SAME-1"}
    assert dated("20240101", "20240331") == {"SAME-1", "SAME-2"}
    assert dated("20240701", "") == {"A%_1", "A*B", "AXYB", "X_Y", "UNSAFE"}
    assert dated("", "20231231") == {"mixedCase-7"}  # "XZY" has no date: never in a range
    assert "XZY" in ids(search(reader))


def test_plans_are_dated_by_the_plan_then_the_study(reader: IndexReader) -> None:
    january = search(reader, level="plan", date_from="20240101", date_to="20240131")
    assert uids(january) == {"2.25.1311"}
    december = search(reader, level="plan", date_from="20231231", date_to="20231231")
    assert uids(december) == {"2.25.1313"}
    assert [h.date for h in search(reader, level="plan")] == ["20231231", "20240102"]


def test_modalities(reader: IndexReader) -> None:
    series = search(reader, level="series", modality=("mr",))
    assert uids(series) == {"2.25.1201", "2.25.1501"}
    both = search(reader, level="series", modality=("CT", "RTPLAN"), patient="mixedCase-7")
    assert uids(both) == {"2.25.1301", "2.25.1302", "2.25.1303"}
    # A study has a modality when one of its series has it; it lists them all.
    (study,) = search(reader, modality=("RTPLAN",))
    assert (study.uid, study.modalities, study.instances) == ("2.25.1003", ("CT", "RTPLAN"), 3)


def test_levels_collapse_to_their_keys(reader: IndexReader) -> None:
    patients = search(reader, level="patient")
    assert [h.patient_id for h in patients] == PATIENTS
    same = next(h for h in patients if h.patient_id == "SAME-1")
    assert (same.instances, same.uid, same.date) == (2, "", "20240105")
    (series,) = search(reader, level="series", patient="SAME-1")
    assert (series.uid, series.instances, series.description) == ("2.25.1101", 2, "Thorax")
    instances = search(reader, level="instance", patient="SAME-1")
    assert uids(instances) == {"2.25.1111", "2.25.1112"}
    plans = search(reader, level="plan")
    assert {h.description for h in plans} == {"Head & Neck boost", 'say "NEAR(x y)" AND *'}


def test_limit_keeps_that_many(reader: IndexReader) -> None:
    assert len(search(reader, level="instance", limit=3)) == 3
    assert len(search(reader, level="instance", limit=0)) == len(FILES)
    assert len(search(reader, level="patient", limit=2)) == 2


@pytest.mark.parametrize("index", ["sqlite"], indirect=True)  # an upgrade of an SQLite file
def test_instances_whose_details_are_not_read_yet_are_found(index: Path, tmp_path: Path) -> None:
    """After an upgrade to schema 3 the details come with the next scan: until then, IDs work."""
    copy = tmp_path / "pending.sqlite"
    with closing(sqlite3.connect(index)) as source, closing(sqlite3.connect(copy)) as target:
        source.backup(target)
        with target:  # one transaction; sqlite-utils' triggers update details_fts
            target.execute(
                "DELETE FROM details WHERE file_id = "
                "(SELECT file_id FROM instances WHERE sop_uid = '2.25.1211')"
            )
    reader = IndexReader(copy)
    try:
        (hit,) = find(reader, Query(patient="SAME-2", level="instance"))
        assert (hit.uid, hit.patient_name, hit.date) == ("2.25.1211", "", "")
        (study,) = find(reader, Query(patient="SAME-2"))
        assert (study.uid, study.instances, study.description) == ("2.25.1002", 1, "")
        assert ids(find(reader, Query(name="smith*"))) == {"SAME-1"}
        assert ids(find(reader, Query(name="*^john"))) == {"SAME-1"}
        assert ids(find(reader, Query(name="*", level="patient"))) == set(PATIENTS)
        assert find(reader, Query(text="brain")) == []
    finally:
        reader.close()


# -- free text ---------------------------------------------------------------------


def test_free_text_over_labels_names_and_descriptions(reader: IndexReader) -> None:
    assert uids(search(reader, level="plan", text="kopf")) == {"2.25.1311"}  # plan label
    assert uids(search(reader, level="plan", text="NECK BOOST")) == {"2.25.1311"}  # plan name
    assert uids(search(reader, level="series", text="thorax")) == {"2.25.1101"}
    assert uids(search(reader, text="brain")) == {"2.25.1002"}  # study description
    assert ids(search(reader, text="muller")) == {"mixedCase-7"}  # accents do not count
    assert uids(search(reader, level="series", text="thor*")) == {"2.25.1101"}
    assert search(reader, text="thor") == []  # whole words unless a prefix is asked for
    assert uids(search(reader, level="plan", text='"neck boost"')) == {"2.25.1311"}
    assert search(reader, level="plan", text='"boost neck"') == []
    assert ids(search(reader, text="грудь")) == {"RU-1"}


def test_free_text_with_patients_is_bounded_to_them(reader: IndexReader) -> None:
    assert uids(search(reader, level="series", patient="SAME-1", text="thorax")) == {"2.25.1101"}
    assert search(reader, patient="SAME-2", text="thorax") == []
    assert ids(search(reader, name="smith*", text="t1")) == {"SAME-2"}


def test_query_syntax_in_free_text_is_text(reader: IndexReader) -> None:
    # NOT, OR, NEAR( and quotes are FTS5 syntax; here they are words to find.
    assert uids(search(reader, level="plan", text="NOT OR")) == {"2.25.1313"}
    assert uids(search(reader, level="plan", text="near(x")) == {"2.25.1313"}
    assert uids(search(reader, level="plan", text='say "near')) == {"2.25.1313"}
    assert uids(search(reader, text="100%")) == {"2.25.1006"}
    everything = search(reader, level="instance", limit=0)
    for text in ("*", "", "  ", '""'):
        assert search(reader, level="instance", text=text, limit=0) == everything


# fmt: off
HOSTILE_TEXT = [
    '"', '"""', "'", "(", ")", "NEAR(", "AND", "OR NOT", "*", "**", "-x", "^", ":", "col:val",
    "patient_name:smith", "{a b}", "a + b", "\x00", "\udcff", "\u202e", "%_", "[", "]",
    "x" * 5000, '"a" *', "* a", "NEAR(a b, 2)", "a OR", "\\", "'; DROP TABLE details; --",
]
# fmt: on


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_hostile_input_never_raises(reader: IndexReader, text: str) -> None:
    for level in ("patient", "plan", "instance"):
        assert isinstance(search(reader, level=level, text=text, patient=text, name=text), list)
        assert isinstance(search(reader, level=level, text=text), list)
        assert isinstance(search(reader, level=level, name=text), list)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=40), st.text(max_size=20), st.sampled_from(["study", "instance"]))
def test_any_input_gives_hits_or_none(
    index: Path | str, text: str, pattern: str, level: str
) -> None:
    reader = IndexReader(index)
    try:
        for query in (
            Query(text=text, level=level),
            Query(name=pattern, level=level),
            Query(patient=pattern, text=text, level=level),
        ):
            for hit in find(reader, query):
                assert hit.patient_id in PATIENTS
    finally:
        reader.close()


def test_bad_queries_are_refused() -> None:
    for bad in ("2024", "20240230", "20240101-20231231", "-", "2024-01-01", "20240101--"):
        with pytest.raises(ValueError):
            parse_date_range(bad)
    assert parse_date_range("20240101-") == ("20240101", "")
    assert parse_date_range("-20240331") == ("", "20240331")
    assert parse_date_range(" 20240101 ") == ("20240101", "20240101")


# -- paths in the mount ------------------------------------------------------------


def view_of(index: Path | str, names: str = "uid") -> View:
    return View(
        lambda: IndexReader(index),
        dir_uid=0,
        dir_gid=0,
        mount_time_ns=0,
        cache_ttl=0,
        names=names,
    )


def test_every_path_is_in_the_mount(index: Path | str, reader: IndexReader) -> None:
    view = view_of(index)
    try:
        for level in ("study", "series", "instance", "plan"):
            for hit in search(reader, level=level, limit=0):
                path = mount_path(hit)
                if hit.patient_id == "UNSAFE" and level in ("study", "series"):
                    assert path is None, (level, hit.uid)  # "1.02.3"
                    continue
                assert path is not None, (level, hit.uid)
                node = view.lookup(path)
                assert isinstance(node, FileNode if level == "instance" else DirNode), path
                if hit.patient_id == "UNSAFE":  # "../../etc/passwd": by a hash, never the UID
                    assert path.startswith("by-sop/invalid-uid-") and "etc" not in path
                else:
                    assert hit.uid in path
    finally:
        view.close()


def test_every_hit_has_a_path_under_patients(index: Path | str, reader: IndexReader) -> None:
    """With names = "id" every hit, unsafe UIDs and patients included, is reachable by path."""
    view = view_of(index, "id")
    try:
        for level in ("patient", "study", "series", "instance", "plan"):
            for hit in search(reader, level=level, limit=0):
                path = mount_path(hit, view=view)
                assert path is not None and path.startswith("patients/"), (level, hit.uid)
                node = view.lookup(path)
                assert isinstance(node, FileNode if level == "instance" else DirNode), path
                if level == "instance":  # named by instance number, never by the UID
                    assert isinstance(node, FileNode) and node.real_path is not None
                    assert hit.uid not in path
    finally:
        view.close()
    assert all(mount_path(h) is None for h in search(reader, level="patient"))


def test_demo_plans_and_paths(demo_set, demo_index: Path | str) -> None:  # type: ignore[no-untyped-def]
    reader = IndexReader(demo_index)
    view = view_of(demo_index)
    try:
        plans = find(reader, Query(level="plan", limit=0))
        expected = {
            uid
            for p in demo_set.patients
            for uid in (p.plan_uid, p.verification_plan_uid, p.missing_structure_set_plan_uid)
        }
        assert uids(plans) == expected
        first = demo_set.patients[0]
        (study,) = find(reader, Query(patient=first.patient_id))
        assert study.uid == first.study_uid
        series = find(reader, Query(patient=first.patient_id, level="series", modality=("CT",)))
        assert uids(series) == {first.ct_series_uid}
        assert series[0].instances == len(first.ct_uids)
        for hit in [*plans, study, *series]:
            path = mount_path(hit)
            assert path is not None
            assert isinstance(view.lookup(path), DirNode)
    finally:
        view.close()
        reader.close()


# -- the command line --------------------------------------------------------------


def test_table_shows_ids_and_paths_not_names(
    capsys: pytest.CaptureFixture[str], index: Path
) -> None:
    uid_args = ("--index", str(index), "-l", "series", "-p", "same-*", "--names", "uid")
    code, out, err = run(capsys, *uid_args)
    assert code == 0 and err == ""
    lines = out.splitlines()
    header = "PATIENT ID  DATE  MODALITY  INSTANCES  DESCRIPTION  PATH"
    assert lines[0].split() == header.split()
    assert len(lines) == 3
    first = "SAME-1  20240105  CT  2  Thorax  by-study/2.25.1001/2.25.1101/"
    assert lines[1].split() == first.split()
    assert "Smith" not in out and "SMITH" not in out

    # The default (id, as a private mount): paths under patients/, still no names.
    code, out, err = run(capsys, "--index", str(index), "-l", "series", "-p", "same-*")
    assert code == 0 and "Smith" not in out and "SMITH" not in out
    paths = [line.split("  ")[-1].strip() for line in out.splitlines()[1:]]
    assert paths and all(p.startswith("patients/SAME-") for p in paths), paths

    code, out, err = run(
        capsys, "--index", str(index), "-l", "series", "-p", "same-*", "--names", "name"
    )
    assert "Smith^John" in out and "SMITH^JOHN" in out
    assert out.splitlines()[0].split()[:3] == ["PATIENT", "ID", "NAME"]


def test_json_for_scripts(capsys: pytest.CaptureFixture[str], index: Path | str) -> None:
    code, out, _ = run(
        capsys, "--index", str(index), "--json", "-l", "plan", "--mount", "/mnt/dicomfs",
        "--names", "uid", "kopf",
    )  # fmt: skip
    assert code == 0
    (hit,) = json.loads(out)
    assert hit == {
        "level": "plan",
        "patient_id": "mixedCase-7",
        "patient_name": "Müller^Jürgen",
        "date": "20240102",
        "modalities": ["RTPLAN"],
        "description": "Head & Neck boost",
        "uid": "2.25.1311",
        "study_uid": "2.25.1003",
        "series_uid": "2.25.1301",
        "instances": 1,
        "path": "/mnt/dicomfs/plans/2.25.1311/",
        "uid_path": "/mnt/dicomfs/plans/2.25.1311/",
    }
    # By default the path is the plan's folder under patients/, named by label and date.
    code, out, _ = run(capsys, "--index", str(index), "--json", "-l", "plan", "kopf")
    (hit,) = json.loads(out)
    assert hit["path"] == "patients/mixedCase-7/plans/Kopf Hals 2024-01-02 no-approval"
    assert hit["uid_path"] == "plans/2.25.1311/"
    code, out, _ = run(capsys, "--index", str(index), "--json", "-l", "instance", "-p", "UNSAFE")
    (hit,) = json.loads(out)
    assert hit["uid"] == "../../etc/passwd"
    assert hit["uid_path"].startswith("by-sop/invalid-uid-")  # listed by a hash, never the UID
    # The patients/ tree names it by instance number, never by that UID.
    assert hit["path"] == "patients/UNSAFE/studies/2024-07-05 no description/CT/CT-no-number.dcm"


def test_table_cannot_drive_the_terminal(
    capsys: pytest.CaptureFixture[str], index: Path | str
) -> None:
    _, out, _ = run(capsys, "--index", str(index), "-p", "A*B", "-l", "study")
    assert ESC not in out and "?[31mred?[0m" in out
    _, out, _ = run(capsys, "--index", str(index), "-p", "A*B", "-l", "series")
    assert "\t" not in out and "tab?here" in out


def test_limit_and_no_match_are_said(capsys: pytest.CaptureFixture[str], index: Path | str) -> None:
    code, out, err = run(capsys, "--index", str(index), "-l", "instance", "--limit", "2")
    assert code == 0 and len(out.splitlines()) == 3
    assert "more than 2 hits" in err and "--limit 0" in err
    code, out, err = run(capsys, "--index", str(index), "-l", "instance", "--limit", "0")
    assert len(out.splitlines()) == len(FILES) + 1 and err == ""
    code, out, err = run(capsys, "--index", str(index), "no-such-word")
    assert (code, out) == (0, "") and "no match" in err
    code, out, err = run(capsys, "--index", str(index), "--json", "no-such-word")
    assert json.loads(out) == [] and err == ""


def test_modality_lists_and_dates_on_the_command_line(
    capsys: pytest.CaptureFixture[str], index: Path
) -> None:
    options = ["--json", "-l", "series", "-m", "mr,rtplan", "-m", "CT"]
    _, out, _ = run(capsys, "--index", str(index), *options, "--date", "20240101-20240331")
    assert {h["uid"] for h in json.loads(out)} == {"2.25.1101", "2.25.1201"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--date", "2024"], "is not a date"),
        (["--date", "20240301-20240101"], "ends before it starts"),
        (["--limit", "-1"], "0 for all"),
        (["--level", "frame"], "invalid choice"),
    ],
)
def test_bad_options_are_usage_errors(
    capsys: pytest.CaptureFixture[str], index: Path, args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["find", "--index", str(index), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_no_index_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "--index", str(tmp_path / "none.sqlite"))
    assert code == 4 and "no index" in err
