"""The log of what each batch touched (``index.changes``), written by the real writer into SQLite.

Every batch that moves the generation logs the UIDs it added or removed,
with their series, study, frame of reference, class and reference targets;
a reader tells from the log whether anything a kept answer was computed
from changed between two generations, and says "cannot tell" when the log
does not reach back.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomfs.dicom.records import Edge, FileResult, FileStat, Instance, Level, Role
from dicomfs.index import IndexWriter, changes
from dicomfs.index.schema import GENERATION

CT = "1.2.840.10008.5.1.4.1.1.2"
RS = "1.2.840.10008.5.1.4.1.1.481.3"


def _file(tmp_path: Path, name: str) -> FileStat:
    path = tmp_path / name
    path.write_bytes(name.encode() * 10)
    return FileStat.from_stat(str(path), os.stat(path))


def _ct(tmp_path: Path, uid: str, series: str = "9.1", frame: str = "9.2") -> FileResult:
    return FileResult(
        _file(tmp_path, f"{uid}.dcm"),
        Instance(CT, uid, "9.0", series, modality="CT", frame_of_reference_uid=frame),
    )


def _rs(tmp_path: Path, uid: str, targets: list[str]) -> FileResult:
    edges = tuple(Edge(t, Level.INSTANCE, Role.IMAGE, "3006,0010") for t in targets)
    return FileResult(
        _file(tmp_path, f"{uid}.dcm"),
        Instance(RS, uid, "9.0", "8.1", modality="RTSTRUCT", edges=edges),
    )


def _depends(*uids: str) -> array[int]:
    return array("q", sorted({hash(u) for u in uids}))


def _generation(writer: IndexWriter) -> str:
    value = writer.meta(GENERATION)
    assert value is not None
    return value


@pytest.fixture
def writer(index_at: Path | str) -> Iterator[IndexWriter]:
    """A new index in each backend (``conftest.index_at``)."""
    opened = IndexWriter(index_at)
    yield opened
    opened.close()


def test_a_batch_logs_what_it_added_and_what_it_removed(
    writer: IndexWriter, tmp_path: Path
) -> None:
    writer.apply([_ct(tmp_path, "1.1"), _rs(tmp_path, "2.1", ["1.1", "1.9"])])
    start = _generation(writer)
    writer.apply([_ct(tmp_path, "1.2", series="9.5", frame="9.6")])
    added = _generation(writer)
    found = writer.changes(start, added)
    assert found is not None
    assert found.touches(_depends("1.2")) and found.touches(_depends("9.5"))
    assert found.touches(_depends("9.6")) and found.touches(_depends(CT))
    assert not found.touches(_depends("1.1", "2.1", "1.9", "9.1"))  # untouched by this batch
    assert found.touches(None)  # "depends on everything" is touched by any batch

    writer.apply([], removed=[str(tmp_path / "2.1.dcm")])  # the structure set goes
    removed = writer.changes(added, _generation(writer))
    assert removed is not None
    assert removed.touches(_depends("2.1")) and removed.touches(_depends("1.9"))  # its target
    assert not removed.touches(_depends("1.2"))
    both = writer.changes(start, _generation(writer))
    assert both is not None and both.touches(_depends("1.2")) and both.touches(_depends("2.1"))
    assert writer.changes(_generation(writer), _generation(writer)) == changes.Changes(frozenset())


def test_a_promoted_copy_is_logged_with_its_own_references(
    writer: IndexWriter, tmp_path: Path
) -> None:
    first = _rs(tmp_path, "2.1", ["1.1"])
    second = _rs(tmp_path, "2.1-copy", ["1.7"])  # same UID, other references
    assert isinstance(second.result, Instance)
    second = FileResult(second.stat, Instance(RS, "2.1", "9.0", "8.1", edges=second.result.edges))
    writer.apply([first, second])
    start = _generation(writer)
    writer.apply([], removed=[first.stat.path])  # the copy serves now, naming 1.7
    found = writer.changes(start, _generation(writer))
    assert found is not None and found.touches(_depends("1.7")) and found.touches(_depends("1.1"))


def test_the_log_is_bounded_and_says_when_it_cannot_tell(
    writer: IndexWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(changes, "KEPT_ROWS", 3)
    generations = []
    for n in range(6):
        writer.apply([_ct(tmp_path, f"1.{n}")])
        generations.append(_generation(writer))
    assert writer.rows("SELECT count(*) FROM changes") == [(3,)]
    assert writer.changes(generations[0], generations[-1]) is None  # rolled off
    recent = writer.changes(generations[2], generations[-1])
    assert recent is not None and recent.touches(_depends("1.5"))
    assert not recent.touches(_depends("1.2"))  # logged before generations[2]
    assert writer.changes(generations[-1], "0") is None  # not a later generation
    assert writer.changes("not a number", generations[-1]) is None


def test_a_reader_records_what_its_queries_asked_for(writer: IndexWriter, tmp_path: Path) -> None:
    writer.apply([_ct(tmp_path, "1.1"), _rs(tmp_path, "2.1", ["1.1"])])
    with writer.recording() as recorded:
        writer.instance("2.1")
        with writer.recording() as inner:
            writer.forward_edges("2.1")
            writer.series_instances("9.1")
        assert inner.depends == _depends("2.1", "9.1")
    assert recorded.depends == _depends("2.1", "9.1")  # the inner recording counts outside too
    with writer.recording() as everything:
        writer.instance("2.1")
        writer.all_instances()  # no UID: could depend on any row
    assert everything.depends is None
