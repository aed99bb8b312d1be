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
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
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
    cmd = [sys.executable, "-m", "dicomfs.fuse.mount", str(mountpoint), "--index", str(index)]
    with mounted_by([*cmd, *extra], mountpoint) as mnt:
        yield mnt


@contextmanager
def mounted_by(cmd: list[str], mountpoint: Path) -> Iterator[Path]:
    """Run a FUSE daemon in the foreground until it has mounted; unmount after the block."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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


def open_read_8k(paths: list[str]) -> float:
    """Median seconds to open a file, read its first 8 KiB and close it."""
    times = []
    for path in paths:
        start = time.perf_counter()
        fd = os.open(path, os.O_RDONLY)
        os.read(fd, 8192)
        os.close(fd)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def read_figures(
    via: Callable[[], AbstractContextManager[list[str]]],
    direct: list[str],
    can_drop: bool,
    sample: int,
) -> dict[str, float]:
    """Reads through one filesystem, each measure on a fresh mount (nothing cached in it).

    ``via()`` mounts and gives the paths of the same files as ``direct``.
    """
    out: dict[str, float] = {}
    read_all(direct)  # the sources in the page cache
    with via() as paths:
        out["open8k_first"] = open_read_8k(paths[:sample])
        out["open8k_again"] = open_read_8k(paths[:sample])
    if can_drop:
        with via() as paths:
            drop_caches()
            out["cold"] = read_all(paths)
    with via() as paths:
        read_all(direct)
        out["warm_first"] = read_all(paths)
        out["reread"] = read_all(paths)
    return out


def direct_figures(direct: list[str], can_drop: bool, sample: int) -> dict[str, float]:
    """The same measures on the source files themselves (the baseline)."""
    out: dict[str, float] = {}
    if can_drop:
        drop_caches()
        out["cold"] = read_all(direct)
    read_all(direct)
    out["warm_first"] = read_all(direct)
    out["open8k_first"] = open_read_8k(direct[:sample])
    return out


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
    parser.add_argument("--sample", type=int, default=1000, help="files opened for 8 KiB reads")
    parser.add_argument("--rounds", type=int, default=3, help="read measures: median of rounds")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    can_drop = drop_caches()
    rows: list[list[str]] = []
    read_rows: list[list[str]] = []

    data = dataset(work, args.files, args.rows)
    index = work / "mount-read.sqlite"
    build_index(data, index)
    reader = IndexReader(index)
    entries = [(r.sop_uid, r.file.path) for r in listing_page(reader, limit=-1)]
    direct = [path for _, path in entries]

    @contextmanager
    def dicomfs_paths() -> Iterator[list[str]]:
        with mounted(index, work / "mnt") as mnt:
            yield [str(mnt / "by-sop" / f"{uid}.dcm") for uid, _ in entries]

    def passthrough_paths(*extra: str) -> Callable[[], AbstractContextManager[list[str]]]:
        @contextmanager
        def paths() -> Iterator[list[str]]:
            script = str(Path(__file__).resolve().parent / "passthrough.py")
            cmd = [sys.executable, script, str(work / "mnt"), str(data), *extra]
            with mounted_by(cmd, work / "mnt") as mnt:
                yield [str(mnt / Path(p).relative_to(data)) for p in direct]

        return paths

    kinds = {
        "dicomfs": dicomfs_paths,
        "passthrough": passthrough_paths(),
        "no-open": passthrough_paths("--no-open"),
    }
    # Every side, direct reads included, once per round, in a rotated order:
    # this machine's disk and page cache move between runs (BENCHMARKS.md).
    rounds: dict[str, list[dict[str, float]]] = {k: [] for k in [*kinds, "direct"]}
    for r in range(args.rounds):
        order = [*kinds, "direct"]
        for name in order[r % len(order) :] + order[: r % len(order)]:
            if name == "direct":
                rounds[name].append(direct_figures(direct, can_drop, args.sample))
            else:
                rounds[name].append(read_figures(kinds[name], direct, can_drop, args.sample))
    figures = {
        name: {key: statistics.median(f[key] for f in done) for key in done[0]}
        for name, done in rounds.items()
    }
    cold_direct = figures["direct"].get("cold", 0.0)
    warm_direct = figures["direct"]["warm_first"]
    open8k_direct = figures["direct"]["open8k_first"]

    def row(what: str, key: str, base: float, target: str, unit: str = "MB/s") -> list[str]:
        def fmt(v: float) -> str:
            return f"{v:,.0f} {unit}" if unit == "MB/s" else f"{v * 1e3:.3f} ms"

        ours = figures["dicomfs"][key]
        ratio = ours / base if unit == "MB/s" else base / ours
        cells = [fmt(figures[k][key]) for k in kinds]
        return [what, *cells, fmt(base), f"{ratio:.2f}", target]

    if can_drop:
        read_rows.append(row("first read, cold page cache", "cold", cold_direct, ">= 0.7"))
    read_rows.append(row("first read, source in page cache", "warm_first", warm_direct, ">= 0.3"))
    read_rows.append(row("re-read", "reread", warm_direct, ">= 0.8"))
    read_rows.append(
        row("open + read 8 KiB, first time (p50)", "open8k_first", open8k_direct,
            "<= 0.15 ms", unit="ms")
    )  # fmt: skip
    read_rows.append(
        row("open + read 8 KiB, read before (p50)", "open8k_again", open8k_direct,
            "<= 0.05 ms", unit="ms")
    )  # fmt: skip

    with mounted(index, work / "mnt") as mnt:
        via = [str(mnt / "by-sop" / f"{uid}.dcm") for uid, _ in entries]
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
                ">= 0.8 (first read)",
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
            f"--big-listing {args.big_listing} --sample {args.sample} --rounds {args.rounds}` "
            "(as root).",
            "",
            "Reads: each column is a fresh mount of the same files, each measure "
            "on a mount of its own (nothing cached in it before). *passthrough*: "
            "`bench/passthrough.py`, the smallest filesystem on the same stack "
            "(libfuse 3.14, mfusepy; one `lstat` per lookup, one `open` per open, "
            "reads answered with the descriptor, entries and attributes kept an "
            "hour); *no-open*: the same answering the first open with ENOSYS, so "
            "the kernel sends no OPEN or RELEASE. Ratio: dicomfs against direct. "
            f"Each figure is the median of {args.rounds} rounds; each round runs every "
            "side once, in a rotated order.",
            "",
            table(
                ["what", "dicomfs", "passthrough", "passthrough, no-open", "direct", "ratio",
                 "target"],
                read_rows,
            ),
            "",
            table(["what", "through the mount", "direct", "ratio", "target"], rows),
        ]
    )  # fmt: skip
    if not args.no_write:
        write_section("mount", body)
    print(body)


if __name__ == "__main__":
    main()
