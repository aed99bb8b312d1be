"""Helpers of the WebDAV tests: a real ``dicomfs webdav`` process, curl, multistatus parsing.

The server runs as ``python -m dicomfs webdav`` on a free loopback port, its
log in a file; start-up waits for the port with a deadline and fails the
test (never skips, in CI or not) when the server does not come up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest
from fuse_helpers import REPO

# rel_helpers (small CT files; a command run as another user) lives beside the reliability tests.
sys.path.insert(0, str(Path(__file__).resolve().parent / "reliability"))
from rel_helpers import dicomfs_as, user_python, write_ct_copies

__all__ = ["dicomfs_as", "write_ct_copies"]

DEADLINE = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Share:
    """``dicomfs webdav --index INDEX --port PORT ARGS...``, optionally run as another user."""

    def __init__(
        self, index: Path, *args: str | Path, user: str | None = None, tls: bool = False
    ) -> None:
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        fd, log = tempfile.mkstemp(prefix="dicomfs-webdav-", suffix=".log")
        os.close(fd)
        os.chmod(log, 0o666)
        self.log_path = Path(log)
        command = ["-m", "dicomfs", "webdav", "--index", str(index), "--port", str(self.port)]
        command += [str(a) for a in args]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        if user is None:
            self.args = [sys.executable, *command]
        else:
            import site

            env["PYTHONPATH"] = os.pathsep.join([str(REPO), *site.getsitepackages()])
            env["HOME"] = "/tmp"
            self.args = ["runuser", "-u", user, "--", *user_python(), *command]
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self) -> Share:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=log, env=self.env, cwd="/", start_new_session=True
            )
        deadline = time.monotonic() + DEADLINE
        while True:
            # Ready: the command said so (after binding), and the port answers.
            if " read-only at " in self.log():
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return self
                except OSError:
                    pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                status = self.proc.poll()
                self.kill()
                pytest.fail(f"dicomfs webdav did not start (exit {status}); log:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM, as systemd stops it; the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"dicomfs webdav did not stop; log:\n{self.log()}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> Share:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        self.log_path.unlink(missing_ok=True)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def curl(url: str, *args: str | Path) -> Reply:
    """One request with curl (paths sent as given: ``--path-as-is``)."""
    with tempfile.TemporaryDirectory(prefix="dicomfs-curl-") as scratch:
        head, body = Path(scratch) / "head", Path(scratch) / "body"
        done = subprocess.run(
            ["curl", "-sS", "--path-as-is", "-D", str(head), "-o", str(body),
             "-w", "%{http_code}", *[str(a) for a in args], url],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"curl {url}: {done.stderr}"
        headers: dict[str, str] = {}
        lines = head.read_text(errors="replace").splitlines()
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        data = body.read_bytes() if body.exists() else b""
        return Reply(int(done.stdout), headers, data)


def dav_entries(body: bytes) -> dict[str, dict[str, str]]:
    """href -> {property local name: text} of the 200 propstats of a multistatus body."""
    out: dict[str, dict[str, str]] = {}
    for response in ET.fromstring(body).iter("{DAV:}response"):
        href = unquote(response.findtext("{DAV:}href") or "")
        props: dict[str, str] = {}
        for propstat in response.iter("{DAV:}propstat"):
            if "200" not in (propstat.findtext("{DAV:}status") or ""):
                continue
            for prop in propstat.iter("{DAV:}prop"):
                for element in prop:
                    local = element.tag.split("}")[-1]
                    inner = "".join(child.tag.split("}")[-1] for child in element)
                    props[local] = element.text or inner
        out[href] = props
    return out


def child_names(folder_href: str, body: bytes) -> list[str]:
    """The names a Depth 1 PROPFIND of ``folder_href`` lists (the folder itself left out)."""
    base = folder_href.rstrip("/") + "/"
    names = []
    for href in dav_entries(body):
        if href.rstrip("/") == folder_href.rstrip("/"):
            continue
        assert href.startswith(base), href
        names.append(href[len(base) :].rstrip("/"))
    return names


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under ``root``: (size, mtime_ns, content) by relative path."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            st = path.stat()
            out[os.fsdecode(path.relative_to(root))] = (
                st.st_size,
                st.st_mtime_ns,
                path.read_bytes(),
            )
    return out
