"""dicomfs side by side with Orthanc on the same files, in one run (issue 5, part 1).

    bash bench/orthanc_setup.sh   # once: Debian's orthanc + dcmtk, no system Orthanc left running
    .venv/bin/python bench/peer_orthanc.py [--ct 1000] [--rows 512] [--plan-ct 100] [--lookups 1000]

Dataset (generated once under ``--work``): one CT series of ``--ct`` slices of
``--rows``x``--rows`` (0.5 MB each at 512) and one synthetic RT patient (plan,
structure sets, doses, images, record) whose CT has ``--plan-ct`` slices.

Orthanc (Debian's package) runs with a generated configuration: HTTP and
DICOM ports on free loopback ports, storage and index in a temporary folder,
WebDAV on, remote access off, no plugins. Orthanc 1.10 cannot bind one
address, so the whole benchmark re-executes itself in a private network
namespace (``unshare --net``) whose only interface is loopback: nothing
outside this machine's loopback can reach it. ``--no-netns`` skips that
(remote HTTP is then refused by ``RemoteAccessAllowed: false`` and remote
C-STORE by the modality host check). Orthanc is stopped at the end.

Compared, on the same files and in the same run (warm page cache unless said):
1. making files available: ``dicomfs index`` of the files in place vs Orthanc
   ingest by C-STORE (``storescu``) and by REST upload (``POST /instances``);
2. finding an instance by SOP Instance UID: ``stat by-sop/<uid>.dcm`` vs
   ``POST /tools/find`` at instance level (keep-alive), p50 and p99;
3. listing the series: ``ls -l by-series/<uid>/`` vs WebDAV ``PROPFIND``
   (Depth 1) of ``by-uids/<study>/<series>/``;
4. reading every file of the series: through the mount vs WebDAV ``GET``;
5. everything the plan needs: listing and reading ``plans/<uid>/references/``
   vs the REST requests a client makes (plan by UID, its structure set by UID,
   the structure set's series, doses found by plan).
The table goes to BENCHMARKS.md between the ``orthanc`` markers.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import http.client
import io
import json
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, drop_caches, machine_line, table, write_section

NETNS_ENV = "DICOMFS_BENCH_NETNS"
ORTHANC_AET = "ORTHANC"
SCU_AET = "BENCHSCU"
DICOMFS = str(Path(sys.executable).with_name("dicomfs"))
# DCMTK (storescu, and Orthanc's DICOM server) leaves Nagle's algorithm on unless
# TCP_NODELAY=1: each C-STORE then waits for a delayed ACK (about 90 ms on loopback).
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


# -- small helpers ------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}" if seconds < 0.01 else f"{seconds * 1e3:.1f}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def loopback_up() -> None:
    """Bring ``lo`` up in a fresh network namespace (SIOCGIFFLAGS / SIOCSIFFLAGS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, 0x8913, request))[1]
        fcntl.ioctl(sock, 0x8914, struct.pack("16sh", b"lo", flags | 1))


def interfaces() -> list[str]:
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return [line.split(":", 1)[0].strip() for line in lines]


def read_file(path: str) -> int:
    total = 0
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(1 << 20):
            total += len(chunk)
    return total


# -- dataset -------------------------------------------------------------------------------


@dataclass
class BenchData:
    root: Path
    files: list[Path]
    ct_series: str
    ct_study: str
    ct_uids: list[str]
    plan_uid: str
    plan_study: str
    total_bytes: int


def generate(work: Path, ct: int, rows: int, plan_ct: int) -> BenchData:
    from dicomfs.demo import demo_uid, write_ct_series, write_demo

    root = work / f"orthanc-{ct}-{rows}-{plan_ct}"
    marker = work / f"{root.name}.complete"  # outside: storescu sends every file of root
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        print(f"generating {ct} CT files ({rows}x{rows}) + one RT patient in {root}", flush=True)
        write_ct_series(root / "ct", ct, rows=rows)
        write_demo(root / "rt", patients=1, ct_slices=plan_ct, ct_rows=rows, hostile=False)
        marker.write_text("ok\n")
    # The generators are deterministic: the UIDs are the same on every run.
    demo = _demo_uids(root / "rt", plan_ct, rows)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return BenchData(
        root=root,
        files=files,
        ct_series=demo_uid(0, "bench", "series", rows, ct),
        ct_study=demo_uid(0, "bench", "study"),
        ct_uids=[demo_uid(0, "bench", "ct", rows, ct, i) for i in range(ct)],
        plan_uid=demo["plan"],
        plan_study=demo["study"],
        total_bytes=sum(p.stat().st_size for p in files),
    )


