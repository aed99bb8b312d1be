"""``dicomfs serve`` as a real process: index + watch + FUSE mount, crash and restart, sd_notify.

In CI (CI=true) a test that cannot mount fails instead of skipping
(fuse_helpers.require_fuse).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuse_helpers import public_dir, wait_for
from pydicom import dcmread
from serve_helpers import ServeProcess, mount_state, unmount_if_needed

from dicomfs.demo import write_ct_series
from dicomfs.errors import ConfigError
from dicomfs.index import IndexReader, IndexWriter
from dicomfs.service.config import Settings
from dicomfs.service.notify import Notifier
from dicomfs.service.serve import LiveIndex, serve

DEADLINE = 30.0


def sop_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@pytest.fixture(scope="module")
def ct_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_ct_series(tmp_path_factory.mktemp("ct"), 400, rows=64, seed=3)


@pytest.fixture
def dirs() -> Iterator[tuple[Path, Path, Path]]:
    base = public_dir("dicomfs-serve-")
    src, mnt = base / "src", base / "mnt"
    src.mkdir()
    mnt.mkdir()
    yield src, mnt, base / "index.sqlite"
    unmount_if_needed(mnt)
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.fuse
@pytest.mark.watch
def test_copied_file_appears_in_the_mount_and_sigterm_unmounts(
    dirs: tuple[Path, Path, Path], ct_files: list[Path]
) -> None:
    src, mnt, index = dirs
    mnt.rmdir()  # the quick start creates a missing mountpoint
    serve = ServeProcess([src], mnt, index, verbose=0).start()
    try:
        shutil.copy(ct_files[0], src / "incoming.dcm")
        served = mnt / "by-sop" / f"{sop_uid(ct_files[0])}.dcm"
        wait_for(served.exists, DEADLINE, f"{served} in the mount")
        assert served.read_bytes() == ct_files[0].read_bytes()
        status = json.loads((mnt / ".dicomfs" / "status.json").read_bytes())
        assert status["instances"] == 1 and status["ingest"]["queued"] == 0
        assert status["ingest"]["alarms"] == []
        assert serve.terminate() == 0
        assert mount_state(mnt) == "plain"
        assert "unmounted" in serve.log()
    finally:
        serve.cleanup()


@pytest.mark.fuse
@pytest.mark.watch
def test_kill9_mid_burst_then_restart(dirs: tuple[Path, Path, Path], ct_files: list[Path]) -> None:
    src, mnt, index = dirs
    serve = ServeProcess([src], mnt, index, verbose=0).start()
    # The burst's second half arrives only after the kill, so there is always work left
    # for the restart: 400 small files could otherwise all be indexed in one batch
    # between two looks at the count (it happened in CI).
    killed = threading.Event()

    def copy() -> None:
        for number, path in enumerate(ct_files):
            if number == len(ct_files) // 2:
                killed.wait(DEADLINE)
            shutil.copy(path, src / path.name)

    copying = threading.Thread(target=copy, name="copier")
    try:
        copying.start()
        reader = IndexReader(index)
        wait_for(lambda: reader.status().instances >= 50, DEADLINE, "the burst to be half-way")
        reader.close()
        serve.kill9()
        killed.set()
        copying.join()
        # No orphan may keep the FUSE connection: the mount must say ENOTCONN, not hang.
        assert mount_state(mnt) == "stale"
        reader = IndexReader(index)
        assert reader.quick_check() == "ok"
        assert reader.status().instances < len(ct_files)
        reader.close()

        # The restarted serve clears the stale mount itself.
        restarted = ServeProcess([src], mnt, index, verbose=0).start()
        try:
            reader = IndexReader(index)
            wait_for(
                lambda: reader.status().instances == len(ct_files), DEADLINE, "all files indexed"
            )
            assert reader.status().files == len(ct_files)  # each file once
            listed = sorted(os.listdir(mnt / "by-sop"))
            assert listed == sorted(f"{sop_uid(p)}.dcm" for p in ct_files)
            reader.close()
            assert restarted.terminate() == 0
        finally:
            restarted.cleanup()
    finally:
        killed.set()  # a failure before the kill must not leave the copier waiting
        serve.cleanup()


@pytest.mark.fuse
@pytest.mark.watch
def test_sd_notify_ready_only_when_mounted_and_watchdog_pings(
    dirs: tuple[Path, Path, Path],
) -> None:
    src, mnt, index = dirs
    sock_path = index.parent / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(DEADLINE)
    env = {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"}
    serve = ServeProcess([src], mnt, index, verbose=0, env=env)
    try:
        serve.start(wait_mounted=False)
        messages: list[str] = []
        mounted_at_ready = None

        def seen(prefix: str) -> int:
            return sum(m.startswith(prefix) for m in messages)

        while not (seen("READY=1") and seen("WATCHDOG=1") >= 2 and seen("STATUS=")):
            message = sock.recv(4096).decode()
            if message.startswith("READY=1"):
                mounted_at_ready = mount_state(mnt)
            messages.append(message)
        assert mounted_at_ready == "mounted", messages
        assert seen("READY=1") == 1
        assert any("instances" in m for m in messages if m.startswith("STATUS="))
        assert serve.terminate() == 0
        sock.settimeout(5)
        tail = []
        with contextlib.suppress(TimeoutError):
            while not any("STOPPING=1" in m for m in tail):
                tail.append(sock.recv(4096).decode())
        assert any("STOPPING=1" in m for m in tail)
    finally:
        sock.close()
        serve.cleanup()


# -- without FUSE -------------------------------------------------------------------


def receiver(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(DEADLINE)
    return sock


def test_notifier_speaks_sd_notify(tmp_path: Path) -> None:
    sock = receiver(tmp_path / "n.sock")
    try:
        notifier = Notifier(
            {"NOTIFY_SOCKET": str(tmp_path / "n.sock"), "WATCHDOG_USEC": "30000000"}
        )
        assert notifier.enabled and notifier.watchdog_interval == 15.0
        assert notifier.ready("mounted")
        assert sock.recv(100) == b"READY=1\nSTATUS=mounted"
        assert notifier.status("two\nlines") and sock.recv(100) == b"STATUS=two"
        assert notifier.watchdog() and sock.recv(100) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_notifier_abstract_socket_and_disabled_cases(tmp_path: Path) -> None:
    name = f"dicomfs-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(DEADLINE)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).stopping()
        assert sock.recv(100) == b"STOPPING=1"
    finally:
        sock.close()
    assert not Notifier({}).enabled and Notifier({}).ready() is False
    other_pid = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
    assert Notifier(other_pid).watchdog_interval is None  # pings are for another process
    assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}).ready() is False  # logged


def notified_live(tmp_path: Path) -> tuple[LiveIndex, IndexWriter, socket.socket]:
    """A LiveIndex over an empty source that pings every 50 ms to a socket of the test's."""
    src = tmp_path / "src"
    src.mkdir()
    sock = receiver(tmp_path / "n.sock")
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "n.sock"), "WATCHDOG_USEC": "100000"})
    writer = IndexWriter(tmp_path / "i.sqlite")
    live = LiveIndex(
        Settings(sources=(src,), index=tmp_path / "i.sqlite"), writer, notifier=notifier
    )
    return live, writer, sock


