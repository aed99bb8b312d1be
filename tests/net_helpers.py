"""Real DICOM peers on loopback for the network tests: dcmtk tools and an Orthanc PACS.

Everything is started by the tests on free ports, waits with deadlines
(never fixed sleeps), and dumps the peer's log when it does not come up.
dcmtk's dcmqrscp is the IMAGE-level archive (it answers every level and
logs each retrieve request, so a test can read what it served). Orthanc
runs from the Debian package with a configuration generated into a
temporary folder: storage and index there, HTTP on loopback only
(RemoteAccessAllowed false), and DICOM access limited to known AE titles
at 127.0.0.1 (DicomCheckModalityHost), because Orthanc 1.10 cannot bind
its DICOM port to one address.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

OUR_AE = "DICOMFS"
PACS_AE = "ORTHANCTEST"
UPLOADER_AE = "UPLOADER"
START_TIMEOUT = 30.0
TOOL_TIMEOUT = 120.0

# Orthanc answers only STUDY and SERIES level when this filter is loaded: an
# error raised in IncomingFindRequestFilter turns an IMAGE-level C-FIND into
# a failure status, as a series-only PACS answers (Orthanc Book, "Lua").
SERIES_ONLY_LUA = """
function IncomingFindRequestFilter(query, origin)
  if query['0008,0052'] == 'IMAGE' then
    error('this PACS answers STUDY and SERIES level queries only')
  end
  return query
