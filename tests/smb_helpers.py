"""A private Samba server for tests and benchmarks: its own config, state and port, loopback only.

The system's smbd/nmbd stay disabled; each user of this module starts its
own ``smbd --foreground`` with every directory it writes (private, lock,
state, cache, pid, ncalrpc, log) inside one folder, listening on a free port
of 127.0.0.1 only. The shares are the shipped example
(``systemd/smb-dicomfs.conf.example``) with only the path and the readers'
group replaced, so what the tests prove is what an administrator installs.
smbd runs in a session of its own and is ended by that session's id.

No pytest here: the benchmark imports it too. Failing to start raises
``SmbError``; tests decide whether that skips or fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "systemd" / "smb-dicomfs.conf.example"
SHIPPED_PATH = "/mnt/dicomfs"
SHIPPED_GROUP = "dicomfs-readers"
TOOLS = ("smbd", "smbclient", "smbpasswd", "testparm", "smbstatus")
DEADLINE = 30.0


class SmbError(RuntimeError):
    """The private smbd could not be set up or started."""


def samba_missing() -> str | None:
    """Why this machine cannot run the SMB tests, or None."""
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    if absent:
        return f"{', '.join(absent)} missing (Debian packages samba, smbclient)"
    if os.geteuid() != 0:
        return "smbd must start as root to serve several users"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shipped_share(name: str, path: Path, group: str) -> str:
    """The shipped example, its share renamed to ``name`` and pointed at ``path``.

    The example's own ``[global]`` lines are kept (they extend the private
    ``[global]`` written before them).
    """
    text = SHIPPED.read_text()
    assert f"   path = {SHIPPED_PATH}\n" in text and f"@{SHIPPED_GROUP}" in text
    text = text.replace(f"   path = {SHIPPED_PATH}\n", f"   path = {path}\n")
    text = text.replace(f"@{SHIPPED_GROUP}", f"@{group}")
    return text.replace("[dicomfs]", f"[{name}]")


def share_section(text: str) -> str:
    """The share section of a ``shipped_share`` text (to add a second share like it)."""
    start = text.index("\n[", text.index("[global]") + 1)
    return text[start:]


class PrivateSmbd:
    """``smbd --foreground`` on 127.0.0.1:``port`` with the shipped shares at ``shares``.

    ``shares`` maps a share name to the folder it shares; all of them take
    the options of the shipped ``[dicomfs]`` share and admit ``group``.
    """

    def __init__(self, base: Path, shares: dict[str, Path], group: str) -> None:
        self.base = base
        self.port = free_port()
        self.conf = base / "smb.conf"
        self.log_path = base / "smbd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        dirs = {}
        for key in ("private", "lock", "state", "cache", "pid", "ncalrpc", "log"):
            dirs[key] = base / key
            dirs[key].mkdir(parents=True, exist_ok=True)
        dirs["private"].chmod(0o700)
        own = f"""[global]
   # Everything this smbd writes stays in {base}; nothing of the system's Samba is used.
   private dir = {dirs["private"]}
   lock directory = {dirs["lock"]}
   state directory = {dirs["state"]}
   cache directory = {dirs["cache"]}
   pid directory = {dirs["pid"]}
   ncalrpc dir = {dirs["ncalrpc"]}
   log file = {dirs["log"]}/log.%m
   log level = 1
   passdb backend = tdbsam:{dirs["private"]}/passdb.tdb
   server role = standalone server
   smb ports = {self.port}
   interfaces = lo
   bind interfaces only = yes
   disable netbios = yes
   load printers = no
   printing = bsd
   printcap name = /dev/null
   disable spoolss = yes
"""
        names = list(shares)
        text = own + shipped_share(names[0], shares[names[0]], group)
        for name in names[1:]:
            text += "\n" + share_section(shipped_share(name, shares[name], group))
        self.conf.write_text(text)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> PrivateSmbd:
        """Start smbd and return once it accepts connections; SmbError with its log if not."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    "smbd",
                    "--foreground",
                    "--no-process-group",
                    "--debug-stdout",
                    "-s",
                    str(self.conf),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + DEADLINE
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                status = self.proc.poll()
                self.stop()
                raise SmbError(
                    f"smbd did not start (exit {status}); its log:\n{self.log()[-4000:]}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """End smbd and every process of its session (connection children, helpers)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        deadline = time.monotonic() + 10
        while _session_members(self.proc.pid) and time.monotonic() < deadline:
            for pid in _session_members(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def add_user(self, name: str, password: str) -> None:
        """A Samba account (private passdb) for the existing Unix user ``name``."""
        done = subprocess.run(
            ["smbpasswd", "-c", str(self.conf), "-a", "-s", name],
            input=f"{password}\n{password}\n".encode(),
            capture_output=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise SmbError(f"smbpasswd -a {name}: {done.stdout!r} {done.stderr!r}")

    def client_args(self, share: str, user: str, password: str, *extra: str) -> list[str]:
        return [
            "smbclient", "-p", str(self.port), f"//127.0.0.1/{share}", "-U", f"{user}%{password}",
            "-m", "SMB3", "--option=client min protocol=SMB3", *extra,
        ]  # fmt: skip

    def client(
        self, share: str, user: str, password: str, commands: str, *extra: str, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``smbclient -c COMMANDS``; stdout and stderr together in ``stdout``."""
        return subprocess.run(
            [*self.client_args(share, user, password, *extra), "-c", commands],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=timeout,
            cwd=self.base,
        )

    def status(self) -> str:
        done = subprocess.run(
            ["smbstatus", "-s", str(self.conf)], capture_output=True, text=True, timeout=60
        )
        return done.stdout + done.stderr


def _session_members(sid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry)) == sid:
                    found.append(int(entry))
    return found


def listing_names(output: str) -> set[str]:
    """Names of an smbclient ``ls`` (lines "  NAME   ATTRS   SIZE  DATE"), without . and .."""
    names = set()
    for line in output.splitlines():
        match = re.match(r"^  (\S.*?)\s+([DAHSRN]+)\s+\d+\s+\w{3} \w{3}", line)
        if match and match.group(1) not in (".", ".."):
            names.add(match.group(1))
    return names


def space_of(output: str) -> tuple[int, int]:
    """(total, available) bytes from smbclient's "N blocks of size S. M blocks available"."""
    match = re.search(r"(\d+) blocks of size (\d+)\. (\d+) blocks available", output)
    if match is None:
        raise AssertionError(f"no space figures in:\n{output}")
    blocks, size, free = (int(g) for g in match.groups())
    return blocks * size, free * size
