"""One index in PostgreSQL for several hosts (issue 17), against SQLite in the same run.

    .venv/bin/python bench/hosts_bench.py [--files 100000] [--work DIR] [--rounds 20]

Same files, same machine, one run:
1. ``dicomfs index`` of the scale benchmark's archive (``scale_bench.generate``,
   reused when it is there) into a new SQLite file and into a new database
   of a private PostgreSQL cluster reached over TCP on 127.0.0.1: files/s;
2. through a ``dicomfs mount`` of each index, as a user meets them: a stat
   of ``by-sop/<uid>.dcm`` (the kernel asks the daemon: each UID once), a
   series folder listed with every entry's attributes (``ls -l``), and a
   plan folder walked the first time (its package computed); then the same
   in one process with the index's own reader (a lookup by UID, a series'
   rows, a page of ``by-sop/``, ``graph.package``), after a warm-up, and
   the driver's bare round trip (``SELECT 1``): median and 95th percentile;
3. how long a file takes to appear in a mount: with PostgreSQL, written into
   the folder host "alpha" (``dicomfs serve``) ingests and looked up by path
   in the mount of host "beta" (``dicomfs mount`` of the same database, its
   own roots); with SQLite, the baseline, in the mount of the ``serve`` that
   ingests it. Each round renames a new file (a copy of an archive file with
   a new UID) into the folder and stats its ``by-sop`` path every 5 ms.
Results go to BENCHMARKS.md between the ``hosts`` markers.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from common import PYTHON, ROOT, machine_line, table, write_section
from pg_helpers import PrivateCluster
from scale_bench import BIG, Shape, generate

from dicomfs.index import IndexReader, graph
from dicomfs.index.pages import sop_uid_page

SAMPLE = 500  # lookups, listings and packages per measure
DEADLINE = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def index_rate(archive: Path, index: str, files: int) -> float:
    """``dicomfs index`` of the archive into a new index: files/s."""
    start = time.perf_counter()
    subprocess.run(
        [PYTHON, "-m", "dicomfs", "index", str(archive), "--index", index, "--quiet"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return files / (time.perf_counter() - start)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))]


def timed(calls: list[Callable[[], object]]) -> tuple[float, float]:
    """Median and p95 in ms of each call, after one warm-up pass over all of them."""
    for call in calls:
        call()
    return once_each(calls)


class Samples:
    """The UIDs every measure of both indexes takes, drawn once from the SQLite index."""

    def __init__(self, index: str, seed: int) -> None:
        reader = IndexReader(index)
        try:
            rng = random.Random(seed)
            uids = [r[0] for r in reader.rows("SELECT sop_uid FROM instance_rows ORDER BY 1")]
            series = [r[0] for r in reader.rows("SELECT DISTINCT series_uid FROM instances")]
            plans = [p.sop_uid for p in reader.plans()]
        finally:
            reader.close()
        self.sop = rng.sample(uids, min(SAMPLE, len(uids)))
        self.series = rng.sample(sorted(series), min(SAMPLE // 5, len(series)))
        self.plans = rng.sample(plans, min(SAMPLE // 10, len(plans)))


def once_each(calls: list[Callable[[], object]]) -> tuple[float, float]:
    """Median and p95 in ms of each call, each run once (a first access)."""
    samples = []
    for call in calls:
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return percentiles(samples)


def ls_l(folder: Path) -> None:
    for name in os.listdir(folder):
        os.lstat(folder / name)


def walk(folder: Path) -> None:
    for top, _, files in os.walk(folder):
        for name in files:
            os.lstat(os.path.join(top, name))


def through_mount(index: str, work: Path, samples: Samples) -> dict[str, tuple[float, float]]:
    """The user's view of an index (item 2): a fresh ``dicomfs mount`` of it."""
    mnt = work / "reads-mnt"
    mnt.mkdir(exist_ok=True)
    argv = [PYTHON, "-m", "dicomfs", "mount", str(mnt), "--index", index]
    with process(argv, {}, work / "reads.log") as proc:
        wait_mounted(mnt, proc, work / "reads.log")
        return {
            "stat by-sop/UID.dcm": once_each(
                [lambda u=u: os.stat(mnt / "by-sop" / f"{u}.dcm") for u in samples.sop]
            ),
            "ls -l by-series/UID": once_each(
                [lambda s=s: ls_l(mnt / "by-series" / s) for s in samples.series]
            ),
            "first walk of plans/UID": once_each(
                [lambda p=p: walk(mnt / "plans" / p) for p in samples.plans]
            ),
        }


