"""A source folder merged with the index in path order: the walk's order is the index's.

The re-scan compares a walk with the index row by row (``sources.compare``);
if the two orders ever disagreed, a file would look new on one side and gone
on the other. Names are chosen where str order, component order and byte
order part ways: ``-`` and ``!`` sort before ``/``, ``0`` and ``~`` after
it, a non-UTF-8 byte after every ASCII name, a folder beside files that
share its prefix.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dicomfs.dicom.records import FileStat, stat_change_key
from dicomfs.index import IndexWriter
from dicomfs.live.scan import reconcile
from dicomfs.live.sources import Tally, compare, walk_sorted

# Relative names of regular files; every folder between them is created.
FILES = [
    "a",
    "a-b.dcm",
    "a.dcm",
    "a0",
    "b-x",
    "b.x",
    "b/!.dcm",
    "b/c/deep.dcm",
    "b/c-d.dcm",
    "b/c0.dcm",
    "b0",
    "b~",
    "B",
    "\u00e9.dcm",  # UTF-8: two bytes above every ASCII byte
    os.fsdecode(b"\xff-not-utf8.dcm"),  # kept as a surrogate: sorts as the byte 0xff
    "\uff01.dcm",  # above that surrogate as str, below the byte 0xff as UTF-8
    "z/y/x/w.dcm",
    "~",
]


def make_tree(root: Path) -> list[str]:
    """The files of ``FILES`` (not DICOM: each is indexed as rejected), a FIFO and a link."""
    for rel in FILES:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not a DICOM file " + os.fsencode(rel))
    os.mkfifo(root / "b" / "fifo")
    (root / "b" / "link").symlink_to("c0.dcm")
    names = [*FILES, "b/fifo", "b/link"]
    return sorted((str(root / rel) for rel in names), key=os.fsencode)


def test_walk_yields_paths_in_the_byte_order_of_the_index(tmp_path: Path) -> None:
    root = tmp_path / "src"
    expected = make_tree(root)
    assert expected != sorted(expected)  # str order is not the order that matters here
    unreadable: list[str] = []
    walked = list(walk_sorted(str(root), unreadable))
    assert [st.path for st in walked] == expected and unreadable == []
    assert walked[0] == FileStat.from_stat(expected[0], os.lstat(expected[0]))

    writer = IndexWriter(tmp_path / "i.sqlite")
    reconcile(writer, [root], workers=1)
    # Pages of three rows: the merge crosses many page boundaries.
    rows = list(writer.file_keys_under(f"{root}/", page=3))
    assert [path for path, _ in rows] == expected
    assert dict(rows) == writer.file_keys()
    writer.close()


def test_compare_says_what_differs_and_a_rescan_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "src"
    expected = make_tree(root)
    writer = IndexWriter(tmp_path / "i.sqlite")
    first = reconcile(writer, [root], workers=1)
    assert (first.seen, first.parsed) == (len(expected), len(FILES))
    again = reconcile(writer, [root], workers=1)
    assert (again.skipped, again.parsed, again.removed) == (len(expected), 0, 0)

    (root / "b" / "c" / "deep.dcm").unlink()
    (root / "b" / "c" / "new.dcm").write_bytes(b"new")
    (root / "a0").write_bytes(b"changed, longer than before")
    tally = Tally()
    steps = list(compare(writer, str(root), [], tally))
    differ = {path: (seen is not None, key is not None) for path, seen, key in steps}
    assert [path for path, _, _ in steps] == sorted(differ, key=os.fsencode)
    assert differ[str(root / "b" / "c" / "deep.dcm")] == (False, True)  # gone
    assert differ[str(root / "b" / "c" / "new.dcm")] == (True, False)  # new
    changed = [path for path, seen, _ in steps if isinstance(seen, FileStat)]
    assert changed == [str(root / "a0"), str(root / "b" / "c" / "new.dcm")]
    # Every other file the walk saw is one the index has, unchanged: counted, not yielded.
    assert len(steps) == 3 and tally.unchanged == len(expected) - 2

    third = reconcile(writer, [root], workers=1)
    assert (third.parsed, third.removed, third.skipped) == (2, 1, len(expected) - 2)
    assert [p for p, _ in writer.file_keys_under(f"{root}/")] == sorted(
        [*(p for p in expected if not p.endswith("deep.dcm")), str(root / "b/c/new.dcm")],
        key=os.fsencode,
    )
    writer.close()


def test_file_key_and_file_keys_under_a_prefix(tmp_path: Path) -> None:
    root = tmp_path / "src"
    for rel in ("d1/x", "d1/y/z", "d1-x", "d10/x", "d0", "d1.x"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    writer = IndexWriter(tmp_path / "i.sqlite")
    reconcile(writer, [root], workers=1)
    under = [path for path, _ in writer.file_keys_under(f"{root}/d1/")]
    assert under == [str(root / "d1/x"), str(root / "d1/y/z")]
    path = str(root / "d1" / "y" / "z")
    assert writer.file_key(path) == FileStat.from_stat(path, os.lstat(path)).change_key
    assert writer.file_key(str(root / "d1")) is None  # a folder is not a file
    assert writer.file_key(str(root / "nothing")) is None
    writer.close()


@pytest.mark.watch
def test_a_folder_event_removes_only_what_left_it(tmp_path: Path) -> None:
    """The live look at a folder (``rounds``) merges it with the index the same way."""
    from fuse_helpers import wait_for

    from dicomfs.index import IndexReader
    from dicomfs.live.ingest import Ingest

    root = tmp_path / "src"
    expected = make_tree(root)
    writer = IndexWriter(tmp_path / "i.sqlite")
    reconcile(writer, [root], workers=1)
    reader = IndexReader(tmp_path / "i.sqlite")
    ingest = Ingest(writer, [str(root)], settle=0.0, workers=1)
    ingest.start()
    try:
        shutil.rmtree(root / "b" / "c")
        (root / "b" / "c0.dcm").unlink()
        (root / "b" / "c1.dcm").write_bytes(b"new")
        ingest.check_dir(str(root / "b"))
        wait_for(lambda: ingest.counters.removed == 2, 15, "two files removed")
        assert ingest.wait_idle(15)
        left = [p for p in expected if not p.endswith(("deep.dcm", "/c0.dcm"))]
        assert [p for p, _ in reader.file_keys_under(f"{root}/")] == sorted(
            [*left, str(root / "b" / "c1.dcm")], key=os.fsencode
        )
        assert ingest.counters.parsed == 1  # only the new file; the others were unchanged
    finally:
        ingest.stop()
        reader.close()
        writer.close()


def test_the_change_key_of_a_stat_is_that_of_its_record(tmp_path: Path) -> None:
    """A re-scan compares keys made without a FileStat: the same key, for files and specials."""
    regular = tmp_path / "a.dcm"
    regular.write_bytes(b"x" * 10)
    os.chmod(regular, 0o4640)  # set-id bits are part of the key's permission bits
    link = tmp_path / "link"
    link.symlink_to(regular)
    for path in (regular, link, tmp_path):
        st = os.lstat(path)
        assert stat_change_key(st) == FileStat.from_stat(str(path), st).change_key
