"""The hostile corpus (dicomfs.demo.hostile) through the real scanner, index and view.

Cases (docs/reliability.md): A7 A11 B1 C1 C2 C3 C4 D1 D2 D3 D4 I1. Files are
written by ``write_hostile_corpus`` / ``write_hostile_tree``, each with the
outcome it must have; the scan runs with a process pool, so a file that
kills or blocks a parse worker would show here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import pytest
from fuse_helpers import ensure_user, public_dir, wait_for
from pydicom import dcmread
from rel_helpers import dicomfs, dicomfs_as, remove_tree

from dicomfs.demo import (
    BENIGN_DUPLICATE,
    CONFLICT,
    INSTANCE,
    UNSAFE_UID,
    HostileCorpus,
    HostileTree,
    write_hostile_corpus,
    write_hostile_tree,
)
from dicomfs.dicom.records import RejectKind, is_safe_uid
from dicomfs.index import IndexReader, IndexWriter
from dicomfs.index.pages import uid_page
from dicomfs.live import spool
from dicomfs.live.scan import ScanReport, reconcile
from dicomfs.service.config import Settings
from dicomfs.service.serve import LiveIndex
from dicomfs.view.listing import cat_bytes
from dicomfs.view.names import synthetic_name
from dicomfs.view.nodes import DirNode, FileNode, NotFound
from dicomfs.view.tree import View

NAME = re.compile(r"[A-Za-z0-9._-]{1,255}")
REJECTIONS = {kind.value for kind in RejectKind}
pytestmark = pytest.mark.filterwarnings("ignore:Failed to decode byte string")
USER = "dicomfs-rel-user"


def full_path(root: Path, relative: str) -> str:
    return os.fsdecode(os.fsencode(root) + b"/" + os.fsencode(relative))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> HostileCorpus:
    return write_hostile_corpus(tmp_path_factory.mktemp("corpus") / "src")


@pytest.fixture(scope="module")
def corpus_index(
    corpus: HostileCorpus, build_index: Callable[[Path, Sequence[Path], int], ScanReport]
) -> Path:
    index = corpus.root.parent / "index.sqlite"
    report = build_index(index, [corpus.root], 2)  # a process pool (> 64 files)
    assert report.seen == len(corpus.expected)
    return index


@pytest.fixture
def reader(corpus_index: Path, open_reader: Callable[[Path], IndexReader]) -> IndexReader:
    return open_reader(corpus_index)


@pytest.fixture
def view(corpus_index: Path) -> Iterator[View]:
    opened = View(lambda: IndexReader(corpus_index), dir_uid=0, dir_gid=0, mount_time_ns=0)
    yield opened
    opened.close()


def walk(view: View, path: str = "") -> Iterator[tuple[str, str, DirNode | FileNode]]:
    for name, node in view.listdir(path):
        yield path, name, node
        if isinstance(node, DirNode):
            yield from walk(view, f"{path}/{name}".lstrip("/"))


# -- parser and index: B1 D1 D2 D3 D4 C1 C2 C3 ------------------------------------------------


def test_every_hostile_file_ends_as_required(corpus: HostileCorpus, reader: IndexReader) -> None:
    """Truncations, bomb, nesting, huge lengths, wrong VRs, bad UIDs: each its outcome."""
    assert len(corpus.paths(RejectKind.TRUNCATED.value)) >= 40  # "truncated at many offsets"
    rejected = {row.path: row for row in reader.rejected()}
    indexed = {i.file.path: i for i in reader.all_instances()}
    for relative, outcome in corpus.expected.items():
        path = full_path(corpus.root, relative)
        state = reader.file_state(path)
        if outcome in REJECTIONS:
            assert state == "rejected", (relative, state)
            assert rejected[path].kind == outcome, (relative, rejected[path])
            assert rejected[path].reason  # a reason for humans, never empty
        else:
            assert state == "indexed", (relative, state, rejected.get(path))
        if outcome in (INSTANCE, UNSAFE_UID):
            inst = indexed[path]
            assert inst.sop_uid == corpus.uids.get(relative, inst.sop_uid).rstrip("\x00")
            assert inst.uid_safe == (outcome == INSTANCE), relative
            assert set(corpus.flags.get(relative, ())) <= set(inst.flags), (relative, inst.flags)


def test_unsafe_uids_are_kept_flagged_and_never_names(
    corpus: HostileCorpus, reader: IndexReader, view: View
) -> None:
    """C1, including the decision on leading zeros ("1.2.03.4"): kept, flagged, no name."""
    unsafe = corpus.paths(UNSAFE_UID)
    assert {"uids/leading-zero.dcm", "uids/passwd.dcm", "uids/dotdot.dcm"} <= set(unsafe)
    listed = dict(view.listdir("by-sop"))
    objects = {name for name, _ in view.listdir("objects")}
    for relative in unsafe:
        uid = corpus.uids[relative]
        assert not is_safe_uid(uid)
        assert "unsafe_sop_uid" in reader.instance(uid).flags  # type: ignore[union-attr]
        name = synthetic_name(uid)
        node = listed[name]  # reachable only by its synthetic name
        assert isinstance(node, FileNode) and node.real_path == full_path(corpus.root, relative)
        assert cat_bytes(view, f"by-sop/{name}") == Path(node.real_path).read_bytes()
        assert f"{uid}.dcm" not in listed and uid not in objects
    for path in ("by-sop/1.2.03.4.dcm", "by-sop/1.2.03.4", "objects/1.2.03.4", "by-sop/..dcm"):
        with pytest.raises(NotFound):
            view.lookup(path)


def test_path_like_study_and_series_get_no_folder(
    corpus: HostileCorpus, reader: IndexReader, view: View
) -> None:
    uid = corpus.uids["uids/path-like-study-and-series.dcm"]
    inst = reader.instance(uid)
    assert inst is not None and (inst.study_uid, inst.series_uid) == ("..", "../../tmp")
    assert f"{uid}.dcm" in {name for name, _ in view.listdir("by-sop")}  # its own UID is fine
    assert set(uid_page(reader, "study_uid", limit=-1)) >= {".."}
    assert all(is_safe_uid(name) for name, _ in view.listdir("by-study"))
    assert all(is_safe_uid(name) for name, _ in view.listdir("by-series"))


def test_duplicates_first_copy_serves_conflicts_are_recorded(
    corpus: HostileCorpus, reader: IndexReader, view: View
) -> None:
    """C2 (same UID, other bytes) and C3 (same UID under another series, study, patient)."""
    [(original, copies)] = corpus.duplicates.items()
    uid = corpus.uids[original]
    served = reader.instance(uid)
    assert served is not None and served.file.path == full_path(corpus.root, original)
    assert (served.series_uid, served.study_uid) == (corpus.series_uid, corpus.study_uid)
    assert served.patient_id == "HOSTILE"
    kinds = {c.other_path: c.kind for c in reader.conflicts() if c.sop_uid == uid}
    for copy in copies:
        expected = "benign" if corpus.expected[copy] == BENIGN_DUPLICATE else "conflict"
        assert kinds[full_path(corpus.root, copy)] == expected, copy
    assert sum(corpus.expected[c] == CONFLICT for c in copies) == 4
    # Not re-parented: the other series and study never appear anywhere.
    other_series = str(dcmread(full_path(corpus.root, "dup/other-series.dcm")).SeriesInstanceUID)
    other_study = str(dcmread(full_path(corpus.root, "dup/other-study.dcm")).StudyInstanceUID)
    assert other_series not in uid_page(reader, "series_uid", limit=-1)
    assert other_study not in uid_page(reader, "study_uid", limit=-1)
    with pytest.raises(NotFound):
        view.lookup(f"by-series/{other_series}")
    node = view.lookup(f"by-sop/{uid}.dcm")
    assert isinstance(node, FileNode)
    assert cat_bytes(view, f"by-sop/{uid}.dcm") == (corpus.root / original).read_bytes()


@pytest.mark.parametrize("spilled", [False, True], ids=["in-memory", "spilled"])
def test_a_fresh_index_gives_the_same_answers(
    corpus: HostileCorpus, reader: IndexReader, spilled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """E4/E6: everything in the index, conflicts included, is derived from the files.

    Spilled: the to-do list of the reconcile goes to run files of 3 rows
    (as ten million files would); the oldest copy still serves each UID.
    """
    runs: list[BinaryIO] = []
    if spilled:
        monkeypatch.setattr(spool, "RUN_ROWS", 3)
        monkeypatch.setattr(spool, "MAX_RUNS", 4)
        write = spool.Spool._write

        def counted(self: spool.Spool[object], rows: Iterable[object]) -> BinaryIO:
            runs.append(write(self, rows))
            return runs[-1]

        monkeypatch.setattr(spool.Spool, "_write", counted)
    again = corpus.root.parent / "again.sqlite"
    writer = IndexWriter(again)
    reconcile(writer, [corpus.root], workers=1)
    assert bool(runs) == spilled
    try:
        assert writer.conflicts() == reader.conflicts()
        assert writer.rejected() == reader.rejected()
        assert [i.file.path for i in writer.all_instances()] == [
            i.file.path for i in reader.all_instances()
        ]
    finally:
        writer.close()
        again.unlink()


# -- the view: names, real paths, labels: C1 C4 I1 ------------------------------------------------


def test_every_name_in_the_view_is_safe_and_every_path_is_real(
    corpus: HostileCorpus, reader: IndexReader, view: View
) -> None:
    entries = list(walk(view))
    assert len(entries) > 100
    unsafe_values = [corpus.uids[r] for r in corpus.paths(UNSAFE_UID)]
    for _parent, name, node in entries:
        assert NAME.fullmatch(name) and name not in (".", ".."), name
        assert len(name.encode()) <= 255
        for value in unsafe_values:
            assert len(value) < 3 or value not in name, (value, name)
        if isinstance(node, FileNode) and node.real_path is not None:
            # C4: a served path is a regular file the scan found under the root.
            real = os.fsencode(node.real_path)
            assert real.startswith(os.fsencode(corpus.root) + b"/")
            assert stat.S_ISREG(os.lstat(real).st_mode)
    on_disk = {
        os.fsdecode(os.path.join(d, f))
        for d, _, files in os.walk(os.fsencode(corpus.root))
        for f in files
    }
    assert set(reader.file_keys()) == on_disk


def test_path_like_plan_label_stays_in_the_manifest(corpus: HostileCorpus, view: View) -> None:
    uid = corpus.uids["text/plan-label-path-like.dcm"]
    names = {name for name, _ in view.listdir(f"plans/{uid}")}
    assert names == {
        "plan.dcm",
        "references",
        "referenced-by",
        "registrations",
        "missing.txt",
        "manifest.json",
    }
    manifest = json.loads(cat_bytes(view, f"plans/{uid}/manifest.json"))
    assert manifest["label"].startswith("../x/")


# -- hostile filesystem objects: A7 A11 ----------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[HostileTree]:
    made = write_hostile_tree(tmp_path / "root")
    yield made
    remove_tree(tmp_path)


def scan_with_deadline(index: Path, root: Path, workers: int = 1, timeout: float = 30) -> None:
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        writer = IndexWriter(index)
        try:
            reconcile(writer, [root], workers=workers)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            writer.close()
            done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(timeout), "the scan blocked (a FIFO opened? a symlink loop followed?)"
    assert not errors, errors


def specials(tree: HostileTree) -> dict[str, str]:
    """The tree's symlinks, FIFO, socket and device: full path -> the rejection kind they get.

    They are never opened nor followed, and recorded as rejected (A11); the
    other ``absent`` entries (dotfiles, partial names) are not recorded at all.
    """
    found = {}
    for rel in tree.absent:
        path = full_path(tree.root, rel)
        mode = os.lstat(os.fsencode(path)).st_mode
        if stat.S_ISLNK(mode):
            found[path] = RejectKind.SYMLINK.value
        elif not stat.S_ISREG(mode):
            found[path] = RejectKind.NOT_REGULAR.value
    return found


def test_hostile_tree_is_scanned_without_following_or_blocking(tree: HostileTree) -> None:
    """FIFO, socket, device, symlinks in and out and in loops, 40 levels, odd names."""
    assert not tree.skipped or os.geteuid() != 0, tree.skipped
    index = tree.root.parent / "index.sqlite"
    scan_with_deadline(index, tree.root)
    reader = IndexReader(index)
    try:
        known = set(reader.file_keys())
        expected = {full_path(tree.root, rel) for rel in tree.indexed | tree.unreadable}
        # root reads the chmod-000 file; the specials are recorded; nothing else appears
        assert known == expected | set(specials(tree))
        for rel in tree.indexed:
            inst = reader.instance(tree.uids[rel])
            assert inst is not None and inst.file.path == full_path(tree.root, rel)
        assert reader.instance(tree.uids["outside:escaped.dcm"]) is None
        assert all(os.fsencode(p).startswith(os.fsencode(tree.root) + b"/") for p in known)
        assert {row.path: row.kind for row in reader.rejected()} == specials(tree)
        assert reader.status().instances == len(tree.indexed | tree.unreadable)
    finally:
        reader.close()


@pytest.mark.watch
def test_hostile_tree_while_watching(tree: HostileTree) -> None:
    """The same tree under serve's ingest: start-up scan and live events never block."""
    index = tree.root.parent / "live.sqlite"
    writer = IndexWriter(index)
    settings = Settings(sources=(tree.root,), index=index, settle_seconds=0.05, workers=1)
    live = LiveIndex(settings, writer, tick=0.05)
    live.start()
    reader = IndexReader(index)
    try:
        assert live.wait_watching(30) and live.ingest.wait_idle(30)
        expected = {full_path(tree.root, rel) for rel in tree.indexed | tree.unreadable}
        assert set(reader.file_keys()) == expected | set(specials(tree))
        # New hostile objects while watching, then a sentinel (handled in due order).
        os.mkfifo(tree.root / "d01" / "late-pipe.dcm")
        os.symlink(tree.outside / "escaped.dcm", tree.root / "d01" / "late-link.dcm")
        os.symlink("late-loop.dcm", tree.root / "late-loop.dcm")
        shutil.copy(tree.root / "plain.dcm", tree.root / "sentinel.dcm")
        sentinel = str(tree.root / "sentinel.dcm")
        wait_for(lambda: reader.file_state(sentinel) == "indexed", 30, "the sentinel")
        late = {
            str(tree.root / "d01" / "late-pipe.dcm"): RejectKind.NOT_REGULAR.value,
            str(tree.root / "d01" / "late-link.dcm"): RejectKind.SYMLINK.value,
            str(tree.root / "late-loop.dcm"): RejectKind.SYMLINK.value,
        }
        assert set(reader.file_keys()) == expected | set(specials(tree)) | set(late) | {sentinel}
        # What the watching daemon recorded is what a scan of the tree records.
        assert {row.path: row.kind for row in reader.rejected()} == specials(tree) | late
        assert reader.instance(tree.uids["outside:escaped.dcm"]) is None
        assert live.healthy()
    finally:
        reader.close()
        live.stop()
        writer.close()


