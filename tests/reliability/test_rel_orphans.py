"""Parse workers die with the process that started them (reliability.md A12).

Real processes, real ``kill -9``: each command runs in a session of its own,
and after the kill no process of that session may remain.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuse_helpers import public_dir, require_fuse, wait_for
from rel_helpers import REPO, unmount_if_needed, write_ct_copies

DEADLINE = 20.0


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes whose session id is ``sid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after "comm)": state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry))
    return members


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def descendants(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        for child in children_of(todo.pop()):
            seen.append(child)
            todo.append(child)
    return seen


def start(*args: str | Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "dicomfs", *[str(a) for a in args]]
    return subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def kill_and_expect_no_survivor(proc: subprocess.Popen[bytes]) -> None:
    sid = proc.pid  # a new session's id is its leader's pid
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=DEADLINE)
    try:
        wait_for(lambda: not session_members(sid), DEADLINE, "the workers to die with their parent")
    finally:
        for pid in session_members(sid):  # never leave them behind, even on failure
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def base() -> Iterator[Path]:
    path = public_dir("dicomfs-rel-orphans-")
    yield path
    unmount_if_needed(path / "mnt")
    shutil.rmtree(path, ignore_errors=True)


def test_kill_9_of_index_leaves_no_worker(base: Path) -> None:
    write_ct_copies(base / "src", 4000)
    proc = start("index", base / "src", "--index", base / "index.sqlite", "--workers", "2", "-q")
    wait_for(lambda: len(descendants(proc.pid)) >= 2, DEADLINE, "two parse workers")
    assert proc.poll() is None, "indexing ended before the workers could be seen"
    kill_and_expect_no_survivor(proc)


def test_kill_9_of_serve_leaves_no_worker(base: Path) -> None:
    require_fuse()
    (base / "src").mkdir()
    (base / "mnt").mkdir()
    proc = start(
        "serve", base / "src", "--mount", base / "mnt", "--index", base / "index.sqlite",
        "--workers", "2", "--settle", "0.05",
    )  # fmt: skip
    try:
        wait_for(lambda: os.path.ismount(base / "mnt"), DEADLINE, "the mount")
        # A burst large enough for the worker pool (scan.POOL_THRESHOLD files).
        write_ct_copies(base / "incoming", 3000)
        os.rename(base / "incoming", base / "src" / "burst")
        wait_for(lambda: len(descendants(proc.pid)) >= 2, DEADLINE, "parse workers")
        kill_and_expect_no_survivor(proc)
    finally:
        if proc.poll() is None:
            proc.kill()  # the fixture then unmounts the dead daemon's mount
