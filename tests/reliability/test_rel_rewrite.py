"""A same-size rewrite in place with the old mtime put back is noticed (reliability.md C7).

``dd conv=notrunc`` then ``touch -d``: size, mtime and inode are unchanged,
only the inode change time moved, which user space cannot set back. The
scan must re-parse the file and the mount must never serve the new bytes
under the old SOP Instance UID.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import pytest
from conftest import index_folders
from fuse_helpers import mounted, require_fuse
from rel_helpers import write_ct_copies
from schema_helpers import downgrade_to_schema_6

from dicomfs.errors import IndexCorruptError
from dicomfs.index import SCHEMA_VERSION, IndexReader, IndexWriter
from dicomfs.live.scan import reconcile
from dicomfs.view.nodes import FileNode, SourceChanged
from dicomfs.view.tree import View


def rewrite_in_place(path: Path, data: bytes) -> None:
    """Overwrite ``path`` without truncating and put its atime and mtime back."""
    before = os.stat(path)
    assert len(data) == before.st_size
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    # Everything the old change key looked at is as it was.
    same = (after.st_size, after.st_mtime_ns, after.st_ino, after.st_mode)
    assert same == (before.st_size, before.st_mtime_ns, before.st_ino, before.st_mode)


@pytest.fixture
def rewritten(tmp_path: Path) -> tuple[Path, Path, str, str]:
    """(source file, index, UID A it was indexed as, UID B it now holds)."""
    made = write_ct_copies(tmp_path / "src", 1) | write_ct_copies(tmp_path / "other", 1, start=1)
    (uid_a, path_a), (uid_b, path_b) = made.items()
    idx = tmp_path / "index.sqlite"
    index_folders(idx, [tmp_path / "src"], 1)
    rewrite_in_place(path_a, path_b.read_bytes())
    return path_a, idx, uid_a, uid_b


def test_the_view_refuses_the_old_identity_before_any_rescan(rewritten) -> None:  # type: ignore[no-untyped-def]
    path, idx, uid_a, _ = rewritten
    view = View(lambda: IndexReader(idx), dir_uid=0, dir_gid=0, mount_time_ns=0)
    node = view.lookup(f"/by-sop/{uid_a}.dcm")
    assert isinstance(node, FileNode) and node.real_path == str(path)
    with pytest.raises(SourceChanged):
        view.open_file(node)


def test_a_full_rescan_reparses_it_and_serves_the_new_identity(rewritten) -> None:  # type: ignore[no-untyped-def]
    path, idx, uid_a, uid_b = rewritten
    for _ in range(2):  # once, then again as after a restart: same answer
        index_folders(idx, [path.parent], 1)
        reader = IndexReader(idx)
        try:
            assert reader.instance(uid_a) is None
            served = reader.instance(uid_b)
            assert served is not None and served.file.path == str(path)
        finally:
            reader.close()


def test_the_mount_never_serves_the_new_bytes_under_the_old_uid(rewritten, tmp_path) -> None:  # type: ignore[no-untyped-def]
    require_fuse()
    _, idx, uid_a, _ = rewritten
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(mnt, idx) as mount:
        with pytest.raises(OSError) as raised:
            (mount.mountpoint / "by-sop" / f"{uid_a}.dcm").read_bytes()
        assert raised.value.errno == errno.EIO
        assert "changed since it was indexed" in mount.log()


def test_an_index_of_schema_1_is_upgraded_and_every_file_reparsed_once(tmp_path: Path) -> None:
    write_ct_copies(tmp_path / "src", 3)
    idx = tmp_path / "index.sqlite"
    index_folders(idx, [tmp_path / "src"], 1)
    # Make it what dicomfs 0.1.0 wrote: no ctime column, schema version 1.
    downgrade_to_schema_6(idx)
    conn = sqlite3.connect(idx)
    conn.execute("ALTER TABLE files DROP COLUMN ctime_ns")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(IndexCorruptError, match="run `dicomfs index`"):
        IndexReader(idx)
    writer = IndexWriter(idx)  # upgrades in place
    try:
        conn = sqlite3.connect(idx)
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        conn.close()
        assert version == (str(SCHEMA_VERSION),)
        first = reconcile(writer, [tmp_path / "src"], workers=1)
        second = reconcile(writer, [tmp_path / "src"], workers=1)
    finally:
        writer.close()
    assert (first.parsed, first.indexed) == (3, 3)  # the unknown ctime: parsed once
    assert (second.parsed, second.skipped) == (0, 3)  # then known
