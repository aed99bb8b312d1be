"""dicomfs.dicom.parse on paths: what is opened, what is never opened, what the stat records.

Also the one conversion from ``os.stat_result`` to ``FileStat`` and what it
decides: the full ``st_mode`` is stored (file type and permission bits), and
only the permission bits take part in the change key.
"""

from __future__ import annotations

import os
import pickle
import shutil
import stat
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest
from parse_helpers import (
    MIM,
    MONACO,
    PINNACLE,
    run_with_deadline,
)

from dicomfs.dicom.parse import parse_file, parse_fileobj
from dicomfs.dicom.records import FileStat, Instance, Rejection, RejectKind
from dicomfs.index import IndexWriter
from dicomfs.live.scan import reconcile, walk


def test_file_stat_is_taken_from_the_opened_file(tmp_path: Path) -> None:
    path = tmp_path / "rt.dcm"
    shutil.copy(MIM / "rt.dcm", path)
    result = parse_file(str(path))
    assert result is not None
    st = os.stat(path)
    assert result.stat.path == str(path)
    assert result.stat.skip_key == (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
    assert (result.stat.dev, result.stat.uid, result.stat.gid, result.stat.mode) == (
        st.st_dev,
        st.st_uid,
        st.st_gid,
        st.st_mode,
    )


def test_missing_file_gives_none(tmp_path: Path) -> None:
    assert parse_file(str(tmp_path / "gone.dcm")) is None
    assert parse_file(str(tmp_path / "no-dir" / "gone.dcm")) is None


def test_impossible_path_is_a_rejection_not_an_exception() -> None:
    result = parse_file("/tmp/bad\x00name.dcm")
    assert result is not None
    assert isinstance(result.result, Rejection)
    assert result.result.kind is RejectKind.UNREADABLE


def test_non_utf8_file_name(tmp_path: Path) -> None:
    path = os.fsdecode(os.fsencode(tmp_path) + b"/\xff\xfe-plan.dcm")
    shutil.copy(PINNACLE / next(iter(os.listdir(PINNACLE))), os.fsencode(path))
    result = parse_file(path)
    assert result is not None
    assert result.stat.path == path
    assert isinstance(result.result, Instance)
    # As a parse worker sends it back (records.Record: pickled as its fields).
    assert pickle.loads(pickle.dumps(result)) == result


def test_fifo_is_not_regular_and_never_blocks(tmp_path: Path) -> None:
    fifo = tmp_path / "incoming.dcm"
    os.mkfifo(fifo)
    result = run_with_deadline(lambda: parse_file(str(fifo)))
    assert result is not None
    assert result.result.kind is RejectKind.NOT_REGULAR  # type: ignore[attr-defined]


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    link = tmp_path / "link.dcm"
    link.symlink_to(MIM / "rt.dcm")
    dangling = tmp_path / "dangling.dcm"
    dangling.symlink_to(tmp_path / "nowhere.dcm")
    for path in (link, dangling, tmp_path):
        result = parse_file(str(path))
        assert result is not None
        assert isinstance(result.result, Rejection)
        assert result.result.kind is RejectKind.NOT_REGULAR


NOBODY = 65534  # the overflow uid and gid (nobody, nogroup)
T = TypeVar("T")


def as_unprivileged(fn: Callable[[], T]) -> T:
    """``fn()`` as a user whom permission bits bind; its result comes back pickled.

    Root reads a 0000 file anyway (CAP_DAC_OVERRIDE) and CI runs as root, so
    there ``fn`` runs in a forked child that first drops to nobody for good.
    """
    if os.geteuid() != 0:
        return fn()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            payload = pickle.dumps(fn())
            with os.fdopen(write_end, "wb") as out:
                out.write(payload)
            status = 0
        except BaseException:
            os.write(2, traceback.format_exc().encode())
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged child failed (stderr)"
    result: T = pickle.loads(payload)
    return result


def test_unreadable_file() -> None:
    """A file its reader may not open is UNREADABLE, and its stat is still recorded."""
    # Not under tmp_path: pytest's base folder is 0700, and a folder nobody may
    # not enter would make lstat fail instead of open.
    with tempfile.TemporaryDirectory(prefix="dicomfs-unreadable-") as folder:
        os.chmod(folder, 0o755)
        path = Path(folder) / "secret.dcm"
        shutil.copy(MIM / "rt.dcm", path)
        path.chmod(0)
        result = as_unprivileged(lambda: parse_file(str(path)))
        assert result is not None
        assert result.result.kind is RejectKind.UNREADABLE  # type: ignore[union-attr]
        assert isinstance(result.result, Rejection)
        assert result.result.reason.startswith("EACCES: ")  # open refused, not lstat
        assert result.stat == FileStat.from_stat(str(path), os.lstat(path))
        assert result.stat.mode == stat.S_IFREG


# -- FileStat.from_stat: one conversion, the whole st_mode ---------------------


def test_scan_and_parse_record_the_same_stat_with_the_whole_mode(tmp_path: Path) -> None:
    """Decision: ``FileStat.mode`` is the whole ``st_mode``, from the scan and the parser alike.

    It is the faithful record (the type bits tell a regular file); readers
    mask what they use: the change key the permission bits, the view the
    read bits it mirrors.
    """
    path = tmp_path / "rt.dcm"
    shutil.copy(MIM / "rt.dcm", path)
    path.chmod(0o640)
    parsed = parse_file(str(path))
    assert parsed is not None
    (walked,) = walk(str(tmp_path)).files
    assert parsed.stat == walked == FileStat.from_stat(str(path), os.stat(path))
    assert parsed.stat.mode == os.stat(path).st_mode == stat.S_IFREG | 0o640


@pytest.mark.parametrize("mode", [0o600, 0o444, 0o755, 0o4755, 0o2750, 0o1644])
def test_change_key_follows_every_permission_bit_and_never_the_file_type(
    tmp_path: Path, mode: int
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    path = source / "rt.dcm"
    shutil.copy(MIM / "rt.dcm", path)
    path.chmod(0o644)
    writer = IndexWriter(tmp_path / "index" / "index.sqlite")
    assert reconcile(writer, [source], workers=1).parsed == 1
    (before,) = walk(str(source)).files
    # The index keeps the key the scan compares: an unchanged file is skipped.
    assert writer.file_keys() == {str(path): before.change_key}
    assert reconcile(writer, [source], workers=1).skipped == 1

    path.chmod(mode)
    (after,) = walk(str(source)).files
    assert after.mode == stat.S_IFREG | mode
    # chmod moves the ctime too, which the key carries last
    assert after.change_key == (
        *before.change_key[:3],
        mode,
        *before.change_key[4:6],
        after.ctime_ns,
    )
    assert after.change_key == replace(after, mode=stat.S_IMODE(after.mode)).change_key
    report = reconcile(writer, [source], workers=1)
    assert (report.parsed, report.skipped) == (1, 0)
    assert writer.file_keys() == {str(path): after.change_key}


def test_parse_fileobj_on_an_open_file() -> None:
    path = MONACO / "TinyFS_TinyVMAT.dcm"
    with open(path, "rb") as fh:
        result = parse_fileobj(fh, path.stat().st_size)
    assert isinstance(result, Instance)
