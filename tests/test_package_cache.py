"""Plan packages are kept until ingest touches them, not for a TTL (issue 13, ``view.packages``).

``find MNT/plans -maxdepth 2`` stats every plan folder's ``missing.txt`` and
``manifest.json``, whose sizes are those of their content: a package per
plan. Kept per index generation, a package is computed once and stays
valid until a batch touches something it was computed from (the index's
log of changes); the sizes alone stay for many more plans
than whole packages, so listing a plan folder does not rebuild its package.
"""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuse_helpers import Corpus, build_corpus, write_index

from dicomfs.dicom.records import FileResult, Instance
from dicomfs.index import IndexReader, IndexWriter
from dicomfs.index.schema import GENERATION
from dicomfs.view.nodes import FileNode, NotFound
from dicomfs.view.tree import View

HOUR = 3600.0  # the TTL caches never expire during a test: only the index can


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("packages") / "src")


@pytest.fixture
def view(corpus: Corpus, tmp_path: Path) -> Iterator[View]:
    index = write_index(tmp_path / "index.sqlite", corpus)
    v = View(lambda: IndexReader(index), dir_uid=0, dir_gid=0, mount_time_ns=0, cache_ttl=HOUR)
    yield v
    v.close()


def _arrive_missing_dose(view: View, corpus: Corpus, tmp_path: Path) -> None:
    """The dose the plan names but nobody wrote arrives: a copy of the other dose, new UID."""
    dose = next(r for r in corpus.results if r.stat.path == corpus.files[corpus.dose])
    assert isinstance(dose.result, Instance)
    path = tmp_path / "late-dose.dcm"
    shutil.copyfile(dose.stat.path, path)
    late = FileResult(
        dataclasses.replace(dose.stat, path=str(path), inode=path.stat().st_ino),
        dataclasses.replace(dose.result, sop_instance_uid=corpus.missing_dose),
    )
    writer = IndexWriter(view.reader.path)
    try:
        writer.apply([late])
    finally:
        writer.close()


def test_a_package_stays_until_ingest_writes_and_changes_at_once_when_it_does(
    view: View, corpus: Corpus, tmp_path: Path
) -> None:
    folder = f"plans/{corpus.plan}"
    missing = view.lookup(f"{folder}/missing.txt")
    assert isinstance(missing, FileNode) and corpus.missing_dose.encode() in missing.data()
    assert missing.size == len(missing.data())
    before = view.reader.meta(GENERATION)
    assert before is not None
    kept = view._packages.view(corpus.plan)
    assert view._packages.view(corpus.plan) is kept  # computed once
    _arrive_missing_dose(view, corpus, tmp_path)
    assert view.reader.meta(GENERATION) != before
    now = view.lookup(f"{folder}/missing.txt")  # no TTL to wait for: the index moved
    assert isinstance(now, FileNode) and now.size == 0 and now.data() == b""
    assert view._packages.view(corpus.plan) is not kept
    assert f"RTDOSE_{corpus.missing_dose}.dcm" in dict(view.listdir(f"{folder}/references"))


def test_a_plan_folder_is_listed_from_kept_sizes_without_its_package(
    view: View, corpus: Corpus
) -> None:
    folder = f"plans/{corpus.plan}"
    first = {n: node.size for n, node in view.listdir(folder) if isinstance(node, FileNode)}
    view._packages._views._data.clear()  # whole packages evicted, as by 64 other plans
    view._cache._data.clear()  # and the listing cache
    again = {n: node.size for n, node in view.listdir(folder) if isinstance(node, FileNode)}
    assert again == first and first["manifest.json"] > 0
    assert not view._packages._views._data, "listing the folder rebuilt the package"
    manifest = view.lookup(f"{folder}/manifest.json")
    assert isinstance(manifest, FileNode) and len(manifest.data()) == first["manifest.json"]
    assert view._packages._views._data  # made again when read


def _write(view: View, results: list[FileResult], removed: tuple[str, ...] = ()) -> None:
    writer = IndexWriter(view.reader.path)
    try:
        writer.apply(results, removed=removed)
    finally:
        writer.close()


