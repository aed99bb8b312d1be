"""Indexing speed against bare pydicom, measured in one run (issue: index).

    .venv/bin/python bench/index_bench.py [--files 3000] [--rows 512] [--memory-files 100000]

Measures, on the same generated files:
1. baseline: ``pydicom.dcmread(stop_before_pixels=True)`` over every file, one process;
2. ``dicomfs index`` with one worker process (per-process rate vs the baseline);
3. ``dicomfs index`` with every core (parallel speed-up);
4. the unchanged re-run (stat only, no file opened);
5. peak memory of indexing ``--memory-files`` small files (default 100,000).
Warm runs read from the page cache; with root, cold runs drop it first.
Results go to BENCHMARKS.md between the ``index`` markers.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, drop_caches, machine_line, run_child, table, write_section

BASELINE = """
import os, time
import pydicom

def main(argv):
    root = argv[0]
    paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
    start = time.perf_counter()
    for p in paths:
        pydicom.dcmread(p, stop_before_pixels=True, force=True)
    elapsed = time.perf_counter() - start
    return {"files": len(paths), "seconds": elapsed}
"""

INDEX = """
import os, time
from dicomfs.index import IndexWriter
from dicomfs.live.scan import reconcile

def main(argv):
    root, index, workers = argv[0], argv[1], int(argv[2])
    writer = IndexWriter(index)
    start = time.perf_counter()
    report = reconcile(writer, [root], workers=workers)
    elapsed = time.perf_counter() - start
    return {"files": report.seen, "parsed": report.parsed, "indexed": report.indexed,
            "rejected": report.rejected, "seconds": elapsed}
"""


def generate(data: Path, files: int, rows: int) -> None:
    from dicomfs.demo import write_ct_series, write_demo

    marker = data / f".complete-{files}-{rows}"
    if marker.exists():
        return
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    print(f"generating {files} CT files ({rows}x{rows}) + RT objects in {data}", flush=True)
    write_ct_series(data / "ct", files, rows=rows)
    write_demo(data / "rt", patients=1, hostile=False)
    marker.write_text("ok\n")


def measure(data: Path, work: Path, cold: bool) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}

    def prepare() -> None:
        if cold:
            drop_caches()

    prepare()
    results["baseline"] = run_child(BASELINE, str(data))
    for name, workers in (("index_1", 1), ("index_all", 0)):
        index = work / f"{name}.sqlite"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{index}{suffix}").unlink(missing_ok=True)
        prepare()
        results[name] = run_child(INDEX, str(data), str(index), str(workers))
    prepare()
    results["rerun"] = run_child(INDEX, str(data), str(work / "index_all.sqlite"), "0")
    return results


def rate(r: dict[str, float], key: str = "files") -> float:
    return r[key] / r["seconds"] if r["seconds"] else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--memory-files", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument(
        "--no-write", action="store_true", help="print, do not update BENCHMARKS.md"
    )
    args = parser.parse_args()

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"ct-{args.files}-{args.rows}"
    generate(data, args.files, args.rows)
    can_drop = drop_caches()

    rows: list[list[str]] = []
    for label, cold in (("warm", False), ("cold", True)):
        if cold and not can_drop:
            continue
        r = measure(data, work, cold)
        base = rate(r["baseline"])
        one = rate(r["index_1"], "parsed")
        both = rate(r["index_all"], "parsed")
        rerun = rate(r["rerun"])
        rows += [
            [label, "pydicom dcmread(stop_before_pixels) (baseline)", f"{base:,.0f}", "1.00",
             f"{r['baseline']['peak_rss_mb']:.0f}"],
            [label, "dicomfs index, 1 worker process", f"{one:,.0f}", f"{one / base:.2f}",
             f"{r['index_1']['peak_rss_mb']:.0f}"],
            [label, "dicomfs index, all cores", f"{both:,.0f}", f"{both / base:.2f} "
             f"({both / one:.2f}x 1 worker)",
             f"{r['index_all']['peak_rss_mb']:.0f} + workers "
             f"{r['index_all']['peak_rss_children_mb']:.0f}"],
            [label, "dicomfs index, unchanged re-run", f"{rerun:,.0f}", f"{rerun / base:.1f}",
             f"{r['rerun']['peak_rss_mb']:.0f}"],
        ]  # fmt: skip
        print("\n".join(" | ".join(row) for row in rows[-4:]), flush=True)

    memory_line = ""
    if args.memory_files:
        mem_data = work / f"ct-{args.memory_files}-16"
        generate(mem_data, args.memory_files, 16)
        index = work / "memory.sqlite"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{index}{suffix}").unlink(missing_ok=True)
        m = run_child(INDEX, str(mem_data), str(index), "0")
        memory_line = (
            f"Peak memory indexing {m['files']:,} small files: {m['peak_rss_mb']:.0f} MB in the "
            f"main process, {m['peak_rss_children_mb']:.0f} MB in the largest worker "
            f"({rate(m, 'parsed'):,.0f} files/s)."
        )
        print(memory_line)

    body = "\n".join(
        [
            "## Indexing (`bench/index_bench.py`)",
            "",
            f"{args.files:,} CT files of {args.rows}x{args.rows} (about "
            f"{(args.rows * args.rows * 2) / 1e6:.1f} MB each) plus one synthetic RT patient. "
            f"Machine: {machine_line()}.",
            "",
            "Command: `.venv/bin/python bench/index_bench.py "
            f"--files {args.files} --rows {args.rows} --memory-files {args.memory_files}` "
            "(as root so cold runs can drop the page cache).",
            "",
            table(["cache", "what", "files/s", "vs baseline", "peak RSS MB"], rows),
            "",
            memory_line,
            "",
            "Targets: 1 worker >= 0.9x baseline; all cores >= 1.6x one worker on 2 cores; "
            "unchanged re-run >= 50,000 files/s; peak memory < 300 MB for 100,000 files.",
        ]
    )
    if not args.no_write:
        write_section("index", body)
    print(body)


if __name__ == "__main__":
    main()