def queries(index: str, samples: Samples) -> dict[str, tuple[float, float]]:
    """The same, in one process with the index's reader, after a warm-up pass."""
    reader = IndexReader(index)
    try:
        return {
            "lookup by UID": timed([lambda u=u: reader.instance(u) for u in samples.sop]),
            "series rows": timed([lambda s=s: reader.series_instances(s) for s in samples.series]),
            "by-sop page (1,000)": timed(
                [lambda a=a: sop_uid_page(reader, a.encode(), 1000) for a in samples.sop[:100]]
            ),
            "plan package": timed([lambda p=p: graph.package(reader, p) for p in samples.plans]),
            "round trip (SELECT 1)": timed([lambda: reader.rows("SELECT 1")] * 200),
        }
    finally:
        reader.close()


@contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=out, env={**os.environ, **env}, start_new_session=True
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_path(path: Path, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not path.exists():
        if time.monotonic() > end:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.005)


def new_file(template: Path, folder: Path, n: int) -> tuple[Path, str]:
    """A copy of ``template`` with a new SOP Instance UID, written beside ``folder``."""
    import pydicom

    ds = pydicom.dcmread(template)
    uid = f"1.2.826.0.1.3680043.8.498.99.{os.getpid()}.{n}.{time.time_ns()}"
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    staged = folder.parent / f".staged-{n}.dcm"
    ds.save_as(staged, enforce_file_format=True)
    return staged, uid


def visibility(folder: Path, mnt: Path, template: Path, rounds: int) -> list[float]:
    """Seconds from a rename into ``folder`` to the file's ``by-sop`` path in ``mnt``."""
    seen = []
    for n in range(rounds):
        staged, uid = new_file(template, folder, n)
        start = time.perf_counter()
        os.rename(staged, folder / f"new-{n}.dcm")
        wait_path(mnt / "by-sop" / f"{uid}.dcm")
        seen.append(time.perf_counter() - start)
        time.sleep(0.3)  # apart: each round starts from an idle ingest
    return seen