def test_as_a_user_unreadable_files_are_rejected_and_unreadable_folders_kept(
    tree: HostileTree,
) -> None:
    """A7: a folder that cannot be read means "unknown", never "deleted"."""
    ensure_user(USER)
    base = public_dir("dicomfs-rel-user-")
    try:
        root = base / "root"
        shutil.copytree(tree.root / "d01", root / "d01", symlinks=True)
        shutil.copy(tree.root / "plain.dcm", root / "plain.dcm")
        shutil.copy(tree.root / "no-access.dcm", root / "no-access.dcm")
        os.chmod(root / "no-access.dcm", 0)
        shutil.chown(base, USER)
        for dirpath, dirnames, filenames in os.walk(base):
            for name in dirnames + filenames:
                os.chown(os.path.join(dirpath, name), _uid(USER), -1, follow_symlinks=False)
        first = dicomfs_as(USER, *_index_args(root, base / "index.sqlite"))
        assert first.returncode == 0, first.stderr
        reader = IndexReader(base / "index.sqlite")
        [row] = reader.rejected()
        assert (row.path, row.kind) == (str(root / "no-access.dcm"), "unreadable")
        assert "EACCES" in row.reason
        assert reader.status().indexed_files == 2
        reader.close()
        os.chmod(root / "d01", 0)  # the deep file below it can no longer be seen
        second = dicomfs_as(USER, *_index_args(root, base / "index.sqlite"))
        assert second.returncode == 0, second.stderr
        assert b"could not read folder" in second.stdout
        reader = IndexReader(base / "index.sqlite")
        deep = [p for p in reader.file_keys() if p.endswith("deep.dcm")]
        assert len(deep) == 1 and reader.file_state(deep[0]) == "indexed"
        reader.close()
    finally:
        remove_tree(base)


def _index_args(root: Path, index: Path) -> list[str]:
    return ["index", str(root), "--index", str(index), "-q", "--workers", "1"]


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def test_dicomfs_index_reports_the_corpus_and_exits_cleanly(corpus: HostileCorpus) -> None:
    """D3: one command over every hostile file: no crash, a summary, `rejected` says why."""
    index = corpus.root.parent / "cli.sqlite"
    done = dicomfs("index", corpus.root, "--index", index, "-q", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert b"rejected" in done.stdout and b"Traceback" not in done.stderr
    listed = dicomfs("rejected", "--index", index, "--json")
    rows = json.loads(listed.stdout)
    assert len(rows) == sum(o in REJECTIONS for o in corpus.expected.values())
    index.unlink()
