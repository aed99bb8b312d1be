"""Folders as big as the archive are listed a page at a time (issue 13), complete and consistent.

``by-sop/``, ``objects/``, ``by-series/`` and ``by-study/`` are read from the
index a page per query (``view.pages``) and handed to the kernel by
``fuse.listing.Listing``, which keeps one page per open folder. Checked
here through a real mount over an index of a few pages: every entry once,
file types and inode numbers as ``stat`` gives them, and a listing that
stays complete and duplicate-free while another process writes the index
between two of its reads. The shape of memory (one page per open folder,
however big the folder) is checked on the adapter itself, never a timing.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuse_helpers import mounted
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomfs.dicom.records import FileResult, FileStat, Instance, is_safe_uid
from dicomfs.fuse.fs import DicomFS
from dicomfs.fuse.fsinfo import child_path, inode_of, inodes_of
from dicomfs.fuse.listing import Listing
from dicomfs.index import IndexReader, IndexWriter
from dicomfs.index.pages import PAGE
from dicomfs.view.pages import all_safe_uids
from dicomfs.view.tree import View

ROOT = "1.2.826.0.1.3680043.8.498.77"
CT = "1.2.840.10008.5.1.4.1.1.2"
COUNT = 2 * PAGE + 345  # three pages, the last one short
SERIES = 7


def _uid(n: int) -> str:
    return f"{ROOT}.{n % SERIES + 1}.{n}"


def _result(n: int) -> FileResult:
    """A CT slice of series ``n % SERIES`` (listings never open the source)."""
    st = FileStat(
        path=f"/nonexistent/archive/{n}.dcm", size=1000 + n, mtime_ns=1_700_000_000_000_000_000,
        inode=10_000 + n, dev=1, uid=0, gid=0, mode=stat.S_IFREG | 0o640, ctime_ns=1,
    )  # fmt: skip
    series = n % SERIES + 1
    inst = Instance(
        sop_class_uid=CT, sop_instance_uid=_uid(n), study_uid=f"{ROOT}.{series % 3}",
        series_uid=f"{ROOT}.{series}.0", modality="CT", patient_id="P1",
    )  # fmt: skip
    return FileResult(st, inst)


def _write(index: Path, numbers: range | list[int], removed: list[int] = ()) -> None:  # type: ignore[assignment]
    writer = IndexWriter(index)
    try:
        writer.apply([_result(n) for n in numbers], removed=[_result(n).stat.path for n in removed])
    finally:
        writer.close()


@pytest.fixture
def index(tmp_path: Path) -> Path:
    path = tmp_path / "index.sqlite"
    _write(path, range(COUNT))
    return path


def _names(folder: Path) -> list[str]:
    return [entry.name for entry in os.scandir(folder)]


def test_big_folders_list_every_entry_once_with_their_types_and_inodes(
    index: Path, tmp_path: Path
) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    uids = {_uid(n) for n in range(COUNT)}
    with mounted(mnt, index):
        by_sop = _names(mnt / "by-sop")
        assert len(by_sop) == len(set(by_sop)) == COUNT
        assert set(by_sop) == {f"{u}.dcm" for u in uids}
        objects = _names(mnt / "objects")
        assert sorted(objects) == sorted(uids)
        assert sorted(_names(mnt / "by-series")) == sorted(
            f"{ROOT}.{s}.0" for s in range(1, SERIES + 1)
        )
        assert sorted(_names(mnt / "by-study")) == sorted(f"{ROOT}.{s}" for s in range(3))
        # Names only, yet each entry's type and inode number are those stat gives.
        seen = 0
        for folder, is_file in (("by-sop", True), ("objects", False), ("by-series", False)):
            for entry in list(os.scandir(mnt / folder))[:: PAGE // 4]:
                assert entry.is_file(follow_symlinks=False) is is_file
                assert entry.is_dir(follow_symlinks=False) is not is_file
                assert entry.inode() == os.lstat(entry.path).st_ino
                seen += 1
        assert seen > 10
        # A folder read twice on one handle (rewinddir) is read whole again.
        fd = os.open(mnt / "by-sop", os.O_RDONLY | os.O_DIRECTORY)
        try:
            first = os.listdir(fd)
            again = os.listdir(fd)  # listdir(fd) rewinds the descriptor first
        finally:
            os.close(fd)
        assert sorted(first) == sorted(again) == sorted(by_sop)


def test_a_listing_stays_complete_and_duplicate_free_while_the_index_changes(
    index: Path, tmp_path: Path
) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    removed = list(range(0, COUNT, 5))  # spread over every page, read and not yet read
    added = range(COUNT, COUNT + PAGE)  # new UIDs: some sort before the cursor, some after
    with mounted(mnt, index):
        with os.scandir(mnt / "by-sop") as entries:
            it: Iterator[os.DirEntry[str]] = iter(entries)
            listed = [next(it).name for _ in range(PAGE + PAGE // 2)]  # into the second page
            _write(index, added, removed)
            listed += [entry.name for entry in it]
        after = set(_names(mnt / "by-sop"))
    assert len(listed) == len(set(listed)), "an entry was listed twice"
    unchanged = {f"{_uid(n)}.dcm" for n in range(COUNT) if n not in set(removed)}
    assert unchanged <= set(listed), "an entry present throughout was left out"
    ever = {f"{_uid(n)}.dcm" for n in range(COUNT + PAGE)}
    assert set(listed) <= ever
    assert after == {f"{_uid(n)}.dcm" for n in range(COUNT + PAGE) if n not in set(removed)}


def test_an_open_folder_holds_one_page_however_big_the_folder(index: Path) -> None:
    """The shape of memory: the adapter keeps the page being read, never the folder."""
    view = View(lambda: IndexReader(index), dir_uid=0, dir_gid=0, mount_time_ns=0)
    ops = DicomFS(view)
    try:
        fh = ops.opendir("/by-sop")
        position, names, held = 0, [], []
        while True:
            start, entries, _mode = ops.readdir("/by-sop", fh, position)
            if not entries:
                break
            take = entries[:100]  # as the kernel does: a buffer's worth, then ask again
            names += [name for name, _ in take]
            listing = ops._dirs[fh]
            assert isinstance(listing, Listing)
            held.append(len(listing._entries))
            position = start + len(take)
        ops.releasedir("/by-sop", fh)
    finally:
        view.close()
    assert names[:2] == [b".", b".."]
    assert len(names) == COUNT + 2 == len(set(names))
    assert max(held) == PAGE  # one page at a time, not COUNT entries
    assert fh not in ops._dirs


def test_a_listing_resumes_mid_page_seeks_back_and_recovers_from_a_failed_page() -> None:
    pages = [[(b"a", 1), (b"b", 2), (b"c", 3)], [(b"d", 4)], [], [(b"e", 5), (b"f", 6)]]
    fail = {"once": True}

    def start() -> Iterator[list[tuple[bytes, int]]]:
        for number, page in enumerate(pages):
            if number == 3 and fail["once"]:
                fail["once"] = False
                raise OSError("the index went away for a moment")
            yield page

    listing = Listing(start)
    assert listing.window(0) == (0, pages[0])
    assert listing.window(2) == (2, [(b"c", 3)])  # the kernel kept two entries
    assert listing.window(3) == (3, [(b"d", 4)])
    with pytest.raises(OSError):
        listing.window(4)  # an empty page is skipped; the next one fails
    assert listing.window(4) == (4, pages[3])  # asked again: read from the start, skipped to 4
    assert listing.window(6) == (6, [])
    assert listing.window(1) == (1, pages[0][1:])  # seekdir back


def test_inode_numbers_of_a_page_are_those_of_single_paths() -> None:
    names = [f"{_uid(n)}.dcm".encode() for n in range(50)] + [b"x", "é".encode()]
    for parent in ("/by-sop", "/objects/", "/"):
        assert inodes_of(parent, names) == [
            inode_of(child_path(parent, name.decode())) for name in names
        ]


_UID_BYTES = st.lists(st.sampled_from(list(b"0123456789.\n/x")), max_size=70).map(bytes)
_COMPONENT = st.integers(min_value=1, max_value=10**12).map(str)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(_UID_BYTES, min_size=1, max_size=8), st.lists(st.just(b"1.2.840.10008"), max_size=3)
)
def test_a_page_passes_the_quick_check_only_if_every_uid_is_safe(
    odd: list[bytes], good: list[bytes]
) -> None:
    page = [*good, *odd]
    if all_safe_uids(page):
        assert all(is_safe_uid(uid.decode()) for uid in page), page


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_COMPONENT, min_size=2, max_size=12), min_size=1, max_size=20))
def test_a_page_of_safe_uids_passes_the_quick_check(uids: list[list[str]]) -> None:
    page = [".".join(c).encode()[:64].rstrip(b".") for c in uids]
    page = [uid for uid in page if is_safe_uid(uid.decode())]
    zero_free = [uid for uid in page if b".0" not in uid and not uid.startswith(b"0")]
    assert all_safe_uids(zero_free) is bool(zero_free)
    assert all_safe_uids([*zero_free, b"1.2.0.3"]) is True  # a component 0 is allowed
    assert all_safe_uids([*zero_free, b"1.2.03"]) is False  # a leading zero is not