def wait_mounted(mnt: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    end = time.monotonic() + DEADLINE
    while not os.path.ismount(mnt):
        if proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError(f"no mount at {mnt}; log:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def cross_host(work: Path, url: str, template: Path, rounds: int) -> list[float]:
    """PostgreSQL: alpha ingests, beta's mount shows (item 3)."""
    shared = work / "shared"
    shutil.rmtree(shared, ignore_errors=True)
    shared.mkdir(parents=True)
    alpha, beta = work / "alpha-mnt", work / "beta-mnt"
    for mnt in (alpha, beta):
        mnt.mkdir(exist_ok=True)
    roots = {"DICOMFS_ROOTS": f"shared={shared}"}
    serve = [PYTHON, "-m", "dicomfs", "serve", str(shared), "--mount", str(alpha), "--index", url]
    mount = [PYTHON, "-m", "dicomfs", "mount", str(beta), "--index", url]
    with process(serve, {**roots, "DICOMFS_HOST": "alpha"}, work / "alpha.log") as a:
        wait_mounted(alpha, a, work / "alpha.log")  # alpha has made the schema by then
        with process(mount, {**roots, "DICOMFS_HOST": "beta"}, work / "beta.log") as b:
            wait_mounted(beta, b, work / "beta.log")
            return visibility(shared, beta, template, rounds)


def same_host(work: Path, index: Path, template: Path, rounds: int) -> list[float]:
    """SQLite baseline: the serve that ingests shows it in its own mount."""
    folder = work / "local"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    mnt = work / "local-mnt"
    mnt.mkdir(exist_ok=True)
    argv = [
        PYTHON,
        "-m",
        "dicomfs",
        "serve",
        str(folder),
        "--mount",
        str(mnt),
        "--index",
        str(index),
    ]
    with process(argv, {}, work / "local.log") as proc:
        wait_mounted(mnt, proc, work / "local.log")
        return visibility(folder, mnt, template, rounds)


def _pair(low: tuple[float, float], fmt: str = "{:.3f}") -> str:
    return f"{fmt.format(low[0])} / {fmt.format(low[1])}"


def report(
    files: int,
    rates: dict[str, float],
    mounted: dict[str, dict[str, tuple[float, float]]],
    reads: dict[str, dict[str, tuple[float, float]]],
    seen: dict[str, list[float]],
) -> str:
    lite_rate, pg_rate = rates["sqlite"], rates["postgresql"]
    rows = [
        ["`dicomfs index`, files/s", f"{lite_rate:,.0f}", f"{pg_rate:,.0f}",
         f"{pg_rate / lite_rate:.2f}x", ""],
    ]  # fmt: skip
    for what, lite in mounted["sqlite"].items():
        pg = mounted["postgresql"][what]
        verdict = "within 2x" if pg[0] <= 2 * lite[0] else "**over 2x**"
        rows.append(
            [f"{what}, ms p50 / p95", _pair(lite), _pair(pg), f"{pg[0] / lite[0]:.2f}x", verdict]
        )
    inside = []
    for what, lite in reads["sqlite"].items():
        pg = reads["postgresql"][what]
        inside.append([f"{what}, ms p50 / p95", _pair(lite), _pair(pg), f"{pg[0] / lite[0]:.2f}x"])
    lite_seen, pg_seen = percentiles(seen["sqlite"]), percentiles(seen["postgresql"])
    slowest = max(seen["postgresql"])
    rows.append(
        [
            "renamed in -> in a mount, s p50 / p95",
            f"{_pair(lite_seen, '{:.2f}')} (same host)",
            f"{_pair(pg_seen, '{:.2f}')} (other host; slowest {slowest:.2f})",
            f"{pg_seen[0] / lite_seen[0]:.2f}x",
            "under 2 s" if slowest < 2 else "**over 2 s**",
        ]
    )
    return "\n".join(
        [
            "## Several hosts: PostgreSQL beside SQLite (`bench/hosts_bench.py`)",
            "",
            f"Run: {time.strftime('%Y-%m-%d')}, `bench/hosts_bench.py --files {files}`; "
            f"{machine_line()}.",
            "PostgreSQL 15 (Debian): a private cluster on 127.0.0.1 over TCP, fsync off. "
            "SQLite in WAL mode on the same disk. Same archive, same samples.",
            "",
            table(["measure", "SQLite", "PostgreSQL", "PG / SQLite", "target"], rows),
            "",
            "In one process, with the index's own reader (no FUSE), same samples:",
            "",
            table(["measure", "SQLite", "PostgreSQL", "PG / SQLite"], inside),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "scale")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    archive = args.work / f"archive-{args.files}"
    print(f"archive {archive}: generated in {generate(archive, Shape(args.files)):.0f} s")
    template = next(p for p in sorted((archive / f"P{BIG}" / "CT").iterdir()))
    scratch = Path(tempfile.mkdtemp(prefix="hosts-bench-", dir=args.work))
    cluster = PrivateCluster(tcp_port=free_port()).start()
    try:
        lite = scratch / "index.sqlite"
        url = cluster.database()
        rates = {
            "sqlite": index_rate(archive, str(lite), args.files),
            "postgresql": index_rate(archive, url, args.files),
        }
        print(f"index: {rates}")
        samples = Samples(str(lite), 1)
        mounted = {
            "sqlite": through_mount(str(lite), scratch, samples),
            "postgresql": through_mount(url, scratch, samples),
        }
        print(f"through the mount: {mounted}")
        reads = {"sqlite": queries(str(lite), samples), "postgresql": queries(url, samples)}
        print(f"in process: {reads}")
        seen = {
            "sqlite": same_host(scratch, scratch / "local.sqlite", template, args.rounds),
            "postgresql": cross_host(scratch, cluster.database(), template, args.rounds),
        }
        print(f"visibility: {seen}")
        section = report(args.files, rates, mounted, reads, seen)
        print(section)
        write_section("hosts", section)
    finally:
        cluster.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
