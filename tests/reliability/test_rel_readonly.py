"""An index that cannot be opened like a writable one (reliability.md E2).

A valid index on read-only media (here a real read-only bind mount, which
even root cannot write through) is read with SQLite's ``immutable=1``: its
WAL database cannot get the ``-shm`` file a normal read-only open creates.
An index a user may not read is reported as exactly that. Neither is ever
called "not a dicomfs index".
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuse_helpers import ensure_user, public_dir
from rel_helpers import dicomfs, dicomfs_as, write_ct_copies

from dicomfs.index import IndexReader, IndexWriter

USER = "dicomfs-rel-reader"


@pytest.fixture
def base() -> Iterator[Path]:
    path = public_dir("dicomfs-rel-ro-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def read_only_bind(source: Path, target: Path) -> Iterator[Path]:
    """``source`` seen read-only at ``target``: a bind mount remounted ``ro`` (we run as root)."""
    target.mkdir(parents=True, exist_ok=True)
    bind = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True)
    assert bind.returncode == 0, bind.stderr
    try:
        ro = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(target)], capture_output=True, text=True
        )
        assert ro.returncode == 0, ro.stderr
        yield target
    finally:
        subprocess.run(["umount", str(target)], capture_output=True)


def _index(base: Path, count: int) -> tuple[Path, dict[str, Path]]:
    files = write_ct_copies(base / "src", count)
    index = base / "data" / "index.sqlite"
    done = dicomfs("index", base / "src", "--index", index, "-q")
    assert done.returncode == 0, done.stderr
    return index, files


def test_an_index_on_read_only_media_is_read_as_immutable(base: Path) -> None:
    index, files = _index(base, 12)
    with read_only_bind(index.parent, base / "ro") as ro:
        with pytest.raises(OSError) as refused:
            (ro / "probe").write_bytes(b"")  # even root cannot write here
        assert refused.value.errno == errno.EROFS
        assert sorted(os.listdir(ro)) == ["index.sqlite"]  # no -wal, no -shm to read with

        status = dicomfs("-v", "status", "--index", ro / "index.sqlite")
        assert status.returncode == 0, status.stderr
        assert f"instances     {len(files)} ".encode() in status.stdout
        assert b"read as immutable" in status.stderr
        assert b"not a dicomfs index" not in status.stderr

        listed = dicomfs("ls", "--index", ro / "index.sqlite", "by-sop")
        assert listed.returncode == 0, listed.stderr
        assert sorted(listed.stdout.decode().split()) == sorted(f"{u}.dcm" for u in files)
        uid, path = next(iter(files.items()))
        cat = dicomfs("cat", "--index", ro / "index.sqlite", f"by-sop/{uid}.dcm")
        assert cat.returncode == 0 and cat.stdout == path.read_bytes()
        assert sorted(os.listdir(ro)) == ["index.sqlite"]


def test_a_wal_left_on_read_only_media_is_reported(base: Path) -> None:
    """A copy taken while a writer had it open: -wal without -shm cannot be read; said so."""
    index, files = _index(base, 4)
    writer = IndexWriter(index)
    writer.checkpoint()
    writer.set_meta("probe", "only in the WAL")
    copy = base / "copy"
    copy.mkdir()
    shutil.copy(index, copy / "index.sqlite")
    shutil.copy(f"{index}-wal", copy / "index.sqlite-wal")
    writer.close()
    with read_only_bind(copy, base / "ro") as ro:
        status = dicomfs("-v", "status", "--index", ro / "index.sqlite")
        assert status.returncode == 0, status.stderr
        assert f"instances     {len(files)} ".encode() in status.stdout
        assert b"read as of its last checkpoint" in status.stderr
        reader = IndexReader(ro / "index.sqlite")
        try:
            assert reader.meta("probe") is None  # what the WAL held is not seen ...
            assert reader.status().instances == len(files)  # ... the checkpointed index is
        finally:
            reader.close()


def test_an_index_another_user_may_not_read_is_reported_as_such(base: Path) -> None:
    ensure_user(USER)
    index, _ = _index(base, 2)
    os.chmod(index.parent, 0o755)  # the folder is open, the index itself is 0600
    assert index.stat().st_mode & 0o777 == 0o600
    for command in (("status",), ("ls", "by-sop")):
        done = dicomfs_as(USER, command[0], "--index", index, *command[1:])
        assert done.returncode == 4, done.stderr
        message = done.stderr.decode()
        assert "permission denied" in message and "owner root, mode 0600" in message, message
        assert "not a dicomfs index" not in message and "Traceback" not in message


def test_an_index_in_a_folder_the_user_may_not_write_is_reported_as_such(base: Path) -> None:
    """WAL mode: a reader must be able to create -shm, unless a writer has it open."""
    ensure_user(USER)
    index, _ = _index(base, 2)
    os.chmod(index.parent, 0o755)
    os.chmod(index, 0o644)
    done = dicomfs_as(USER, "status", "--index", index)
    assert done.returncode == 4, done.stderr
    message = done.stderr.decode()
    assert f"this user may not write in {index.parent}" in message, message
    assert "not a dicomfs index" not in message