def _demo_uids(rt: Path, plan_ct: int, rows: int) -> dict[str, str]:
    """Plan and study UIDs of the demo patient, by writing it again into a scratch folder."""
    from dicomfs.demo.patients import write_demo

    with tempfile.TemporaryDirectory(prefix="dicomfs-bench-uids-") as scratch:
        patient = write_demo(
            Path(scratch), patients=1, ct_slices=plan_ct, ct_rows=rows, hostile=False
        ).patients[0]
        if not (rt / patient.files[patient.plan_uid]).is_file():
            raise RuntimeError(f"{rt} does not hold the expected demo patient; delete it")
        return {"plan": patient.plan_uid, "study": patient.study_uid}


# -- Orthanc -------------------------------------------------------------------------------


class Client:
    """One keep-alive HTTP/1.1 connection to Orthanc that counts its requests."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.requests = 0
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        self.requests += 1
        self.conn.request(method, path, body=body, headers=headers or {})
        response = self.conn.getresponse()
        data = response.read()
        if response.getheader("Connection", "").lower() == "close":
            self.conn.close()
        return response.status, data

    def json(self, method: str, path: str, payload: Any = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        status, data = self.call(method, path, body, {"Content-Type": "application/json"})
        if status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {data[:200]!r}")
        return json.loads(data)

    def find(self, level: str, query: dict[str, str]) -> list[str]:
        return list(self.json("POST", "/tools/find", {"Level": level, "Query": query}))

    def close(self) -> None:
        self.conn.close()


class Orthanc:
    """Debian's Orthanc with a generated configuration, in a temporary folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / "orthanc.log"
        self.config = folder / "orthanc.json"

    def configuration(self) -> dict[str, Any]:
        return {
            "Name": "dicomfs-bench",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "StorageCompression": False,
            "Plugins": [],
            "LuaScripts": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "HttpCompressionEnabled": False,
            "KeepAlive": True,
            "TcpNoDelay": True,
            "OrthancExplorerEnabled": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "WebDavEnabled": True,
            "WebDavDeleteAllowed": False,
            "WebDavUploadAllowed": False,
            "DicomServerEnabled": True,
            "DicomAet": ORTHANC_AET,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": False,
            "DicomCheckModalityHost": True,
            "DicomModalities": {"bench": [SCU_AET, "127.0.0.1", 104]},
            "SaveJobs": False,
            "OverwriteInstances": False,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
        }

    def start(self) -> Orthanc:
        shutil.rmtree(self.folder / "storage", ignore_errors=True)
        shutil.rmtree(self.folder / "index", ignore_errors=True)
        self.config.write_text(json.dumps(self.configuration(), indent=2))
        orthanc = shutil.which("Orthanc")
        if orthanc is None:
            raise SystemExit("Orthanc is not installed: run bash bench/orthanc_setup.sh")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [orthanc, str(self.config)],
                stdout=log,
                stderr=log,
                start_new_session=True,
                env=DCMTK_ENV,
            )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Orthanc did not start:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                client = Client(self.http_port)
                try:
                    self.version = str(client.json("GET", "/system")["Version"])
                    return self
                finally:
                    client.close()
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def client(self) -> Client:
        return Client(self.http_port)


# -- dicomfs mount ---------------------------------------------------------------------------


@contextlib.contextmanager
def mounted(index: Path, mountpoint: Path) -> Iterator[Path]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    log = mountpoint.parent / "mount.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dicomfs.fuse.mount", str(mountpoint), "--index", str(index)],
            stdout=out,
            stderr=out,
        )
    deadline = time.monotonic() + 30
    while not os.path.ismount(mountpoint):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"mount failed:\n{log.read_text()}")
        time.sleep(0.05)
    try:
        yield mountpoint
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)


