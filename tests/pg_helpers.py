"""A private PostgreSQL cluster for tests and benchmarks: its own folder, socket and port.

Never the system's server: each user of this module runs ``initdb`` into a
new folder under /tmp and ``pg_ctl start`` with TCP off
(``listen_addresses = ''``): the only way in is a Unix socket in that folder.
The server refuses to run as root, so under root (CI) the cluster belongs to
``nobody``; the folder is not under pytest's tmp_path, whose 0700 base
nobody could not enter. Clients connect as the cluster's superuser
``dicomfs`` with trust authentication on that socket only, which is what a
private throwaway cluster may do and a real deployment must not (README,
"Several hosts", has the roles to use there).

No pytest here: the benchmark imports it too. Failing to start raises
``PgError``; tests decide whether that skips or fails.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

SUPERUSER = "dicomfs"
PORT = 5432  # a Unix socket in a private folder: no port is shared with anyone
_counter = itertools.count(1)


class PgError(RuntimeError):
    """The private cluster could not be set up or started."""


def server_bin() -> Path | None:
    """Debian keeps the server's programs in /usr/lib/postgresql/<major>/bin: the newest."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def postgres_missing() -> str | None:
    """Why this machine cannot start a private cluster, or None."""
    if server_bin() is None:
        return "initdb/pg_ctl missing (Debian package postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg missing (pip install psycopg[binary])"
    return None


class PrivateCluster:
    """One throwaway cluster; ``database()`` gives each test a new, empty database.

    ``tcp_port``: also listen on 127.0.0.1 at that port and give URLs over TCP
    (the benchmark measures a server on loopback, as a client reaches one; its
    data is synthetic, and trust authentication lets any local user in while
    it runs).
    """

    def __init__(self, tcp_port: int | None = None) -> None:
        self.tcp_port = tcp_port
        bindir = server_bin()
        if bindir is None:
            raise PgError("initdb/pg_ctl missing (Debian package postgresql)")
        self.bindir = bindir
        self.folder = Path(tempfile.mkdtemp(prefix="dicomfs-pg-", dir="/tmp"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.folder, nobody.pw_uid, nobody.pw_gid)
            self._as = ["runuser", "-u", "nobody", "--"]
        self.folder.chmod(0o700)
        self.running = False

    def _run(self, *cmd: str) -> None:
        done = subprocess.run(
            [*self._as, *cmd], capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise PgError(f"{cmd[0]} failed ({done.returncode}): {done.stderr.strip()}\n{log}")

    def start(self) -> PrivateCluster:
        """Make the cluster and start its server."""
        self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
            "-E", "UTF8", "--locale=C", "--no-instructions",
        )  # fmt: skip
        self.resume()
        return self

    def resume(self) -> None:
        """Start the server (again) on the cluster's own socket."""
        listen = "127.0.0.1" if self.tcp_port else ""
        settings = (
            f"-c listen_addresses='{listen}' -c unix_socket_directories={self.folder} "
            f"-p {self.tcp_port or PORT} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", settings, "-w", "-t", "60", "start",
        )  # fmt: skip
        self.running = True

    def pause(self) -> None:
        """Stop the server, keeping the cluster: every connection to it is lost."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.running = False

    def restart(self) -> None:
        """Stop the server and start it again."""
        self.pause()
        self.resume()

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        """A libpq URL to ``database`` over this cluster's socket (or TCP, ``tcp_port``)."""
        if self.tcp_port:
            return f"postgresql://{user}@127.0.0.1:{self.tcp_port}/{database}"
        return (
            f"postgresql://{user}@/{database}?host={quote(str(self.folder), safe='')}&port={PORT}"
        )

    def database(self) -> str:
        """A new, empty database; its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(_counter)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast: the data is thrown away) and remove its folder."""
        if self.running:
            with contextlib.suppress(PgError, subprocess.TimeoutExpired):
                self.pause()
        shutil.rmtree(self.folder, ignore_errors=True)
