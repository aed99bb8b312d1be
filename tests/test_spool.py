"""The reconcile's to-do list: sorted like a list, on disk past its bound, never left behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomfs.errors import IndexUnavailableError
from dicomfs.live.spool import Spool, chunks

Row = tuple[bool, int, str]
rows = st.lists(
    st.tuples(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=12)),
    max_size=200,
)


def names_in(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_rows_that_fit_stay_in_memory(tmp_path: Path) -> None:
    with Spool[Row](str(tmp_path)) as spool:
        for row in [(True, 3, "b"), (False, 9, "z"), (True, 1, "a")]:
            spool.add(row)
        assert list(spool) == [(False, 9, "z"), (True, 1, "a"), (True, 3, "b")]
        assert len(spool) == 3 and spool.runs == 0


def test_past_the_bound_rows_go_to_nameless_run_files_and_are_merged(tmp_path: Path) -> None:
    """Run files have no name: a process killed half-way leaves nothing to clean up."""
    added = [(i % 3 == 0, (i * 7919) % 101, f"p{i:04d}") for i in range(100)]
    on_disk = os.statvfs(tmp_path)
    spool = Spool[Row](str(tmp_path), run_rows=10, block_rows=4, max_runs=3)
    for row in added:
        spool.add(row)
        assert spool.runs < 3  # merged into one at three
    assert spool.runs >= 1 and names_in(tmp_path) == []
    assert os.statvfs(tmp_path).f_ffree < on_disk.f_ffree  # the runs hold inodes there
    assert list(spool) == sorted(added) and len(spool) == 100
    spool.close()
    assert names_in(tmp_path) == []


def test_undecodable_file_names_come_back_as_they_went_in(tmp_path: Path) -> None:
    names = [os.fsdecode(b"caf\xe9.dcm"), "plain.dcm", os.fsdecode(b"\xff\xfe")]
    with Spool[str](str(tmp_path), run_rows=1) as spool:
        for name in names:
            spool.add(name)
        assert spool.runs == 3
        assert [os.fsencode(n) for n in spool] == sorted(os.fsencode(n) for n in names)


@settings(max_examples=60, deadline=None)
@given(added=rows, run_rows=st.integers(1, 20), block_rows=st.integers(1, 7))
def test_any_rows_come_back_sorted(added: list[Row], run_rows: int, block_rows: int) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        with Spool[Row](name, run_rows=run_rows, block_rows=block_rows, max_runs=2) as spool:
            for row in added:
                spool.add(row)
            assert list(spool) == sorted(added)
        assert names_in(folder) == []


def test_chunks_cover_everything_in_order() -> None:
    assert list(chunks(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunks([], 3)) == []


def test_a_folder_it_cannot_write_in_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    spool = Spool[str](str(missing), run_rows=1)
    with pytest.raises(IndexUnavailableError, match=r"beside the index, in .*gone: No such file"):
        spool.add("a.dcm")
    spool.close()
