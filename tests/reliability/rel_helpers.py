"""Helpers of the reliability suite: a real ``dicomfs serve`` process, tmpfs mounts, users.

Every wait is a poll against a deadline (``fuse_helpers.wait_for``), never a
fixed sleep. A serve process runs in its own session so that leftovers (parse
workers, the forkserver) can be found and ended by their ids.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fuse_helpers import REPO, require_fuse, wait_for

DEADLINE = 30.0


def mount_state(path: Path) -> str:
    """'mounted', 'stale' (ENOTCONN), 'plain' or 'absent'; ``ls`` in a child with a timeout."""
    try:
        done = subprocess.run(["ls", "-a", str(path)], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{path} hangs: something still holds its FUSE connection") from None
    if done.returncode != 0:
        if "Transport endpoint is not connected" in done.stderr:
            return "stale"
        if "No such file or directory" in done.stderr:
            return "absent"
        raise AssertionError(f"ls {path}: {done.stderr.strip()}")
    return "mounted" if os.path.ismount(path) else "plain"


def unmount_if_needed(path: Path) -> None:
    if mount_state(path) in ("mounted", "stale"):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)


class ServeProcess:
    """``dicomfs -v -v serve SRC --mount MNT --index IDX`` with its log in a file."""

    def __init__(
        self,
        sources: Sequence[Path],
        mnt: Path,
        index: Path,
        *extra: str,
        verbose: int = 2,
        log_dir: Path | None = None,
    ) -> None:
        self.mnt = mnt
        self.index = index
        self.args = [sys.executable, "-m", "dicomfs", *(["-v"] * verbose), "serve"]
        self.args += [str(s) for s in sources]
        self.args += ["--mount", str(mnt), "--index", str(index), "--settle", "0.1"]
        self.args += ["--workers", "2", *extra]
        self.env = dict(os.environ, PYTHONPATH=str(REPO))
        self.env.pop("NOTIFY_SOCKET", None)
        folder = log_dir if log_dir is not None else index.parent
        self.log_path = Path(tempfile.mkstemp(prefix="serve-", suffix=".log", dir=folder)[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self) -> ServeProcess:
        require_fuse()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=log, env=self.env, cwd="/", start_new_session=True
            )
        deadline = time.monotonic() + DEADLINE
        while mount_state(self.mnt) != "mounted":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                status = self.proc.poll()
                self.cleanup()
                pytest.fail(f"serve did not mount (exit {status}); log:\n{self.log()[-4000:]}")
            time.sleep(0.02)
        return self

    def status(self) -> dict[str, Any]:
        """.dicomfs/status.json read through the mount (generated, cached up to 1 s)."""
        data: dict[str, Any] = json.loads((self.mnt / ".dicomfs" / "status.json").read_bytes())
        return data

    def wait_idle_indexed(self, count: int, timeout: float = DEADLINE) -> None:
        """Until status.json says ``count`` instances and an empty queue."""

        def done() -> bool:
            try:
                status = self.status()
            except OSError as exc:  # EIO while the index is being rebuilt (E6)
                if exc.errno != errno.EIO:
                    raise
                return False
            return status["instances"] == count and status["ingest"]["queued"] == 0

        try:
            wait_for(done, timeout, f"{count} instances indexed")
        except AssertionError as exc:
            detail = f"status {self.status()}; log:\n{self.log()[-3000:]}"
            raise AssertionError(f"{exc}; {detail}") from None

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.cleanup()
            raise AssertionError(f"serve ignored SIGTERM; log:\n{self.log()[-3000:]}") from None

    def leftovers(self) -> list[int]:
        """Processes still in this serve's session (parse workers, forkserver)."""
        assert self.proc is not None
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.getsid(int(entry)) == self.proc.pid:
                        found.append(int(entry))
        return found

    def cleanup(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(DEADLINE)
            for pid in self.leftovers():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        unmount_if_needed(self.mnt)


@contextlib.contextmanager
def serving(
    sources: Sequence[Path], mnt: Path, index: Path, *extra: str, **kwargs: Any
) -> Iterator[ServeProcess]:
    serve = ServeProcess(sources, mnt, index, *extra, **kwargs)
    try:
        yield serve.start()
    finally:
        serve.cleanup()


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``path`` (we run as root)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs: {done.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield path
    finally:
        if os.path.ismount(path):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


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
    from dicomfs.demo.hostile import ct_bytes

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