# -- measurements ---------------------------------------------------------------------------


@dataclass
class Results:
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, what: str, ours: str, peer: str, ratio: float, target: float | None) -> None:
        verdict = ""
        if target is not None:
            verdict = f">= {target:g}x: {'met' if ratio >= target else 'NOT met'}"
        shown = f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.0f}x"
        self.rows.append([what, ours, peer, shown, verdict])
        print(" | ".join(self.rows[-1]), flush=True)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def warm(files: list[Path]) -> None:
    for path in files:
        read_file(str(path))


def ingest_rest(orthanc: Orthanc, files: list[Path]) -> float:
    client = orthanc.client()
    try:
        start = time.perf_counter()
        for path in files:
            status, data = client.call(
                "POST", "/instances", path.read_bytes(), {"Content-Type": "application/dicom"}
            )
            if status != 200:
                raise RuntimeError(f"REST upload of {path}: HTTP {status} {data[:200]!r}")
        return time.perf_counter() - start
    finally:
        client.close()


def ingest_storescu(orthanc: Orthanc, root: Path) -> tuple[float, list[str]]:
    command = ["storescu", "-aet", SCU_AET, "-aec", ORTHANC_AET, "-R", "+sd", "+r",
               "127.0.0.1", str(orthanc.dicom_port), str(root)]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=DCMTK_ENV)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"storescu failed: {done.stderr[-2000:]}")
    return elapsed, command


def count_instances(orthanc: Orthanc) -> int:
    client = orthanc.client()
    try:
        return int(client.json("GET", "/statistics")["CountInstances"])
    finally:
        client.close()


def lookups(orthanc: Orthanc, mnt: Path, uids: list[str]) -> dict[str, list[float]]:
    os.stat(mnt / ".dicomfs" / "status.json")  # the daemon has its index open
    first, again = [], []
    for uid in uids:
        path = mnt / "by-sop" / f"{uid}.dcm"
        start = time.perf_counter()
        os.stat(path)
        first.append(time.perf_counter() - start)
    for uid in uids:
        path = mnt / "by-sop" / f"{uid}.dcm"
        start = time.perf_counter()
        os.stat(path)
        again.append(time.perf_counter() - start)
    client = orthanc.client()
    finds = []
    try:
        client.find("Instance", {"SOPInstanceUID": uids[0]})  # connection open
        for uid in uids:
            start = time.perf_counter()
            found = client.find("Instance", {"SOPInstanceUID": uid})
            finds.append(time.perf_counter() - start)
            if len(found) != 1:
                raise RuntimeError(f"/tools/find {uid}: {found}")
    finally:
        client.close()
    return {"stat_first": first, "stat_again": again, "find": finds}


def propfind(client: Client, path: str) -> int:
    """The number of ``.dcm`` entries (the answer also lists the folder and series.json)."""
    status, data = client.call("PROPFIND", path, None, {"Depth": "1"})
    if status != 207:
        raise RuntimeError(f"PROPFIND {path}: HTTP {status} {data[:300]!r}")
    hrefs = [r.findtext("{DAV:}href") or "" for r in ET.fromstring(data).iter("{DAV:}response")]
    return sum(href.endswith(".dcm") for href in hrefs)


def listings(orthanc: Orthanc, mnt: Path, data: BenchData, repeats: int) -> dict[str, list[float]]:
    folder = str(mnt / "by-series" / data.ct_series)
    ls_times = []
    for _ in range(repeats + 1):
        elapsed, done = timed(
            lambda: subprocess.run(["ls", "-l", folder], capture_output=True, check=True)
        )
        ls_times.append(elapsed)
    entries = len(done.stdout.splitlines()) - 1  # "total" line
    if entries != len(data.ct_uids):
        raise RuntimeError(f"ls -l listed {entries} entries, expected {len(data.ct_uids)}")
    scan_times = []
    for _ in range(repeats):
        elapsed, count = timed(lambda: sum(1 for e in os.scandir(folder) if e.stat()))
        scan_times.append(elapsed)
    client = orthanc.client()
    path = f"/webdav/by-uids/{data.ct_study}/{data.ct_series}/"
    dav_times = []
    try:
        for _ in range(repeats + 1):
            elapsed, count = timed(lambda: propfind(client, path))
            dav_times.append(elapsed)
        if count != len(data.ct_uids):
            raise RuntimeError(f"PROPFIND listed {count} files, expected {len(data.ct_uids)}")
    finally:
        client.close()
    return {"ls": ls_times, "scan": scan_times, "propfind": dav_times}


