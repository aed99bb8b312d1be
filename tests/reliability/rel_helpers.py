"""Helpers of the reliability suite: tmpfs mounts, full disks, other users, CT copies.

Every wait is a poll against a deadline (``fuse_helpers.wait_for``), never a
fixed sleep. A real ``dicomfs serve`` process (``serving``, ``ServeProcess``)
comes from ``serve_helpers``, shared with ``test_serve.py``; it is imported
here so the suite's tests find all their helpers in one place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fuse_helpers import REPO
from fuse_helpers import tmpfs as tmpfs
from serve_helpers import ServeProcess as ServeProcess
from serve_helpers import serving as serving
from serve_helpers import unmount_if_needed as unmount_if_needed

DEADLINE = 30.0


def fill(folder: Path) -> Path:
    """Write a filler file until the filesystem of ``folder`` is full; return it."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            block = b"\xff" * size
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, block)
    finally:
        os.close(fd)
    return filler


def _world_executable(path: str) -> bool:
    real = os.path.realpath(path)
    parents = [real, *[str(p) for p in Path(real).parents]]
    return all(os.stat(p).st_mode & 0o001 for p in parents)


def user_python() -> list[str]:
    """A Python another user may run, with this checkout and the venv's packages.

    The venv's interpreter may live under /root (pyenv); the system python3
    of the same version then runs our code with the venv's site-packages.
    """
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        if os.path.exists(candidate) and _world_executable(candidate):
            return [candidate]
    pytest.fail(f"no {version} interpreter that another user may run")


def run_as(user: str, *args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """``runuser -u USER -- ARGS`` with this checkout and the venv's packages importable."""
    import site

    path = os.pathsep.join([str(REPO), *site.getsitepackages()])
    env = dict(os.environ, PYTHONPATH=path, HOME="/tmp")
    cmd = ["runuser", "-u", user, "--", *[str(a) for a in args]]
    return subprocess.run(cmd, capture_output=True, timeout=120, env=env, cwd="/", **kwargs)


def dicomfs_as(user: str, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    """``dicomfs ARGS`` run by ``user``."""
    return run_as(user, *user_python(), "-m", "dicomfs", *args)


def dicomfs(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """The ``dicomfs`` command of this checkout, as a separate process."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "dicomfs", *[str(a) for a in args]]
    return subprocess.run(cmd, capture_output=True, timeout=300, env=env, **kwargs)


CT_PREFIX = "1.2.826.0.1.3680043.10.543.77"


def write_ct_copies(
    folder: Path, count: int, *, series: int = 1, start: int = 0, **names: str
) -> dict[str, Path]:
    """``count`` small CT files (16x16) with distinct SOP UIDs, fast: SOP UID -> path.

    One file is written by pydicom (``demo_hostile.ct_bytes``); the others
    are byte copies with another UID of the same length, in meta and dataset.
    ``names`` (PatientID, PatientName) go into every copy.
    """
    from dicomfs.demo import ct_bytes

    folder.mkdir(parents=True, exist_ok=True)
    template_uid = f"{CT_PREFIX}.{series}.{1_000_000}"
    template = ct_bytes(
        template_uid,
        study_uid=f"{CT_PREFIX}.{series}",
        series_uid=f"{CT_PREFIX}.{series}.1",
        patient_id=names.get("patient_id", "REL01"),
        patient_name=names.get("patient_name", "Reliability^Test"),
    )
    files = {}
    for number in range(start, start + count):
        uid = f"{CT_PREFIX}.{series}.{1_000_001 + number}"
        path = folder / f"CT{number:06d}.dcm"
        path.write_bytes(template.replace(template_uid.encode(), uid.encode()))
        files[uid] = path
    return files


def remove_tree(path: Path) -> None:
    """rm -rf that also gets through chmod-000 files and folders."""
    for dirpath, dirnames, filenames in os.walk(os.fsencode(path)):
        for name in dirnames + filenames:
            with contextlib.suppress(OSError):
                full = os.path.join(dirpath, name)
                if not os.path.islink(full):
                    os.chmod(full, 0o700)
    shutil.rmtree(path, ignore_errors=True)
