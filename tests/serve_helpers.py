"""A real ``dicomfs serve`` process for tests: start it, wait for its mount, end it, clean up.

Shared by ``test_serve.py`` and the reliability suite. The process runs in
its own session so that leftovers (parse workers, the forkserver) can be
found and ended by their ids; its log goes to a file beside the index, so
the test's folder takes it away. Every wait is a poll against a deadline,
never a fixed sleep. Importable from ``tests/reliability`` too: the root
``conftest.py`` puts ``tests/`` on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
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
    """'mounted', 'stale' (daemon gone: ENOTCONN), 'plain' or 'absent'.

    Listing forces a request to the daemon (a plain stat may be answered from
    the kernel's attribute cache for a while after the daemon died); it runs
    in a child with a timeout, since a mount whose connection an orphan still
    holds would hang the caller instead of failing.
    """
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
    """Lazily unmount ``path`` if a mount (live or stale) is still there."""
    if mount_state(path) in ("mounted", "stale"):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)


class ServeProcess:
    """``dicomfs [-v ...] serve SRC... --mount MNT --index IDX`` with its log in a file.

    ``verbose`` is the number of ``-v`` flags; ``extra`` arguments follow the
    defaults (``--settle 0.1 --workers 2``). ``env`` adds to this process's
    environment, from which an inherited NOTIFY_SOCKET is always removed.
    """

    def __init__(
        self,
        sources: Sequence[Path],
        mnt: Path,
        index: Path | str,
        *extra: str,
        verbose: int = 2,
        env: dict[str, str] | None = None,
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
        self.env.update(env or {})
        folder = log_dir if log_dir is not None else Path(index).parent
        self.log_path = Path(tempfile.mkstemp(prefix="serve-", suffix=".log", dir=folder)[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self, *, wait_mounted: bool = True) -> ServeProcess:
        """Start serving; unless told otherwise, return only once the mount answers."""
        require_fuse()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=log, env=self.env, cwd="/", start_new_session=True
            )
        if wait_mounted:
            try:
                self._wait_mounted()
            except BaseException:
                self.cleanup()
                raise
        return self

    def _wait_mounted(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + DEADLINE
        while mount_state(self.mnt) != "mounted":
            status = self.proc.poll()
            if status is not None or time.monotonic() > deadline:
                pytest.fail(f"serve did not mount (exit {status}); log:\n{self.log()[-4000:]}")
            time.sleep(0.02)

    def status(self) -> dict[str, Any]:
        """.dicomfs/status.json read through the mount (generated, cached up to 1 s)."""
        data: dict[str, Any] = json.loads((self.mnt / ".dicomfs" / "status.json").read_bytes())
        return data

    def wait_idle_indexed(self, count: int, timeout: float = DEADLINE) -> None:
        """Until status.json says ``count`` instances, an empty queue and the start scan over.

        The instances are visible as soon as the start scan's last batch
        commits, before its closing WAL checkpoint; a test that damages the
        index file in that moment has its damage written over by the
        checkpoint (every page of a new index is still in the WAL), so it must
        wait for the scan to be counted as done.
        """

        def done() -> bool:
            try:
                status = self.status()
            except OSError as exc:  # EIO while the index is being rebuilt (E6)
                if exc.errno != errno.EIO:
                    raise
                return False
            ingest = status["ingest"]
            return (
                status["instances"] == count and ingest["queued"] == 0 and ingest["reconciles"] >= 1
            )

        try:
            wait_for(done, timeout, f"{count} instances indexed")
        except AssertionError as exc:
            detail = f"status {self.status()}; log:\n{self.log()[-3000:]}"
            raise AssertionError(f"{exc}; {detail}") from None

    def terminate(self) -> int:
        """SIGTERM and the exit status; a serve that ignores it fails the test."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(DEADLINE)
            if status != 0:  # shown with the failing assertion (faulthandler's stacks on a crash)
                print(f"serve exited with {status}; log:\n{self.log()[-6000:]}")
            return status
        except subprocess.TimeoutExpired:
            self.cleanup()
            raise AssertionError(f"serve ignored SIGTERM; log:\n{self.log()[-3000:]}") from None

    def kill9(self) -> None:
        """SIGKILL, as a crash would: no unmount, no clean shutdown."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(DEADLINE)

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
        """Kill what is left of this serve (the process, its session) and its mount."""
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
    """A started ``ServeProcess``, cleaned up however the block ends."""
    serve = ServeProcess(sources, mnt, index, *extra, **kwargs)
    try:
        yield serve.start()
    finally:
        serve.cleanup()