def webdav_read_all(orthanc: Orthanc, data: BenchData) -> tuple[float, int]:
    client = orthanc.client()
    total = 0
    try:
        start = time.perf_counter()
        for uid in data.ct_uids:
            status, body = client.call(
                "GET", f"/webdav/by-uids/{data.ct_study}/{data.ct_series}/{uid}.dcm"
            )
            if status != 200 or body[128:132] != b"DICM":
                raise RuntimeError(f"WebDAV GET {uid}: HTTP {status}")
            total += len(body)
        return time.perf_counter() - start, total
    finally:
        client.close()


def mount_read_all(mnt: Path, data: BenchData) -> tuple[float, int]:
    folder = mnt / "by-series" / data.ct_series
    start = time.perf_counter()
    total = sum(read_file(str(folder / f"{uid}.dcm")) for uid in data.ct_uids)
    return time.perf_counter() - start, total


def reads(
    orthanc: Orthanc, mnt: Path, data: BenchData, can_drop: bool, rounds: int
) -> dict[str, list[float]]:
    """MB/s of each side per round; the side that goes first alternates between rounds."""
    keys = ("dav_cold", "mount_cold", "dav_warm", "mount_warm", "mount_reread")
    out: dict[str, list[float]] = {key: [] for key in keys}
    ct_sources = [p for p in data.files if p.parent.name == "ct"]
    sides: dict[str, Callable[[], tuple[float, int]]] = {
        "dav": lambda: webdav_read_all(orthanc, data),
        "mount": lambda: mount_read_all(mnt, data),
    }

    def rate(side: str) -> float:
        seconds, size = sides[side]()
        return size / 1e6 / seconds

    # Without dropping the page cache, only the first round reads the mount's pages fresh.
    for number in range(rounds if can_drop else 1):
        order = ("dav", "mount") if number % 2 == 0 else ("mount", "dav")
        if can_drop:
            for side in order:
                drop_caches()
                out[f"{side}_cold"].append(rate(side))
            drop_caches()  # the mount's own page cache must not serve the warm pass
        warm(ct_sources)  # sources in the page cache, the mount's pages not
        sides["dav"]()  # Orthanc's storage in the page cache
        for side in order:
            out[f"{side}_warm"].append(rate(side))
        out["mount_reread"].append(rate("mount"))
    return out


def spread(values: list[float]) -> str:
    """Median, with the range when there is more than one value."""
    middle = f"{statistics.median(values):,.0f}"
    if len(values) < 2:
        return middle
    return f"{middle} ({min(values):,.0f}-{max(values):,.0f})"


def orthanc_plan(client: Client, plan_uid: str) -> tuple[int, int]:
    """What a REST client does for the plan's package: returns (objects, bytes)."""
    from pydicom import dcmread

    def fetch(orthanc_id: str) -> bytes:
        status, body = client.call("GET", f"/instances/{orthanc_id}/file")
        if status != 200:
            raise RuntimeError(f"GET /instances/{orthanc_id}/file: HTTP {status}")
        return body

    def by_uid(uid: str) -> bytes:
        [orthanc_id] = client.find("Instance", {"SOPInstanceUID": uid})
        return fetch(orthanc_id)

    objects, size = 0, 0
    plan_bytes = by_uid(plan_uid)
    plan = dcmread(io.BytesIO(plan_bytes), stop_before_pixels=True, force=True)
    objects, size = 1, len(plan_bytes)
    for ref in plan.get("ReferencedStructureSetSequence", []):
        rs_bytes = by_uid(str(ref.ReferencedSOPInstanceUID))
        objects, size = objects + 1, size + len(rs_bytes)
        rs = dcmread(io.BytesIO(rs_bytes), stop_before_pixels=True, force=True)
        series_uids = {
            str(series.SeriesInstanceUID)
            for frame in rs.get("ReferencedFrameOfReferenceSequence", [])
            for study in frame.get("RTReferencedStudySequence", [])
            for series in study.get("RTReferencedSeriesSequence", [])
        }
        for series_uid in sorted(series_uids):
            for series_id in client.find("Series", {"SeriesInstanceUID": series_uid}):
                for instance_id in client.json("GET", f"/series/{series_id}")["Instances"]:
                    body = fetch(instance_id)
                    objects, size = objects + 1, size + len(body)
    study = str(plan.StudyInstanceUID)
    for dose_id in client.find("Instance", {"StudyInstanceUID": study, "Modality": "RTDOSE"}):
        body = fetch(dose_id)
        dose = dcmread(io.BytesIO(body), stop_before_pixels=True, force=True)
        named = {str(r.ReferencedSOPInstanceUID) for r in dose.get("ReferencedRTPlanSequence", [])}
        if plan_uid in named:
            objects, size = objects + 1, size + len(body)
    return objects, size


