"""Reading through the mount against reading the source files directly, in one run.

    .venv/bin/python bench/mount_bench.py [--files 3000] [--rows 512] [--big-listing 100000]

Measures (as root, so the page cache can be dropped for cold reads):
- sequential read of every file: through ``by-sop/`` vs direct, cold cache,
  first read with the source already cached, and re-read;
- ``stat`` of ``by-sop/<uid>.dcm`` once the entry is cached (p50, p99), and cold;
- ``ls -l`` of a 1,000-instance series vs the same listing of its source folder;
- listing ``by-sop/`` with ``--big-listing`` entries vs ``ls -f`` of the source folder.
Results go to BENCHMARKS.md between the ``mount`` markers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, drop_caches, machine_line, table, write_section

from dicomfs.index import IndexReader, IndexWriter
from dicomfs.index.pages import listing_page, uid_page
from dicomfs.live.scan import reconcile


def dataset(work: Path, files: int, rows: int) -> Path:
    from dicomfs.demo import write_ct_series

    data = work / f"ct-{files}-{rows}"
    marker = data / f".complete-{files}-{rows}"
    if not marker.exists():
        shutil.rmtree(data, ignore_errors=True)
        print(f"generating {files} files ({rows}x{rows}) in {data}", flush=True)
        write_ct_series(data / "ct", files, rows=rows)
        marker.write_text("ok\n")
    return data


def build_index(data: Path, index: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    writer = IndexWriter(index)
    reconcile(writer, [data])
    writer.close()


@contextmanager
def mounted(index: Path, mountpoint: Path, *extra: str) -> Iterator[Path]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dicomfs.fuse.mount",
            str(mountpoint),
            "--index",
            str(index),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not os.path.ismount(mountpoint):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(
                f"mount failed: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        time.sleep(0.05)
    try:
        yield mountpoint
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False)
        proc.wait(timeout=30)


def read_all(paths: list[str]) -> float:
    """MB/s reading every file start to end in 1 MiB reads."""
    total = 0
    start = time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while chunk := handle.read(1 << 20):
                total += len(chunk)
    return total / 1e6 / (time.perf_counter() - start)


def timed(cmd: list[str], repeat: int = 5) -> float:
    """Median seconds of a command (output discarded)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--series", type=int, default=1000, help="instances in the listed series")
    parser.add_argument("--big-listing", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    can_drop = drop_caches()
    rows: list[list[str]] = []

    data = dataset(work, args.files, args.rows)
    index = work / "mount-read.sqlite"
    build_index(data, index)
    reader = IndexReader(index)
    entries = [(r.sop_uid, r.file.path) for r in listing_page(reader, limit=-1)]
    with mounted(index, work / "mnt") as mnt:
        direct = [path for _, path in entries]
        via = [str(mnt / "by-sop" / f"{uid}.dcm") for uid, _ in entries]
        if can_drop:
            drop_caches()
            cold_direct = read_all(direct)
            drop_caches()
            cold_mount = read_all(via)
            rows.append(
                [
                    "first read, cold page cache",
                    f"{cold_mount:,.0f} MB/s",
                    f"{cold_direct:,.0f} MB/s",
                    f"{cold_mount / cold_direct:.2f}",
                    ">= 0.8",
                ]
            )
        read_all(direct)
        warm_direct = read_all(direct)
        if can_drop:
            drop_caches()
            read_all(direct)  # sources cached, the mount's pages not
        warm_first = read_all(via)
        reread = read_all(via)
        rows.append(
            [
                "first read, source cached",
                f"{warm_first:,.0f} MB/s",
                f"{warm_direct:,.0f} MB/s",
                f"{warm_first / warm_direct:.2f}",
                ">= 0.3",
            ]
        )
        rows.append(
            [
                "re-read (page cache kept)",
                f"{reread:,.0f} MB/s",
                f"{warm_direct:,.0f} MB/s",
                f"{reread / warm_direct:.2f}",
                ">= 0.9",
            ]
        )

        sample = via[: min(1000, len(via))]
        cold_stat = []
        for path in sample:
            start = time.perf_counter()
            os.stat(path)
            cold_stat.append(time.perf_counter() - start)
        cached = []
        for path in sample:
            start = time.perf_counter()
            os.stat(path)
            cached.append(time.perf_counter() - start)
        direct_stat = []
        for path in direct[: len(sample)]:
            start = time.perf_counter()
            os.stat(path)
            direct_stat.append(time.perf_counter() - start)
        rows.append(
            [
                "stat by-sop/<uid>.dcm, entry cached (p50 / p99)",
                f"{percentile(cached, 0.5) * 1e3:.3f} / {percentile(cached, 0.99) * 1e3:.3f} ms",
                f"{percentile(direct_stat, 0.5) * 1e3:.3f} / "
                f"{percentile(direct_stat, 0.99) * 1e3:.3f} ms",
                f"{percentile(cached, 0.5) / percentile(direct_stat, 0.5):.1f}x slower",
                "p50 < 0.1 ms",
            ]
        )
        rows.append(
            [
                "stat by-sop/<uid>.dcm, first lookup (p50 / p99)",
                f"{percentile(cold_stat, 0.5) * 1e3:.3f} / "
                f"{percentile(cold_stat, 0.99) * 1e3:.3f} ms",
                "",
                "",
                "",
            ]
        )
    with mounted(index, work / "mnt", "--symlinks") as mnt:
        via = [str(mnt / "by-sop" / f"{uid}.dcm") for uid, _ in entries]
        read_all(direct)
        first_link = read_all(via)
        again_link = read_all(via)
        rows.append(
            [
                "with --symlinks: first read / re-read",
                f"{first_link:,.0f} / {again_link:,.0f} MB/s",
                f"{warm_direct:,.0f} MB/s",
                f"{first_link / warm_direct:.2f} / {again_link / warm_direct:.2f}",
                "",
            ]
        )
    reader.close()

    series_data = dataset(work, args.series, 16)
    series_index = work / "mount-series.sqlite"
    build_index(series_data, series_index)
    series_reader = IndexReader(series_index)
    [series_uid] = uid_page(series_reader, "series_uid", limit=-1)
    series_reader.close()
    with mounted(series_index, work / "mnt") as mnt:
        folder = str(mnt / "by-series" / series_uid)
        first = timed(["ls", "-l", folder], repeat=1)
        via_ls = timed(["ls", "-l", folder])
        src_ls = timed(["ls", "-l", str(series_data / "ct")])
        rows.append(
            [
                f"ls -l of a {args.series:,}-instance series (first / again)",
                f"{first * 1e3:.1f} / {via_ls * 1e3:.1f} ms",
                f"{src_ls * 1e3:.1f} ms",
                f"{via_ls / src_ls:.2f}",
                "<= 3",
            ]
        )

    if args.big_listing:
        big = dataset(work, args.big_listing, 16)
        big_index = work / "mount-big.sqlite"
        build_index(big, big_index)
        with mounted(big_index, work / "mnt") as mnt:
            via_big = timed(["ls", "-f", str(mnt / "by-sop")], repeat=3)
            src_big = timed(["ls", "-f", str(big / "ct")], repeat=3)
            count = len(os.listdir(mnt / "by-sop"))
            rows.append(
                [
                    f"ls -f by-sop/ with {count:,} entries",
                    f"{via_big * 1e3:.0f} ms",
                    f"{src_big * 1e3:.0f} ms",
                    f"{via_big / src_big:.1f}",
                    "complete",
                ]
            )

    body = "\n".join(
        [
            "## Reading through the mount (`bench/mount_bench.py`)",
            "",
            f"{args.files:,} files of {args.rows}x{args.rows} CT (about "
            f"{args.rows * args.rows * 2 / 1e6:.1f} MB each). Machine: {machine_line()}.",
            "",
            "Command: `.venv/bin/python bench/mount_bench.py "
            f"--files {args.files} --rows {args.rows} --series {args.series} "
            f"--big-listing {args.big_listing}` (as root).",
            "",
            table(["what", "through the mount", "direct", "ratio", "target"], rows),
        ]
    )  # fmt: skip
    if not args.no_write:
        write_section("mount", body)
    print(body)


if __name__ == "__main__":
    main()
