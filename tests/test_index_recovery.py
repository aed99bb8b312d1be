"""A damaged index set aside: real damaged SQLite files, and how many copies are kept.

``set_aside`` keeps the old file for inspection as
``index.sqlite.damaged-<time>`` (with its -wal/-shm). A fault that keeps
coming back must not fill the disk with such copies: only the newest
``KEEP_DAMAGED`` stay.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dicomfs.errors import IndexCorruptError
from dicomfs.index import IndexReader, IndexWriter, is_damage, recovery, set_aside

PATIENT = "PATIENT-SECRET-7"

# A writer that dies mid-life (as under kill -9): its -wal and -shm stay behind.
# The first batch is checkpointed into the index file, the second stays in the WAL.
_CRASHING_WRITER = """
import os, sys
from dicomfs.dicom.records import FileResult, FileStat, Instance
from dicomfs.index import IndexWriter

writer = IndexWriter(sys.argv[1])
for name in ("a", "b"):
    stat = FileStat(path=f"/src/{sys.argv[2]}{name}.dcm", size=1, mtime_ns=1, inode=1, dev=1,
                    uid=0, gid=0, mode=0o644)
    uid = f"1.2.{sys.argv[2]}.{ord(name)}"
    inst = Instance(sop_class_uid="1.2.840.10008.5.1.4.1.1.2", sop_instance_uid=uid,
                    series_uid="1.2.3.4", modality="CT", patient_id=sys.argv[3])
    writer.apply([FileResult(stat, inst)])
    if name == "a":
        writer.checkpoint()
os._exit(0)
"""


def _damage(index: Path) -> None:
    """Overwrite the header: SQLite then calls the file "not a database" (SQLITE_NOTADB)."""
    with open(index, "r+b") as f:
        f.write(b"\xff" * 100)


def _clock_stopped_at(stamp: str) -> Callable[..., str]:
    """``time.strftime`` giving ``stamp`` for set_aside's format and the real time otherwise."""
    real = time.strftime

    def strftime(fmt: str, *args: Any) -> str:
        return stamp if fmt == "%Y%m%dT%H%M%S" else real(fmt, *args)

    return strftime


def _damaged_copies(index: Path) -> list[str]:
    return sorted(p.name for p in index.parent.glob(f"{index.name}.damaged-*"))


def _set_aside_a_damaged_index(index: Path, n: int) -> Path:
    """One round of what ``serve`` does: a crashed writer, a damaged file, set aside."""
    subprocess.run(
        [sys.executable, "-c", _CRASHING_WRITER, str(index), str(n), PATIENT],
        check=True,
        timeout=60,
    )
    assert os.path.exists(f"{index}-wal") and os.path.exists(f"{index}-shm")
    _damage(index)
    with pytest.raises(IndexCorruptError) as failure:
        IndexWriter(index)
    assert is_damage(failure.value)
    return set_aside(index)


def test_only_the_newest_damaged_copies_are_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    index = tmp_path / "index.sqlite"
    rounds = recovery.KEEP_DAMAGED + 2
    caplog.set_level(logging.INFO, logger="dicomfs")
    targets = [_set_aside_a_damaged_index(index, n) for n in range(rounds)]

    newest = targets[-recovery.KEEP_DAMAGED :]
    expected = sorted(f"{t.name}{s}" for t in newest for s in ("", "-wal", "-shm"))
    assert _damaged_copies(index) == expected
    for kept in newest:  # the kept copies are the damaged files themselves
        assert kept.read_bytes().startswith(b"\xff" * 100)
    # The index in place is new, empty and usable.
    reader = IndexReader(index)
    assert reader.status().files == 0
    reader.close()
    removals = [r.getMessage() for r in caplog.records if "removed" in r.getMessage()]
    assert len(removals) == rounds - recovery.KEEP_DAMAGED
    assert all("removed 1 older damaged index copy" in m for m in removals)
    assert PATIENT not in caplog.text


def test_copies_in_one_second_are_ordered_by_their_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``-10`` is newer than ``-9``: the order is numeric, not by name."""
    monkeypatch.setattr(
        time,
        "strftime",
        _clock_stopped_at("20250102T030405"),
    )
    index = tmp_path / "index.sqlite"
    IndexWriter(index).close()
    targets = []
    for _ in range(12):
        _damage(index)
        targets.append(set_aside(index))
    assert [t.name for t in targets[-3:]] == [
        "index.sqlite.damaged-20250102T030405-9",
        "index.sqlite.damaged-20250102T030405-10",
        "index.sqlite.damaged-20250102T030405-11",
    ]
    assert _damaged_copies(index) == sorted(t.name for t in targets[-recovery.KEEP_DAMAGED :])


def test_the_copy_just_set_aside_is_kept_when_the_clock_went_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller reports where the old index went: that copy must still exist."""
    index = tmp_path / "index.sqlite"
    IndexWriter(index).close()
    with monkeypatch.context() as patch:
        patch.setattr(
            time,
            "strftime",
            _clock_stopped_at("20991231T235959"),
        )
        future = [set_aside(index) for _ in range(recovery.KEEP_DAMAGED)]
    _damage(index)
    now = set_aside(index)
    assert now.exists()
    assert _damaged_copies(index) == sorted(
        [now.name] + [t.name for t in future[-(recovery.KEEP_DAMAGED - 1) :]]
    )