def plan_package(orthanc: Orthanc, mnt: Path, data: BenchData, repeats: int) -> dict[str, Any]:
    folder = mnt / "plans" / data.plan_uid / "references"
    ours: list[float] = []
    listing: list[float] = []
    can_drop = drop_caches()
    for _ in range(repeats + 1):
        start = time.perf_counter()
        names = os.listdir(folder)
        listing.append(time.perf_counter() - start)
        paths = [folder / name for name in names]
        if not any(data.plan_uid in name for name in names):
            paths.append(mnt / "plans" / data.plan_uid / "plan.dcm")  # not in references/
        size = sum(read_file(str(path)) for path in paths)
        ours.append(time.perf_counter() - start)
    theirs: list[float] = []
    requests = objects = 0
    if can_drop:
        drop_caches()
    for _ in range(repeats + 1):
        client = Client(orthanc.http_port)
        try:
            start = time.perf_counter()
            objects, _size = orthanc_plan(client, data.plan_uid)
            theirs.append(time.perf_counter() - start)
            requests = client.requests
        finally:
            client.close()
    return {
        "ours": ours, "listing": listing, "theirs": theirs, "members": len(paths),
        "requests": requests, "objects": objects, "bytes": size,
    }  # fmt: skip


# -- main --------------------------------------------------------------------------------------


