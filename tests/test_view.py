"""The view tree with plain calls: a real index over real files, no FUSE.

The module's index is made once per backend, SQLite and PostgreSQL
(``conftest.BACKENDS``): every test here runs on both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BACKENDS
from fuse_helpers import (
    HOSTILE_UID,
    LONG_UID,
    UNSAFE_SERIES,
    Corpus,
    build_corpus,
    reindex,
    wait_for,
    write_index,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg_helpers import PrivateCluster

from dicomfs.index import IndexReader, IndexWriter, graph
from dicomfs.view.listing import cat_bytes, format_listing
from dicomfs.view.names import member_name, modality_name, synthetic_name
from dicomfs.view.nodes import (
    DirNode,
    FileNode,
    IsADirectory,
    NotADirectory,
    NotFound,
    SourceChanged,
    open_source,
)
from dicomfs.view.report import MISSING_HEADER
from dicomfs.view.tree import View

NAME = re.compile(r"[A-Za-z0-9._-]{1,255}")
MOUNT_NS = 1_700_000_000_123_456_789


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("view") / "src")


@pytest.fixture(scope="module", params=BACKENDS)
def index(request: pytest.FixtureRequest, corpus: Corpus) -> Path | str:
    if request.param == "sqlite":
        return write_index(corpus.root.parent / "index.sqlite", corpus)
    cluster: PrivateCluster = request.getfixturevalue("pg_cluster")
    return write_index(cluster.database(), corpus)


def make_view(index: Path | str, ttl: float = 0.0) -> View:
    return View(
        lambda: IndexReader(index),
        dir_uid=0,
        dir_gid=4321,
        mount_time_ns=MOUNT_NS,
        cache_ttl=ttl,
    )


@pytest.fixture
def view(index: Path | str) -> Iterator[View]:
    v = make_view(index)
    yield v
    v.close()


def names(view: View, path: str) -> list[str]:
    return [name for name, _ in view.listdir(path)]


def walk(view: View, path: str = "") -> Iterator[tuple[str, str]]:
    for name, node in view.listdir(path):
        yield path, name
        if isinstance(node, DirNode):
            yield from walk(view, f"{path}/{name}")


# -- layout -------------------------------------------------------------------------


def test_root_and_virtual_dirs_belong_to_the_configured_group(view: View) -> None:
    entries = view.listdir("/")
    top = [".dicomfs", "by-series", "by-sop", "by-study", "objects", "plans"]
    assert [n for n, _ in entries] == top
    for _, node in entries:
        assert node == DirNode(node.name, 0, 4321, 0o750, MOUNT_NS)


def test_by_sop_lists_every_instance_and_mirrors_the_source(view: View, corpus: Corpus) -> None:
    listed = dict(view.listdir("by-sop"))
    expected = {f"{u}.dcm" for u in corpus.safe_instances}
    expected |= {synthetic_name(HOSTILE_UID), synthetic_name(LONG_UID)}
    assert set(listed) == expected
    for uid in corpus.safe_instances:
        node = listed[f"{uid}.dcm"]
        assert isinstance(node, FileNode)
        st = os.stat(corpus.files[uid])
        assert node.real_path == corpus.files[uid]
        assert (node.size, node.mtime_ns, node.uid, node.gid) == (
            st.st_size,
            st.st_mtime_ns,
            st.st_uid,
            st.st_gid,
        )
        assert node.mode == stat.S_IMODE(st.st_mode) & ~0o222
        bare = view.lookup(f"by-sop/{uid}")
        assert bare == FileNode(uid, *_fields(node)[1:], ctime_ns=node.ctime_ns)
    assert listed[f"{corpus.secret}.dcm"].mode == 0o400


def _fields(node: FileNode) -> tuple[object, ...]:
    return (node.name, node.real_path, node.size, node.mtime_ns, node.uid, node.gid, node.mode,
            node.inode, node.dev, node.content)  # fmt: skip


def test_bare_uid_resolves_but_is_not_listed(view: View, corpus: Corpus) -> None:
    node = view.lookup(f"/by-sop/{corpus.plan}")
    assert isinstance(node, FileNode) and node.real_path == corpus.files[corpus.plan]
    assert corpus.plan not in names(view, "by-sop")


def test_by_series_and_by_study(view: View, corpus: Corpus) -> None:
    series = set(names(view, "by-series"))
    assert corpus.ct_series in series and UNSAFE_SERIES not in series
    in_ct = {f"{u}.dcm" for u in (*corpus.ct, corpus.secret)}
    assert set(names(view, f"by-series/{corpus.ct_series}")) == in_ct
    assert names(view, "by-study") == [corpus.study]
    assert set(names(view, f"by-study/{corpus.study}")) == series
    assert set(names(view, f"by-study/{corpus.study}/{corpus.ct_series}")) == in_ct
    uid = corpus.ct[0]
    node = view.lookup(f"by-study/{corpus.study}/{corpus.ct_series}/{uid}.dcm")
    assert isinstance(node, FileNode) and node.real_path == corpus.files[uid]
    for wrong in (
        f"by-series/{corpus.rs_series}/{uid}.dcm",
        f"by-study/{corpus.study}/{corpus.rs_series}/{uid}.dcm",
        f"by-study/{corpus.ct_series}/{corpus.ct_series}",
        "by-series/9.9.9",
        f"by-series/{UNSAFE_SERIES}",
    ):
        with pytest.raises(NotFound):
            view.lookup(wrong)


def _folder_answers(view: View, paths: list[str]) -> list[object]:
    answers: list[object] = []
    for path in paths:
        try:
            answers.append(view.lookup(path))
        except NotFound:
            answers.append(None)
    return answers


def test_kept_listings_answer_folder_lookups_as_the_index_does(
    index: Path | str, corpus: Corpus
) -> None:
    """A study or series folder looked up through its kept listing: the same answers.

    The hostile series has only unsafe UIDs, so it lists empty and is still
    a folder; a series of another study is no folder of this one.
    """
    reader = IndexReader(index)
    pairs = reader.rows("SELECT DISTINCT study_uid, series_uid FROM instances ORDER BY 1, 2")
    reader.close()
    paths = ["by-series/9.9.9", f"by-study/{corpus.study}/9.9.9", "by-study/9.9.9"]
    for study, series in pairs:
        paths += [f"by-series/{series}", f"by-study/{study}", f"by-study/{study}/{series}"]
        paths += [f"by-study/9.9.9/{series}"]
    assert f"by-series/{corpus.hostile_series}" in paths
    asked, kept = make_view(index), make_view(index, ttl=60)
    try:
        answers = _folder_answers(asked, paths)
        assert answers == _folder_answers(kept, paths)
        assert answers[paths.index(f"by-series/{corpus.hostile_series}")] is not None
        assert answers[paths.index(f"by-series/{corpus.ct_series}")] is not None
        assert answers[paths.index("by-series/9.9.9")] is None
    finally:
        asked.close()
        kept.close()


class _CountingReader:
    """An index reader that counts the calls of its methods (the view's questions)."""

    def __init__(self, index: Path | str, calls: list[str]) -> None:
        self._reader = IndexReader(index)
        self._calls = calls

    def __getattr__(self, name: str) -> object:
        value = getattr(self._reader, name)
        if callable(value) and name in ("series_exists", "study_series_uids", "rows"):
            self._calls.append(name)
        return value


def test_a_folder_looked_up_opened_and_read_asks_the_index_once(
    index: Path | str, corpus: Corpus
) -> None:
    """What the kernel sends for ``ls`` (lookup, opendir's lookup, read) is one query.

    Each is a round trip to a database server; SQLite's answers are the same.
    """
    calls: list[str] = []
    view = View(
        lambda: _CountingReader(index, calls),  # type: ignore[arg-type,return-value]
        dir_uid=0, dir_gid=0, mount_time_ns=MOUNT_NS, cache_ttl=60,
    )  # fmt: skip
    try:
        for path in (
            f"by-series/{corpus.ct_series}",
            f"by-study/{corpus.study}",
            f"by-study/{corpus.study}/{corpus.rs_series}",
        ):
            calls.clear()
            view.lookup(path)
            view.lookup(path)
            entries = [name for page in view.pages(path) for name, _ in page]
            assert entries and len(calls) <= 1, (path, calls)
            assert "series_exists" not in calls
    finally:
        view.close()


def test_plan_folder(view: View, corpus: Corpus, index: Path) -> None:
    assert names(view, "plans") == [corpus.plan]
    base = f"plans/{corpus.plan}"
    assert names(view, base) == [
        "manifest.json",
        "missing.txt",
        "plan.dcm",
        "referenced-by",
        "references",
        "registrations",
    ]
    plan = view.lookup(f"{base}/plan.dcm")
    assert isinstance(plan, FileNode) and plan.real_path == corpus.files[corpus.plan]
    reader = IndexReader(index)
    insts = reader.instances(corpus.files)
    reader.close()

    def expected(uids: set[str]) -> set[str]:
        return {f"{modality_name(insts[u].modality)}_{u}.dcm" for u in uids}

    assert set(names(view, f"{base}/references")) == expected(corpus.package)
    assert set(names(view, f"{base}/referenced-by")) == expected({corpus.dose})
    assert set(names(view, f"{base}/registrations")) == expected({corpus.reg, corpus.mr})
    assert f"MR_{corpus.mr}.dcm" in names(view, f"{base}/registrations")  # "m/r" sanitized
    for name, node in view.listdir(f"{base}/references"):
        uid = name.split("_", 1)[1][:-4]
        assert isinstance(node, FileNode) and node.real_path == corpus.files[uid]
        assert view.lookup(f"{base}/references/{name}") == node
    with pytest.raises(NotFound):
        view.lookup(f"{base}/references/RTSTRUCT_{corpus.rs2}.dcm")  # same series, not named
    with pytest.raises(NotFound):
        view.lookup(f"plans/{corpus.rs1}")  # not a plan
    with pytest.raises(NotFound):
        view.lookup(f"objects/{corpus.plan}/manifest.json")


def test_missing_txt(view: View, corpus: Corpus) -> None:
    data = cat_bytes(view, f"plans/{corpus.plan}/missing.txt")
    fields = ["instance", corpus.missing_dose, "dose", corpus.plan, "ReferencedDoseSequence"]
    fields += [corpus.study, corpus.dose_series]
    assert data.decode() == MISSING_HEADER + "\t".join(fields) + "\n"
    node = view.lookup(f"plans/{corpus.plan}/missing.txt")
    assert isinstance(node, FileNode) and node.size == len(data) and node.mode == 0o440
    assert (node.uid, node.gid, node.real_path) == (0, 4321, None)
    assert view.read_virtual(node) == data
    complete = view.lookup(f"objects/{corpus.rs1}/missing.txt")
    assert isinstance(complete, FileNode) and complete.size == 0 and complete.data() == b""


def test_manifest_json(view: View, corpus: Corpus) -> None:
    raw = cat_bytes(view, f"plans/{corpus.plan}/manifest.json")
    assert raw == cat_bytes(make_view(corpus.root.parent / "index.sqlite"), "plans/" +
                            f"{corpus.plan}/manifest.json")  # fmt: skip
    doc = json.loads(raw)
    assert list(doc) == sorted(doc) == ["label", "members", "missing", "plan", "truncated"]
    assert doc["plan"] == corpus.plan and doc["label"] == "Plan\tone"
    assert doc["truncated"] is False
    refs = {m["sop_instance_uid"] for m in doc["members"] if m["folder"] == "references"}
    assert refs == corpus.package
    by_uid = {(m["folder"], m["sop_instance_uid"]): m for m in doc["members"]}
    dose = by_uid[("referenced-by", corpus.dose)]
    assert dose["direction"] == "reverse" and dose["provenance"] == "explicit"
    assert dose["name"] == f"RTDOSE_{corpus.dose}.dcm"
    assert dose["source_path"] == corpus.files[corpus.dose]
    assert set(dose) == {
        "sop_instance_uid", "name", "modality", "sop_class_uid", "role", "attribute", "via",
        "direction", "provenance", "folder", "source_path", "note",
    }  # fmt: skip
    assert by_uid[("registrations", corpus.reg)]["role"] == "registration"
    assert [m["uid"] for m in doc["missing"]] == [corpus.missing_dose]
    assert doc["missing"][0]["series_uid"] == corpus.dose_series


def test_objects(view: View, corpus: Corpus) -> None:
    assert set(names(view, "objects")) == corpus.safe_instances
    base = f"objects/{corpus.ct[0]}"
    assert names(view, base) == ["missing.txt", "referenced-by", "references", "self.dcm"]
    assert set(names(view, f"{base}/referenced-by")) == {
        f"RTSTRUCT_{corpus.rs1}.dcm",
        f"RTSTRUCT_{corpus.rs2}.dcm",
    }
    assert names(view, f"{base}/references") == []
    rs = f"objects/{corpus.rs1}"
    assert len(names(view, f"{rs}/references")) == 4
    node = view.lookup(f"{rs}/self.dcm")
    assert isinstance(node, FileNode) and node.real_path == corpus.files[corpus.rs1]
    with pytest.raises(NotFound):
        view.lookup(f"{rs}/registrations")


def test_status_and_rejected(view: View, corpus: Corpus) -> None:
    assert names(view, ".dicomfs") == ["plans.tsv", "rejected.txt", "status.json"]
    status = json.loads(cat_bytes(view, ".dicomfs/status.json"))
    assert status["instances"] == len(corpus.files)
    assert status["rejected_files"] == len(corpus.rejected)
    assert status["mount_time_ns"] == MOUNT_NS and status["plans"] == 1
    lines = cat_bytes(view, ".dicomfs/rejected.txt").decode("utf-8").splitlines()
    assert len(lines) == len(corpus.rejected)
    root = str(corpus.root)
    assert f"{root}/bad\\tname\\n.dcm\tnot_dicom\tno DICM prefix\\tand no SOP UID" in lines
    assert f"{root}/caf\\xe9.txt\tnot_dicom\tno DICM prefix\\tand no SOP UID" in lines
    assert all(line.count("\t") == 2 for line in lines)


# -- names are safe -------------------------------------------------------------------


def test_no_name_is_ever_unsafe(view: View, corpus: Corpus) -> None:
    seen = list(walk(view))
    assert len(seen) > 50
    for _, name in seen:
        assert NAME.fullmatch(name) and name not in (".", "..")
        assert HOSTILE_UID not in name and LONG_UID not in name and name != UNSAFE_SERIES
    node = view.lookup(f"by-sop/{synthetic_name(HOSTILE_UID)}")
    assert isinstance(node, FileNode) and node.real_path == corpus.files[HOSTILE_UID]
    assert synthetic_name(HOSTILE_UID) == "invalid-uid-" + _sha16(HOSTILE_UID) + ".dcm"


def _sha16(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize(
    "path",
    [
        "..", "../etc/passwd", "by-sop/../../etc", "by-sop/..", "by-sop/.",
        "by-sop/" + "1" * 5000, "by-sop/1.2\x00.dcm", "by-sop/1.2\n", "by-sop/1.2/3",
        "by-sop/1.02.dcm", f"by-sop/{HOSTILE_UID}", f"objects/{LONG_UID}", "by-sop/ 1.2",
        "plans/1.2.3/references/CT_1.2.dcm", "nope", ".dicomfs/x", "by-sop/invalid-uid-0.dcm",
        "by-series/1.2\n", "by-sop/1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21.22.23",
    ],
)  # fmt: skip
def test_hostile_paths_are_not_found(view: View, path: str) -> None:
    with pytest.raises(NotFound):
        view.lookup(path)


def test_a_file_is_not_a_directory(view: View, corpus: Corpus) -> None:
    for path in (f"by-sop/{corpus.plan}.dcm/x", f"plans/{corpus.plan}/plan.dcm/a/b"):
        with pytest.raises(NotADirectory):
            view.lookup(path)
    with pytest.raises(NotADirectory):
        view.listdir(f"by-sop/{corpus.plan}.dcm")
    with pytest.raises(IsADirectory):
        cat_bytes(view, "by-sop")


_parts = st.sampled_from(
    ["by-sop", "plans", "objects", "by-series", "by-study", ".dicomfs", "references",
     "plan.dcm", "missing.txt", "self.dcm", "..", ".", "", "1.2.826.0.1.3680043.10.543.5.1",
     "1.2.826.0.1.3680043.10.543.2.1.dcm", "status.json", "\x00", "CT_1.2.dcm"]
)  # fmt: skip


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=st.one_of(st.text(max_size=300), st.lists(_parts | st.text(max_size=20)).map("/".join)))
def test_any_path_resolves_or_is_not_found(view: View, path: str) -> None:
    try:
        node = view.lookup(path)
    except (NotFound, NotADirectory):
        return
    assert isinstance(node, DirNode | FileNode)
    if isinstance(node, DirNode):
        for name, _ in view.listdir(path):
            assert NAME.fullmatch(name) and name not in (".", "..")


@settings(max_examples=300, deadline=None)
@given(uid=st.text(max_size=100), modality=st.text(max_size=30))
def test_uid_to_name_mapping_is_always_a_safe_name(uid: str, modality: str) -> None:
    name = synthetic_name(uid)
    assert NAME.fullmatch(name) and "/" not in name and "\x00" not in name
    assert re.fullmatch(r"[A-Z0-9]{1,16}", modality_name(modality))


# -- cat, ls, sources ------------------------------------------------------------------


def test_cat_and_ls(view: View, corpus: Corpus) -> None:
    for uid in corpus.safe_instances:
        assert cat_bytes(view, f"by-sop/{uid}.dcm") == Path(corpus.files[uid]).read_bytes()
    short = format_listing(view, f"plans/{corpus.plan}", long=False)
    assert short.splitlines()[0] == "manifest.json" and not short.endswith("\n")
    long = format_listing(view, f"by-sop/{corpus.secret}.dcm", long=True)
    size = os.path.getsize(corpus.files[corpus.secret])
    assert long.startswith("-r-------- 1 root ") and f" {size} " in long
    assert format_listing(view, "/", long=True).startswith("drwxr-x--- 2 root ")


def test_open_source_refuses_a_changed_file(view: View, corpus: Corpus, tmp_path: Path) -> None:
    node = view.lookup(f"by-sop/{corpus.ct[1]}.dcm")
    assert isinstance(node, FileNode)
    fd = open_source(node)
    os.close(fd)
    copy = tmp_path / "copy.dcm"
    shutil.copy2(node.real_path or "", copy)
    moved = FileNode(**{**_as_dict(node), "real_path": str(copy)})
    with pytest.raises(SourceChanged):
        open_source(moved)  # another inode
    link = tmp_path / "link.dcm"
    link.symlink_to(node.real_path or "")
    with pytest.raises(SourceChanged):
        open_source(FileNode(**{**_as_dict(node), "real_path": str(link)}))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fifo_st = os.lstat(fifo)
    swapped = {"real_path": str(fifo), "inode": fifo_st.st_ino, "dev": fifo_st.st_dev}
    with pytest.raises(SourceChanged):  # and does not block
        open_source(FileNode(**{**_as_dict(node), **swapped}))
    with pytest.raises(SourceChanged):
        open_source(FileNode(**{**_as_dict(node), "real_path": str(tmp_path / "gone")}))


def _as_dict(node: FileNode) -> dict[str, object]:
    return {f: getattr(node, f) for f in FileNode.__slots__}  # type: ignore[attr-defined]


def test_view_reports_changed_sources(index: Path, corpus: Corpus, tmp_path: Path) -> None:
    reported: list[str] = []
    v = View(lambda: IndexReader(index), dir_uid=0, dir_gid=0, mount_time_ns=0,
             on_source_changed=reported.append)  # fmt: skip
    node = v.lookup(f"by-sop/{corpus.ct[1]}.dcm")
    assert isinstance(node, FileNode)
    gone = FileNode(**{**_as_dict(node), "mtime_ns": node.mtime_ns + 1})
    with pytest.raises(SourceChanged):
        v.open_file(gone)
    assert reported == [node.real_path]


# -- freshness and threads -----------------------------------------------------------------


def test_a_file_indexed_after_a_failed_lookup_is_visible(tmp_path: Path) -> None:
    corpus = build_corpus(tmp_path / "src")
    index = tmp_path / "index.sqlite"
    late = corpus.results.pop(0)  # the first CT slice arrives late
    write_index(index, corpus)
    uid = late.result.sop_instance_uid  # type: ignore[union-attr]
    v = make_view(index, ttl=0.3)
    with pytest.raises(NotFound):
        v.lookup(f"by-sop/{uid}.dcm")
    assert f"{uid}.dcm" not in names(v, "by-sop")
    writer = IndexWriter(index)
    writer.apply([late])
    writer.close()
    assert isinstance(v.lookup(f"by-sop/{uid}.dcm"), FileNode)  # no negative caching
    wait_for(lambda: f"{uid}.dcm" in names(v, "by-sop"), 5, "the cached listing to expire")
    v.close()


def test_one_reader_per_thread(index: Path, corpus: Corpus) -> None:
    made: list[int] = []

    def factory() -> IndexReader:
        made.append(threading.get_native_id())
        return IndexReader(index)

    v = View(factory, dir_uid=0, dir_gid=0, mount_time_ns=0, cache_ttl=0)
    errors: list[BaseException] = []

    # All alive at once until each has its reader: a new thread takes over the reader
    # of one that has ended (``view.readers``), never that of one that runs.
    together = threading.Barrier(8)

    def work() -> None:
        try:
            together.wait(10)
            v.lookup(f"by-sop/{corpus.ct[0]}.dcm")
            together.wait(10)
            for _ in range(20):
                v.listdir(f"plans/{corpus.plan}/references")
                v.lookup(f"by-sop/{corpus.ct[0]}.dcm")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(made) == len(set(made)) == 8
    v.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Demo patients of our own: the session-wide demo tree is shared with tests that edit it."""
    from dicomfs.demo.patients import write_demo
    from dicomfs.live.scan import reconcile

    base = tmp_path_factory.mktemp("view-demo")
    demo_set = write_demo(base / "demo", patients=2, ct_slices=4, hostile=True)
    writer = IndexWriter(base / "index.sqlite")
    reconcile(writer, [demo_set.root], workers=1)
    writer.close()
    return demo_set, base / "index.sqlite"


def test_reindexed_source_is_served_with_its_new_stat(tmp_path: Path) -> None:
    corpus = build_corpus(tmp_path / "src")
    index = write_index(tmp_path / "index.sqlite", corpus)
    uid = corpus.ct[1]
    path = Path(corpus.files[uid])
    data = path.read_bytes()
    path.write_bytes(data[:-4] + b"ABCD")
    v = make_view(index)
    node = v.lookup(f"by-sop/{uid}.dcm")
    assert isinstance(node, FileNode)
    with pytest.raises(SourceChanged):
        cat_bytes(v, f"by-sop/{uid}.dcm")
    reindex(index, corpus, uid)
    assert cat_bytes(v, f"by-sop/{uid}.dcm").endswith(b"ABCD")


# -- the demo patients (parser + scanner output) ----------------------------------------------


def test_demo_plan_folders_mirror_the_graph(demo) -> None:  # type: ignore[no-untyped-def]
    demo_set, demo_index = demo
    v = make_view(demo_index)
    reader = IndexReader(demo_index)
    try:
        for patient in demo_set.patients:
            base = f"plans/{patient.plan_uid}"
            pkg = graph.package(reader, patient.plan_uid)
            for folder, members in (
                ("references", pkg.references),
                ("referenced-by", pkg.referenced_by),
                ("registrations", pkg.registrations),
            ):
                wanted = {member_name(m.instance) for m in members} - {None}
                assert set(names(v, f"{base}/{folder}")) == wanted
            uids = {n.split("_", 1)[1][:-4] for n in names(v, f"{base}/references")}
            assert patient.plan_structure_set_uid in uids
            assert not uids & set(patient.structure_set_uids[1:])  # same CT, not named
            for name, node in v.listdir(f"{base}/references"):
                assert isinstance(node, FileNode)
                assert Path(node.real_path or "").read_bytes() == cat_bytes(
                    v, f"{base}/references/{name}"
                )
        listed = "\n".join(f"{p}/{n}" for p, n in walk(v))
        for uid in demo_set.hostile_uids.values():
            if not re.fullmatch(r"[0-9.]{1,64}", uid):
                assert uid not in listed
                assert synthetic_name(uid) in names(v, "by-sop") or uid not in {
                    i.sop_uid for i in reader.all_instances()
                }
    finally:
        reader.close()
        v.close()