@pytest.mark.watch
def test_watchdog_pings_stop_when_the_writer_dies(tmp_path: Path) -> None:
    live, writer, sock = notified_live(tmp_path)
    try:
        live.start()
        pings = 0
        while pings < 3:
            pings += sock.recv(4096) == b"WATCHDOG=1"
        live.ingest.stop()  # the writer thread is gone: systemd must restart us
        assert not live.healthy()
        sock.settimeout(0.05)
        with contextlib.suppress(TimeoutError):
            while True:
                sock.recv(4096)  # drain what was sent before the stop was noticed
        sock.settimeout(0.5)  # ten ping intervals
        late = []
        with contextlib.suppress(TimeoutError):
            while True:
                late.append(sock.recv(4096))
        assert b"WATCHDOG=1" not in late
    finally:
        live.stop()
        writer.close()
        sock.close()


@pytest.mark.watch
def test_watchdog_pings_go_on_while_the_status_line_is_counting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting a ten-million-file index took 46 s cold: a ping must never wait for it."""
    counting, release, counted = threading.Event(), threading.Event(), threading.Event()

    def slow_status_line(self: LiveIndex) -> str:
        counting.set()
        release.wait(DEADLINE)
        counted.set()
        return "counted"

    monkeypatch.setattr(LiveIndex, "status_line", slow_status_line)
    live, writer, sock = notified_live(tmp_path)
    try:
        live.start()
        assert counting.wait(DEADLINE)
        pings = 0
        while pings < 5:  # each recv fails the test after DEADLINE without one
            pings += sock.recv(4096) == b"WATCHDOG=1"
        assert not counted.is_set()  # the pings came while the count was running
        release.set()
        while sock.recv(4096) != b"STATUS=counted":
            pass
    finally:
        release.set()
        live.stop()
        writer.close()
        sock.close()


def test_serve_needs_sources_and_mountpoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no source folder"):
        serve(Settings(mountpoint=tmp_path, index=tmp_path / "i.sqlite"))
    with pytest.raises(ConfigError, match="no mountpoint"):
        serve(Settings(sources=(tmp_path,), index=tmp_path / "i.sqlite"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.fuse
@pytest.mark.watch
def test_serve_receives_cstore_into_the_mount(
    dirs: tuple[Path, Path, Path], ct_files: list[Path]
) -> None:
    """`serve --scp-port`: dcmtk's storescu sends, the object appears in by-sop/."""
    src, mnt, index = dirs
    port = free_port()
    extra = ("--scp-port", str(port), "--ae-title", "DICOMFS")
    serve = ServeProcess([src], mnt, index, *extra, verbose=0)
    serve.start()
    try:
        wait_for(
            lambda: (
                subprocess.run(
                    ["echoscu", "-aec", "DICOMFS", "127.0.0.1", str(port)], capture_output=True
                ).returncode
                == 0
            ),
            DEADLINE,
            "the receiver to answer C-ECHO",
        )
        sent = subprocess.run(
            ["storescu", "-aec", "DICOMFS", "127.0.0.1", str(port), str(ct_files[1])],
            capture_output=True,
            text=True,
        )
        assert sent.returncode == 0, sent.stderr
        served = mnt / "by-sop" / f"{sop_uid(ct_files[1])}.dcm"
        wait_for(served.exists, DEADLINE, f"{served} in the mount")
        assert dcmread(served).PixelData == dcmread(ct_files[1]).PixelData
        assert any((src / "received").rglob("*.dcm"))
        assert serve.terminate() == 0
    finally:
        serve.cleanup()
