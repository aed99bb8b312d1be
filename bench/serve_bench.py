"""Live ingest latency and cost of ``dicomfs serve``, measured in one run.

    .venv/bin/python bench/serve_bench.py [--singles 50] [--burst 2000] [--rows 512]

While ``serve`` runs with its default settle time:
- single files copied in one by one: time from the copy's close to the file
  being readable at ``by-sop/<uid>.dcm`` through the mount (p50, p99);
- a burst of ``--burst`` files: sustained ingest rate, against ``dicomfs index``
  of the same files measured in the same run;
- the daemon's CPU while idle, and while a reader reads 1,000 files through the
  mount (and how many files that reading made it re-index: must be 0).
Results go to BENCHMARKS.md between the ``serve`` markers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine_line, table, write_section

from dicomfs.index import IndexReader, IndexWriter
from dicomfs.live.scan import reconcile

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / TICKS


def children_cpu(pid: int) -> float:
    total = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == pid and int(entry) != pid:
                    total += cpu_seconds(int(entry))
            except (OSError, IndexError):
                continue
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def uid_of(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def wait_until(predicate, timeout: float, step: float = 0.001) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("condition not met in time")
        time.sleep(step)
    return time.perf_counter() - start


def main() -> None:
    from dicomfs.demo import write_ct_series

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--singles", type=int, default=50)
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "serve")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    work: Path = args.work
    if os.path.ismount(work / "mnt"):
        subprocess.run(["fusermount3", "-u", "-z", str(work / "mnt")], check=False)
    shutil.rmtree(work, ignore_errors=True)
    staging, src, mnt = work / "staging", work / "src", work / "mnt"
    for d in (staging, src, mnt):
        d.mkdir(parents=True)
    print("generating files", flush=True)
    singles = write_ct_series(staging / "singles", args.singles, rows=args.rows, seed=11)
    burst = write_ct_series(staging / "burst", args.burst, rows=args.rows, seed=12)
    single_uids = [uid_of(p) for p in singles]
    burst_uids = [uid_of(p) for p in burst]

    # Baseline in the same run: one-shot indexing of the burst files.
    base_index = work / "baseline.sqlite"
    started = time.perf_counter()
    reconcile(IndexWriter(base_index), [staging / "burst"])
    index_rate = len(burst) / (time.perf_counter() - started)

    index = work / "serve.sqlite"
    log = (work / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicomfs", "serve", str(src), "--mount", str(mnt),
         "--index", str(index)],
        stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    rows: list[list[str]] = []
    try:
        wait_until(lambda: os.path.ismount(mnt), 30, 0.05)
        latencies = []
        for path, uid in zip(singles, single_uids, strict=True):
            target = mnt / "by-sop" / f"{uid}.dcm"
            shutil.copy(path, src / f"single-{path.name}")  # returns after close()
            latencies.append(wait_until(target.exists, 30))
            time.sleep(0.05)  # one by one, not a burst
        rows.append(
            [
                "single file: copy closed -> readable in by-sop/ (p50 / p99)",
                f"{percentile(latencies, 0.5) * 1e3:.0f} / "
                f"{percentile(latencies, 0.99) * 1e3:.0f} ms",
                "p50 < 300 ms, p99 < 1 s",
            ]
        )

        reader = IndexReader(index)
        before = reader.status().instances
        # The burst arrives as renames from a folder on the same filesystem, as
        # a receiver or an rsync writes them: copying 0.5 MB files one by one
        # would measure the copy, not the ingest.
        started = time.perf_counter()
        for path in burst:
            os.rename(path, src / f"burst-{path.name}")
        move_seconds = time.perf_counter() - started
        wait_until(lambda: reader.status().instances >= before + len(burst), 600, 0.01)
        burst_seconds = time.perf_counter() - started
        burst_rate = len(burst) / burst_seconds
        rows.append(
            [
                f"burst of {len(burst):,} files renamed in (in {move_seconds:.2f} s): "
                "first rename -> all indexed",
                f"{burst_rate:,.0f} files/s vs `dicomfs index` of the same files "
                f"{index_rate:,.0f} files/s ({burst_rate / index_rate:.2f}x)",
                ">= 0.8x",
            ]
        )

        time.sleep(2)  # let the last batch and its checkpoint finish
        cpu0 = cpu_seconds(proc.pid) + children_cpu(proc.pid)
        idle = 10.0
        time.sleep(idle)
        idle_cpu = (cpu_seconds(proc.pid) + children_cpu(proc.pid) - cpu0) / idle * 100
        rows.append([f"daemon CPU while idle ({idle:.0f} s)", f"{idle_cpu:.1f} %", "near 0"])

        files_before = reader.status().indexed_files
        last_scan_before = reader.meta("last_scan")
        cpu0 = cpu_seconds(proc.pid) + children_cpu(proc.pid)
        started = time.perf_counter()
        for uid in burst_uids[:1000]:
            (mnt / "by-sop" / f"{uid}.dcm").read_bytes()
        read_seconds = time.perf_counter() - started
        read_cpu = cpu_seconds(proc.pid) + children_cpu(proc.pid) - cpu0
        time.sleep(1.0)
        reindexed = reader.status().indexed_files - files_before
        rows.append(
            [
                "daemon CPU while a reader reads 1,000 files through the mount",
                f"{read_cpu:.2f} s CPU over {read_seconds:.2f} s "
                f"({read_cpu / read_seconds * 100:.0f} %); files re-indexed: {reindexed}; "
                f"reconciles: {'0' if reader.meta('last_scan') == last_scan_before else '>0'}",
                "no re-index",
            ]
        )
        reader.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
        log.close()

    body = "\n".join(
        [
            "## Live ingest (`bench/serve_bench.py`)",
            "",
            f"`dicomfs serve` with default settings (settle 0.2 s), CT files of "
            f"{args.rows}x{args.rows}. Machine: {machine_line()}.",
            "",
            f"Command: `.venv/bin/python bench/serve_bench.py --singles {args.singles} "
            f"--burst {args.burst} --rows {args.rows}` (as root).",
            "",
            table(["what", "measured", "target"], rows),
        ]
    )
    if not args.no_write:
        write_section("serve", body)
    print(body)


if __name__ == "__main__":
    main()