def _copy_as(corpus: Corpus, tmp_path: Path, uid: str, **fields: str) -> FileResult:
    """The file of ``uid`` copied under a new name, indexed with ``fields`` replaced."""
    original = next(r for r in corpus.results if r.stat.path == corpus.files[uid])
    assert isinstance(original.result, Instance)
    path = tmp_path / f"copy-{fields['sop_instance_uid']}.dcm"
    shutil.copyfile(original.stat.path, path)
    stat = dataclasses.replace(original.stat, path=str(path), inode=path.stat().st_ino)
    return FileResult(stat, dataclasses.replace(original.result, **fields))


def _unrelated(corpus: Corpus, tmp_path: Path, uid: str) -> FileResult:
    """An image of another patient: a copy of the MR with UIDs of its own."""
    return _copy_as(
        corpus, tmp_path, corpus.mr,
        sop_instance_uid=uid, series_uid=f"{uid}.2", study_uid=f"{uid}.3",
        frame_of_reference_uid=f"{uid}.4", patient_id="OTHER",
    )  # fmt: skip


def test_a_package_stays_across_batches_that_touch_nothing_it_was_computed_from(
    view: View, corpus: Corpus, tmp_path: Path
) -> None:
    """A receiver's batch of another patient keeps every plan's package (``index.changes``)."""
    kept, head = view._packages.view(corpus.plan), view._packages.head(corpus.plan)
    before = view.reader.meta(GENERATION)
    _write(view, [_unrelated(corpus, tmp_path, "2.25.101")])
    assert view.reader.meta(GENERATION) != before
    assert view._packages.view(corpus.plan) is kept
    assert view._packages.head(corpus.plan) is head
    assert "2.25.101.dcm" in dict(view.listdir("by-sop"))  # the batch itself is served


@pytest.mark.parametrize("write", ["a member's file goes", "a new dose names the plan"])
def test_a_batch_that_touches_a_package_makes_it_again(
    view: View, corpus: Corpus, tmp_path: Path, write: str
) -> None:
    folder = f"plans/{corpus.plan}"
    kept = view._packages.view(corpus.plan)
    if write == "a member's file goes":
        _write(view, [], removed=(corpus.files[corpus.rs1],))
        shown = view.lookup(f"{folder}/missing.txt")
        assert isinstance(shown, FileNode) and corpus.rs1.encode() in shown.data()
    else:
        _write(view, [_copy_as(corpus, tmp_path, corpus.dose, sop_instance_uid="2.25.201")])
        shown = view.lookup(f"{folder}/manifest.json")
        assert isinstance(shown, FileNode) and b"2.25.201" in shown.data()
    assert view._packages.view(corpus.plan) is not kept


def test_a_package_is_made_again_when_the_log_cannot_tell(
    view: View, corpus: Corpus, tmp_path: Path
) -> None:
    """The log rolled past the generation a package was kept at: computed again, as before."""
    kept = view._packages.view(corpus.plan)
    conn = sqlite3.connect(view.reader.path)
    _write(view, [_copy_as(corpus, tmp_path, corpus.mr, sop_instance_uid="2.25.301")])
    conn.execute("DELETE FROM changes")  # as KEPT_ROWS later batches would have
    conn.commit()
    conn.close()
    assert view._packages.view(corpus.plan) is not kept


def test_a_plan_folder_listing_is_kept_with_its_package(
    view: View, corpus: Corpus, tmp_path: Path
) -> None:
    """Listed again after the view's TTL, a plan folder is not made again (find MNT/plans)."""
    folder = f"plans/{corpus.plan}"
    first = next(view.pages(folder))
    view._cache._data.clear()  # the TTL passed
    assert next(view.pages(folder)) is first
    _write(view, [_unrelated(corpus, tmp_path, "2.25.401")])
    assert next(view.pages(folder)) is first  # a batch of another patient
    _write(view, [_copy_as(corpus, tmp_path, corpus.mr, sop_instance_uid="2.25.402")])
    assert next(view.pages(folder)) is not first  # an image on the frame of the plan's anatomy
    _write(view, [], removed=(corpus.files[corpus.plan],))  # the plan itself goes
    with pytest.raises(NotFound):
        view.pages(folder)