end
"""


def free_port() -> int:
    """A port nobody listens on right now (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def require_tool(name: str) -> str:
    """The tool's path; a skip when it is missing, a failure in CI (CI=true), where it must be."""
    path = shutil.which(name)
    if path is None:
        why = f"{name} is not installed (scripts/setup.sh --test installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return path


def storescu(
    port: int,
    paths: Sequence[Path],
    *,
    called: str = OUR_AE,
    calling: str = "STORESCU",
    extra: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """dcmtk storescu: one association, contexts for exactly the files' classes (-R).

    Verbose, because storescu reports each response status ("Received Store
    Response (Refused: OutOfResources)") only in verbose mode; with --no-halt
    it exits 0 even when responses were failures, so tests read the status lines.
    """
    require_tool("storescu")
    command = [
        "storescu",
        "-v",
        "-aet",
        calling,
        "-aec",
        called,
        "-R",
        "+C",
        "-nh",
        "-to",
        "30",
        *extra,
        "127.0.0.1",
        str(port),
        *map(str, paths),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT)


def store_responses(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The status of each C-STORE response storescu received, in order."""
    return re.findall(r"Received Store Response \(([^)]*)\)", result.stderr)


def echoscu(port: int, *, called: str = OUR_AE, calling: str = "ECHOSCU") -> int:
    require_tool("echoscu")
    command = ["echoscu", "-to", "10", "-aet", calling, "-aec", called, "127.0.0.1", str(port)]
    return subprocess.run(command, capture_output=True, timeout=TOOL_TIMEOUT).returncode


def read_store(store: Path) -> dict[str, Path]:
    """SOP Instance UID -> file, for every finished file in a store (dot-files are partial)."""
    found: dict[str, Path] = {}
    for path in store.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            ds = dcmread(path, stop_before_pixels=True)
            found[str(ds.SOPInstanceUID)] = path
    return found


def series_in_store(store: Path) -> dict[str, set[str]]:
    """Series Instance UID -> SOP Instance UIDs of what a store holds."""
    result: dict[str, set[str]] = {}
    for path in store.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            ds = dcmread(path, stop_before_pixels=True)
            result.setdefault(str(ds.SeriesInstanceUID), set()).add(str(ds.SOPInstanceUID))
    return result


def _pixels_le(ds: Dataset) -> bytes | None:
    """Pixel data as little-endian bytes (16-bit words swapped back for big endian)."""
    if "PixelData" not in ds:
        return None
    data = bytes(ds.PixelData)
    if ds.original_encoding[1] is False and int(ds.get("BitsAllocated", 8)) == 16:
        swapped = bytearray(data)
        swapped[0::2], swapped[1::2] = data[1::2], data[0::2]
        return bytes(swapped)
    return data


def same_dataset(a: Path, b: Path) -> bool:
    """Same elements and values after decoding, whatever the transfer syntax of each file."""
    left, right = dcmread(a, force=True), dcmread(b, force=True)
    if _pixels_le(left) != _pixels_le(right):
        return False
    for ds in (left, right):
        if "PixelData" in ds:
            del ds.PixelData
    return bool(left == right)


class _Peer:
    """What the private peers share: launch, wait until they answer, their log, stop.

    Subclasses are dataclasses with ``root`` and ``process``, a ``log_path``
    and an ``_answers`` check (which calls ``_running`` first).
    """

    name = "peer"
    root: Path
    process: subprocess.Popen[bytes] | None

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    def _answers(self) -> bool:
        raise NotImplementedError

    def _launch(self, args: list[str], waiting_for: str) -> None:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True
        )
        log.close()
        try:
            wait_until(self._answers, START_TIMEOUT, f"{self.name} to answer {waiting_for}")
        except AssertionError:
            self.stop()
            raise AssertionError(f"{self.name} did not start; its log:\n{self.log()}") from None

    def _running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited at start; its log:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


@dataclass
class Orthanc(_Peer):
    """A private Orthanc: start() writes the config, launches it and waits until it answers."""

    name = "Orthanc"
    root: Path
    series_only: bool = False
    move_port: int | None = None
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{PACS_AE}@127.0.0.1:{self.dicom_port}"

    @property
    def log_path(self) -> Path:
        return self.root / "orthanc.log"

    def config(self) -> dict[str, object]:
        scripts = []
        if self.series_only:
            lua = self.root / "series_only.lua"
            lua.write_text(SERIES_ONLY_LUA)
            scripts.append(str(lua))
        return {
            "Name": "dicomfs-test",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "storage"),
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "OrthancExplorerEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": PACS_AE,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomCheckModalityHost": True,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowGet": False,
            "DicomAlwaysAllowMove": False,
            "DicomModalities": {
                "dicomfs": [OUR_AE, "127.0.0.1", self.move_port or 104],
                "uploader": [UPLOADER_AE, "127.0.0.1", 104],
            },
            "DicomScpTimeout": 30,
            "LuaScripts": scripts,
            "Plugins": [],
            "SaveJobs": False,
            "StableAge": 1,
            "OverwriteInstances": False,
        }

    def start(self) -> None:
        binary = require_tool("Orthanc")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "orthanc.json"
        config.write_text(json.dumps(self.config(), indent=2))
        self._launch([binary, str(config)], "HTTP and DICOM")

    def _answers(self) -> bool:
        self._running()
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/system", timeout=2
            ) as reply:
                if reply.status != 200:
                    return False
        except OSError:
            return False
        return echoscu(self.dicom_port, called=PACS_AE, calling=OUR_AE) == 0

    def upload(self, paths: Iterable[Path]) -> None:
        files = list(paths)
        expected = self.count_instances() + len(files)
        result = storescu(self.dicom_port, files, called=PACS_AE, calling=UPLOADER_AE)
        assert result.returncode == 0, result.stderr + self.log()
        wait_until(lambda: self.count_instances() >= expected, START_TIMEOUT, "Orthanc to store")

    def count_instances(self) -> int:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.http_port}/statistics", timeout=5
        ) as reply:
            return int(json.loads(reply.read())["CountInstances"])


QR_AE = "QRSCP"
# A retrieve request as dcmqrscp -v logs it: the header, then the identifier dump.
_RETRIEVE_LOG = re.compile(r"(?:Get|Move) SCP Request Identifiers: *\nI: *\n(.*?)\nI: *\n", re.S)
_STUDY_LINE = re.compile(r"\(0020,000d\) UI \[([^\]]*)\]")


@dataclass
class Dcmqrscp(_Peer):
    """dcmtk's archive: start() writes its config, launches it and waits until it answers.

    It forks one process per association (the default): dcmtk 3.6.7's
    single-process mode crashes when a C-GET association is released.
    ``move_port`` is where C-MOVE deliveries to our AE title go.
    """

    name = "dcmqrscp"
    root: Path
    move_port: int | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{QR_AE}@127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "dcmqrscp.log"

    def config(self) -> str:
        storage = self.root / "db"
        storage.mkdir(parents=True, exist_ok=True)
        return (
            f"NetworkTCPPort = {self.port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
            "HostTable BEGIN\n"
            f"dicomfs = ({OUR_AE}, 127.0.0.1, {self.move_port or 104})\n"
            "HostTable END\n"
            "VendorTable BEGIN\nVendorTable END\n"
            "AETable BEGIN\n"
            f"{QR_AE} {storage} RW (500, 1024mb) ANY\n"
            "AETable END\n"
        )

    def start(self) -> None:
        binary = require_tool("dcmqrscp")
        require_tool("echoscu")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "dcmqrscp.cfg"
        config.write_text(self.config())
        self._launch([binary, "-v", "-c", str(config), str(self.port)], "C-ECHO")

    def _answers(self) -> bool:
        self._running()
        return echoscu(self.port, called=QR_AE, calling=OUR_AE) == 0

    def upload(self, paths: Iterable[Path]) -> None:
        files = list(paths)
        result = storescu(self.port, files, called=QR_AE, calling=UPLOADER_AE)
        statuses = store_responses(result)
        assert result.returncode == 0 and statuses == ["Success"] * len(files), (
            result.stderr[-3000:] + self.log()
        )

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def retrieved_studies(self, since: int = 0) -> list[str]:
        """The Study Instance UID of each C-GET and C-MOVE request it was sent (after ``since``)."""
        with self.log_path.open("rb") as handle:
            handle.seek(since)
            text = handle.read().decode(errors="replace")
        return [
            study
            for block in _RETRIEVE_LOG.findall(text)
            for study in _STUDY_LINE.findall(block)[:1]
        ]


@contextlib.contextmanager
def running_dcmqrscp(root: Path, *, move_port: int | None = None) -> Iterator[Dcmqrscp]:
    server = Dcmqrscp(root, move_port=move_port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_orthanc(
    root: Path, *, series_only: bool = False, move_port: int | None = None
) -> Iterator[Orthanc]:
    server = Orthanc(root, series_only=series_only, move_port=move_port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def demo_files(root: Path, relpaths: Iterable[str]) -> list[Path]:
    return [root / rel for rel in relpaths]


def environ_without_config() -> dict[str, str]:
    """The environment for a CLI run that must not read the system config file."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DICOMFS_")}