def reexec_in_netns(argv: list[str]) -> int:
    unshare = shutil.which("unshare")
    if unshare is None:
        raise SystemExit("unshare (util-linux) is missing: run bash bench/orthanc_setup.sh")
    env = {**os.environ, NETNS_ENV: "1"}
    return subprocess.call([unshare, "--net", "--", sys.executable, __file__, *argv], env=env)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--ct", type=int, default=1000, help="instances in the CT series")
    parser.add_argument("--rows", type=int, default=512, help="rows and columns of each slice")
    parser.add_argument("--plan-ct", type=int, default=100, help="CT slices of the RT patient")
    parser.add_argument("--lookups", type=int, default=1000, help="SOP UIDs looked up")
    parser.add_argument("--repeats", type=int, default=10, help="repeats of listing / package")
    parser.add_argument("--read-rounds", type=int, default=3, help="rounds of the read test")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--no-netns", action="store_true", help="do not isolate Orthanc's ports")
    parser.add_argument(
        "--no-write", action="store_true", help="print, do not update BENCHMARKS.md"
    )
    args = parser.parse_args(argv)

    if not args.no_netns and os.environ.get(NETNS_ENV) != "1":
        return reexec_in_netns(argv)
    if not args.no_netns:
        loopback_up()
        if interfaces() != ["lo"]:
            raise SystemExit(f"expected a namespace with loopback only, found {interfaces()}")

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    data = generate(work, args.ct, args.rows, args.plan_ct)
    load_before = os.getloadavg()
    can_drop = drop_caches()
    scratch = Path(tempfile.mkdtemp(prefix="dicomfs-orthanc-", dir=work))
    orthanc = Orthanc(scratch / "orthanc")
    orthanc.folder.mkdir()
    res = Results()
    nfiles = len(data.files)
    try:
        warm(data.files)
        # 1. making the files available
        index = scratch / "index.sqlite"
        index_cmd = [DICOMFS, "index", str(data.root), "--index", str(index), "-q"]
        seconds, _ = timed(lambda: subprocess.run(index_cmd, check=True, capture_output=True))
        ours_rate = nfiles / seconds
        orthanc.start()
        rest_seconds = ingest_rest(orthanc, data.files)
        if count_instances(orthanc) != nfiles:
            raise RuntimeError("REST upload: Orthanc does not hold every file")
        orthanc.stop()
        orthanc.start()  # empty storage again for C-STORE
        store_seconds, store_cmd = ingest_storescu(orthanc, data.root)
        if count_instances(orthanc) != nfiles:
            raise RuntimeError("storescu: Orthanc does not hold every file")
        mb = data.total_bytes / 1e6
        res.add(
            f"make {nfiles:,} files ({mb:,.0f} MB) available, vs C-STORE (storescu)",
            f"{ours_rate:,.0f} files/s", f"{nfiles / store_seconds:,.0f} files/s",
            ours_rate / (nfiles / store_seconds), None,
        )  # fmt: skip
        res.add(
            "same, vs REST upload (POST /instances, 1 keep-alive connection)",
            f"{ours_rate:,.0f} files/s", f"{nfiles / rest_seconds:,.0f} files/s",
            ours_rate / (nfiles / rest_seconds), None,
        )  # fmt: skip

        with mounted(index, scratch / "mnt") as mnt:
            # 2. lookup by SOP UID
            uids = random.Random(5).sample(data.ct_uids, min(args.lookups, len(data.ct_uids)))
            look = lookups(orthanc, mnt, uids)
            first, again, finds = look["stat_first"], look["stat_again"], look["find"]
            res.add(
                f"find one instance by SOP UID, p50 / p99 ms ({len(uids):,} UIDs, each once)",
                f"{ms(percentile(first, .5))} / {ms(percentile(first, .99))} "
                f"(kernel-cached: {ms(percentile(again, .5))} / {ms(percentile(again, .99))})",
                f"{ms(percentile(finds, .5))} / {ms(percentile(finds, .99))}",
                percentile(finds, 0.5) / percentile(first, 0.5), 5,
            )  # fmt: skip
            # 3. listing the series
            lists = listings(orthanc, mnt, data, args.repeats)
            ls_t, scan_t, dav_t = lists["ls"], lists["scan"], lists["propfind"]
            dav_p50 = statistics.median(dav_t[1:])
            res.add(
                f"list the {len(data.ct_uids):,}-instance series, first / p50 ms (`ls -l`)",
                f"{ms(ls_t[0])} / {ms(statistics.median(ls_t[1:]))}",
                f"{ms(dav_t[0])} / {ms(dav_p50)}",
                dav_p50 / statistics.median(ls_t[1:]), 5,
            )  # fmt: skip
            res.add(
                "same, in-process: `os.scandir` + `stat` of each entry, p50 ms",
                f"{ms(statistics.median(scan_t))}",
                f"{ms(dav_p50)}",
                dav_p50 / statistics.median(scan_t), None,
            )  # fmt: skip
            # 4. reading every file of the series
            rates = reads(orthanc, mnt, data, can_drop, args.read_rounds)
            med = {key: statistics.median(v) for key, v in rates.items() if v}
            rounds = len(rates["mount_warm"])
            if can_drop:
                res.add(
                    f"read every file of the series, cold page cache, MB/s (median of {rounds})",
                    spread(rates["mount_cold"]), spread(rates["dav_cold"]),
                    med["mount_cold"] / med["dav_cold"], 1,
                )  # fmt: skip
            res.add(
                f"read every file of the series, data in page cache, MB/s (median of {rounds})",
                f"{spread(rates['mount_warm'])}; re-read: {spread(rates['mount_reread'])}",
                spread(rates["dav_warm"]),
                med["mount_warm"] / med["dav_warm"], 1,
            )  # fmt: skip
            # 5. everything the plan needs
            plan = plan_package(orthanc, mnt, data, args.repeats)
            res.add(
                "open everything the plan needs, first / median ms",
                f"{ms(plan['ours'][0])} / {ms(statistics.median(plan['ours'][1:]))} "
                f"(1 listing + {plan['members']} files, {plan['bytes'] / 1e6:.0f} MB; "
                f"the listing alone {ms(plan['listing'][0])} / "
                f"{ms(statistics.median(plan['listing'][1:]))})",
                f"{ms(plan['theirs'][0])} / {ms(statistics.median(plan['theirs'][1:]))} "
                f"({plan['requests']} requests, {plan['objects']} objects)",
                statistics.median(plan["theirs"][1:]) / statistics.median(plan["ours"][1:]),
                None,
            )  # fmt: skip
    finally:
        orthanc.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    load_after = os.getloadavg()

    isolation = (
        "Orthanc ran in a private network namespace with loopback only (`unshare --net`)"
        if not args.no_netns
        else "Orthanc listened on every interface (`--no-netns`); remote access refused"
    )
    flags = (
        f"--ct {args.ct} --rows {args.rows} --plan-ct {args.plan_ct} --lookups {args.lookups} "
        f"--repeats {args.repeats} --read-rounds {args.read_rounds}"
    )
    body = "\n".join(
        [
            "## Side by side with Orthanc (`bench/peer_orthanc.py`)",
            "",
            f"Same files, same run: one CT series of {args.ct:,} slices of {args.rows}x{args.rows} "
            f"and one synthetic RT patient (CT of {args.plan_ct} slices, structure sets, plans, "
            f"doses, images, record): {nfiles:,} files, {data.total_bytes / 1e6:,.0f} MB. "
            f"Orthanc {orthanc.version} (Debian package), default storage settings, no plugins, "
            f"HTTP keep-alive; {isolation}. Machine: {machine_line()}; load average "
            f"{load_before[0]:.2f} before, {load_after[0]:.2f} after.",
            "",
            "Commands: `bash bench/orthanc_setup.sh` (installs orthanc, dcmtk; no system "
            f"daemon left running), then `.venv/bin/python bench/peer_orthanc.py {flags}` "
            "(as root, so cold reads can drop the page cache).",
            "",
            table(
                ["what", "dicomfs", f"Orthanc {orthanc.version}", "dicomfs faster by", "target"],
                res.rows,
            ),
            "",
            "What each side ran:",
            "",
            f"- make available: `dicomfs index DATA --index INDEX -q` (files stay in place) | "
            f"`{' '.join(store_cmd[:-3])} 127.0.0.1 PORT DATA` into an empty Orthanc; "
            "then `POST /instances` per file (body: the file) into another empty Orthanc;",
            "- find: `stat MNT/by-sop/<uid>.dcm`, first lookup of each UID (the kernel has no "
            "entry yet), then again | `POST /tools/find` "
            '`{"Level": "Instance", "Query": {"SOPInstanceUID": "<uid>"}}`;',
            "- list: `ls -l MNT/by-series/<series>/` (a process per listing, so its start "
            "is counted), and in-process `os.scandir` + `DirEntry.stat()` | "
            "`PROPFIND /webdav/by-uids/<study>/<series>/` with `Depth: 1`; first call, then "
            f"the median of {args.repeats};",
            "- read: `open`/`read` in 1 MiB chunks of `MNT/by-series/<series>/<sop>.dcm` | "
            "`GET /webdav/by-uids/<study>/<series>/<sop>.dcm`, one file after the other, "
            "the side that goes first alternating between rounds (range in brackets); cold: "
            "page cache dropped before each side; warm: Orthanc's storage read once before, the "
            "sources in the page cache but not the mount's pages (re-read: the mount's pages "
            "cached too);",
            "- plan: `ls MNT/plans/<plan>/references/` and read every listed file, the plan "
            "among them (first: the daemon has not computed the package yet, and the page cache "
            "was dropped before the first round of each side; then the median of the next "
            "rounds) | "
            "`/tools/find` the plan by SOP UID and `GET` its file, find its structure set "
            "by SOP UID and `GET` it, find the structure set's series and `GET /series/<id>` and "
            "each instance file, find the study's RT doses and keep those that name the plan "
            "(each dose file read to know); dicomfs's package also holds the plan's RT images, "
            "record and related plans, which the REST client does not fetch.",
        ]
    )
    if not args.no_write:
        write_section("orthanc", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
