"""An archive of a million files and more on one machine (issue 13), measured in one run.

    .venv/bin/python bench/scale_bench.py [--sizes 100000,1000000] [--work DIR]
    .venv/bin/python bench/scale_bench.py --sizes 10000000      # once, ~3 hours, ~55 GB
    .venv/bin/python bench/scale_bench.py --sizes 10000000 --reuse-index  # from the re-run on

A department's RT archive is millions of files; what must not grow with it
is memory, and what must stay quick is a re-scan and a listing. Parsing is
measured by ``index_bench.py``; here the load is the file count, so every
file is small (8x8 pixels) and real: written to disk, indexed by ``dicomfs
index``, watched and mounted by ``dicomfs serve``.

The archive (per size N): N/250 patients, one study each with a CT series;
every other patient also has a structure set (naming every slice), a plan
(naming the structure set) and a dose (naming the plan), so there are N/500
plans with real packages. CT slices are written from one pydicom template
by replacing its fixed-width UIDs (a million files in about a minute); the
RT objects are written by pydicom. Generated once per size under ``--work``.

Measured, each against the baseline of the same run:
1. ``dicomfs index`` of the whole tree: files/s (baseline: ``pydicom.dcmread``
   in one process over a sample of the same files), index bytes per instance;
2. an unchanged re-run of ``dicomfs index``: time and peak RSS (baselines: a
   Python ``os.walk`` + ``lstat`` of the tree, and ``find -type f``);
3. ``dicomfs serve`` on that index: RSS after its start-up reconcile, idle;
   its peak during a reconcile; the parse workers' private memory;
4. through its mount: ``ls -f by-sop`` (baseline: ``ls -f`` of a real folder
   of N empty files, made once; skipped above 2M, see the output), the
   daemon's RSS growth for it, and two at once;
5. ``find MNT/plans -maxdepth 2``: first (packages computed) and again.
Results go to BENCHMARKS.md between the ``scale`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PYTHON, ROOT, machine_line, table, write_section

GENERATOR_VERSION = 1
UID_ROOT = "1.2.826.0.1.3680043.8.498.21"  # pydicom's example root, this benchmark's branch
FILES_PER_PATIENT = 250
BIG = 10_000_000  # added to every number in a UID: fixed width, no leading zero
BASELINE_FOLDER_MAX = 2_000_000  # a real folder of N empty files costs N inodes
SAMPLE = 20_000  # files the pydicom baseline parses
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
RS_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
PLAN_CLASS = "1.2.840.10008.5.1.4.1.1.481.5"
DOSE_CLASS = "1.2.840.10008.5.1.4.1.1.481.2"


# -- the archive ------------------------------------------------------------------


def uid(*numbers: int) -> str:
    return ".".join([UID_ROOT, *(str(BIG + n) for n in numbers)])


@dataclass(frozen=True)
class Shape:
    files: int

    @property
    def patients(self) -> int:
        return max(1, self.files // FILES_PER_PATIENT)

    def has_plan(self, p: int) -> bool:
        return p % 2 == 0

    @property
    def plans(self) -> int:
        return (self.patients + 1) // 2

    def slices(self, p: int) -> int:
        """CT slices of patient ``p``: the files left after the RT objects, spread evenly."""
        ct_total = self.files - 3 * self.plans
        base, extra = divmod(ct_total, self.patients)
        return base + (1 if p < extra else 0)


def _ct_template() -> tuple[bytes, dict[str, int]]:
    """A CT slice with placeholder values of fixed width, and where each placeholder is."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    marks = {
        "patient": "PATIENTXXXXX",
        "study": uid(1, 1) + ".1",
        "series": uid(1, 1) + ".2",
        "frame": uid(1, 1) + ".3",
        "sop": uid(1, 1) + ".4",
        "number": "99999999",
    }
    ds = Dataset()
    ds.SOPClassUID = CT_CLASS
    ds.SOPInstanceUID = marks["sop"]
    ds.StudyInstanceUID = marks["study"]
    ds.SeriesInstanceUID = marks["series"]
    ds.FrameOfReferenceUID = marks["frame"]
    ds.PatientID = marks["patient"]
    ds.PatientName = "Scale^Bench"
    ds.Modality = "CT"
    ds.StudyDate = "20240101"
    ds.SeriesDescription = "scale"
    ds.InstanceNumber = marks["number"]
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(128)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_CLASS
    meta.MediaStorageSOPInstanceUID = marks["sop"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    from io import BytesIO

    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    where: dict[str, int] = {}
    for key, mark in marks.items():
        where[key] = data.index(mark.encode())
    where["meta_sop"] = data.index(marks["sop"].encode(), where["sop"] + 1)
    return data, where


def _ct_bytes(
    template: bytes, where: dict[str, int], p: int, n: int
) -> Iterator[tuple[str, bytes]]:
    """(file name, bytes) of patient ``p``'s ``n`` slices."""
    data = bytearray(template)
    data[where["patient"] : where["patient"] + 12] = f"PAT{BIG + p:09d}".encode()[:12]
    for key, suffix in (("study", 1), ("series", 2), ("frame", 3)):
        value = f"{uid(p, 0)}.{suffix}".encode()
        data[where[key] : where[key] + len(value)] = value
    for i in range(n):
        value = f"{uid(p, i + 1)}.4".encode()
        for at in (where["sop"], where["meta_sop"]):  # the File Meta holds the UID too
            data[at : at + len(value)] = value
        data[where["number"] : where["number"] + 8] = f"{i + 1:<8d}".encode()
        yield f"{BIG + i}.dcm", bytes(data)


def _rt_files(p: int, slices: int) -> list[tuple[str, object]]:
    """Structure set, plan and dose of patient ``p`` (pydicom datasets)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    study, frame = f"{uid(p, 0)}.1", f"{uid(p, 0)}.3"

    def base(cls: str, sop: str, series: str, modality: str) -> Dataset:
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = cls, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID = frame
        ds.PatientID = f"PAT{BIG + p:09d}"[:12]
        ds.PatientName = "Scale^Bench"
        ds.Modality = modality
        ds.StudyDate = "20240101"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = cls, sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        return ds

    rs_uid, plan_uid, dose_uid = (f"{uid(p, 0)}.{k}" for k in (5, 6, 7))
    rs = base(RS_CLASS, rs_uid, f"{uid(p, 0)}.8", "RTSTRUCT")
    rs.StructureSetLabel = f"RS{p}"
    images = Sequence()
    for i in range(slices):
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = CT_CLASS, f"{uid(p, i + 1)}.4"
        images.append(item)
    series_item = Dataset()
    series_item.SeriesInstanceUID, series_item.ContourImageSequence = f"{uid(p, 0)}.2", images
    study_item = Dataset()
    study_item.ReferencedSOPInstanceUID = study
    study_item.RTReferencedSeriesSequence = Sequence([series_item])
    for_item = Dataset()
    for_item.FrameOfReferenceUID = frame
    for_item.RTReferencedStudySequence = Sequence([study_item])
    rs.ReferencedFrameOfReferenceSequence = Sequence([for_item])
    plan = base(PLAN_CLASS, plan_uid, f"{uid(p, 0)}.9", "RTPLAN")
    plan.RTPlanLabel = f"PLAN{p}"
    ref_rs = Dataset()
    ref_rs.ReferencedSOPClassUID, ref_rs.ReferencedSOPInstanceUID = RS_CLASS, rs_uid
    plan.ReferencedStructureSetSequence = Sequence([ref_rs])
    dose = base(DOSE_CLASS, dose_uid, f"{uid(p, 0)}.10", "RTDOSE")
    ref_plan = Dataset()
    ref_plan.ReferencedSOPClassUID, ref_plan.ReferencedSOPInstanceUID = PLAN_CLASS, plan_uid
    dose.ReferencedRTPlanSequence = Sequence([ref_plan])
    dose.DoseSummationType = "PLAN"
    return [("rs.dcm", rs), ("plan.dcm", plan), ("dose.dcm", dose)]


def generate(root: Path, shape: Shape) -> float:
    """Write the archive under ``root`` (cached by a marker file); seconds taken."""
    marker = root.with_name(root.name + ".complete")  # beside it: everything in it is DICOM
    if marker.exists() and marker.read_text() == f"{GENERATOR_VERSION} {shape.files}":
        return 0.0
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    template, where = _ct_template()
    written = 0
    for p in range(shape.patients):
        patient = root / f"P{BIG + p}"
        ct = patient / "CT"
        ct.mkdir(parents=True)
        for name, data in _ct_bytes(template, where, p, shape.slices(p)):
            with open(ct / name, "wb") as handle:
                handle.write(data)
            written += 1
        if shape.has_plan(p):
            rt = patient / "RT"
            rt.mkdir()
            for name, ds in _rt_files(p, shape.slices(p)):
                ds.save_as(rt / name, enforce_file_format=True)  # type: ignore[attr-defined]
                written += 1
        if p % 200 == 0:
            rate = written / max(time.perf_counter() - start, 1e-9)
            print(f"  generated {written:,} of {shape.files:,} ({rate:,.0f}/s)", flush=True)
    assert written == shape.files, (written, shape.files)
    marker.write_text(f"{GENERATOR_VERSION} {shape.files}")
    return time.perf_counter() - start


# -- measurements -------------------------------------------------------------------


def peak_rss_of(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS MB) of ``cmd`` by GNU time, exact for each run."""
    out = subprocess.run(
        ["/usr/bin/time", "-f", "%e %M", *cmd],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    seconds, kb = out.stderr.strip().splitlines()[-1].split()
    return float(seconds), int(kb) / 1024


def walk_lstat(root: Path) -> float:
    start = time.perf_counter()
    count = 0
    for folder, _, files in os.walk(root):
        for name in files:
            os.lstat(os.path.join(folder, name))
            count += 1
    return time.perf_counter() - start


def pydicom_rate(root: Path, limit: int) -> float:
    code = (
        "import os, sys, time, pydicom\n"
        "root, limit = sys.argv[1], int(sys.argv[2]); paths = []\n"
        "for d, _, fs in os.walk(root):\n"
        "    paths += [os.path.join(d, f) for f in fs]\n"
        "    if len(paths) >= limit: break\n"
        "paths = paths[:limit]; t = time.perf_counter()\n"
        "for p in paths: pydicom.dcmread(p, stop_before_pixels=True)\n"
        "print(len(paths) / (time.perf_counter() - t))\n"
    )
    out = subprocess.run(
        [PYTHON, "-c", code, str(root), str(limit)], check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip())


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def private_mb(pid: int) -> float:
    """Private (not shared) memory of a process: what it costs on its own."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total / 1024


def descendants_of(pid: int) -> list[int]:
    """Every process below ``pid``: serve's forkserver and the parse workers it forked."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):  # a child belongs to the thread that forked it
        try:
            children += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return children + [d for c in children for d in descendants_of(c)]


def status(mnt: Path) -> dict[str, object]:
    return dict(json.loads((mnt / ".dicomfs" / "status.json").read_bytes()))


@contextmanager
def serving(
    sources: list[Path], mnt: Path, index: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    mnt.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        # No periodic reconcile: at 10M one walks for five minutes every ten,
        # under whichever measure is running then (it overlapped `find` once).
        proc = subprocess.Popen(
            [PYTHON, "-m", "dicomfs", "serve", *map(str, sources), "--mount", str(mnt),
             "--index", str(index), "--names", "uid", "--reconcile-interval", "86400"],
            stdout=out, stderr=out, cwd=ROOT,
        )  # fmt: skip
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)


def wait_started(proc: subprocess.Popen[bytes], mnt: Path, files: int, log: Path) -> float:
    """Seconds until the start-up reconcile is over with every file indexed."""
    start = time.perf_counter()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited:\n{log.read_text()[-3000:]}")
        try:
            s = status(mnt)
            ingest = s["ingest"]
            assert isinstance(ingest, dict)
            if s["instances"] == files and ingest["reconciles"] >= 1 and ingest["queued"] == 0:
                return time.perf_counter() - start
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.5)


def sample_peak(pid: int, seconds: float) -> float:
    """Highest RSS (MB) of ``pid`` sampled every 50 ms for ``seconds``."""
    peak, end = 0.0, time.monotonic() + seconds
    while time.monotonic() < end:
        peak = max(peak, rss_mb(pid))
        time.sleep(0.05)
    return peak


def timed_ls(folder: Path) -> tuple[float, int]:
    start = time.perf_counter()
    out = subprocess.run(["ls", "-f", str(folder)], check=True, capture_output=True)
    return time.perf_counter() - start, out.stdout.count(b"\n")


def real_folder(work: Path, count: int) -> Path | None:
    """A real folder of ``count`` empty files (made once), or None above the inode budget."""
    if count > BASELINE_FOLDER_MAX:
        return None
    folder = work / f"flat-{count}"
    marker = work / f"flat-{count}.complete"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for i in range(count):
            os.close(os.open(folder / f"{uid(i)}.dcm", os.O_CREAT | os.O_WRONLY, 0o644))
        marker.touch()
    return folder


def measure(work: Path, files: int, reuse: bool = False) -> dict[str, float | str]:
    shape = Shape(files)
    src = work / f"archive-{files}"
    r: dict[str, float | str] = {"files": files, "plans": shape.plans}
    print(f"{files:,} files: generating (once)", flush=True)
    r["generate_s"] = generate(src, shape)
    index = work / f"index-{files}.sqlite"
    dicomfs = [PYTHON, "-m", "dicomfs", "index", str(src), "--index", str(index)]
    if reuse and index.exists():
        print("  dicomfs index: reusing the index of an earlier run", flush=True)
        r["index_bytes_per_instance"] = index.stat().st_size / files
    else:
        for leftover in work.glob(f"index-{files}.sqlite*"):
            leftover.unlink()
        subprocess.run(["sync"], check=True)
        print("  dicomfs index", flush=True)
        seconds, peak = peak_rss_of(dicomfs)
        r["index_s"], r["index_rate"], r["index_peak_mb"] = seconds, files / seconds, peak
        r["index_bytes_per_instance"] = index.stat().st_size / files
        r["pydicom_rate"] = pydicom_rate(src, min(SAMPLE, files))
    print("  re-run", flush=True)
    # Alternated, best of two each: whichever runs second finds the folders
    # the other just read in the page cache.
    reruns, walks = [], []
    for _ in range(2):
        walks.append(walk_lstat(src))
        reruns.append(peak_rss_of(dicomfs))
    r["rerun_s"], r["rerun_peak_mb"] = min(reruns)
    r["walk_s"] = min(walks)
    start = time.perf_counter()
    subprocess.run(["find", str(src), "-type", "f"], check=True, stdout=subprocess.DEVNULL)
    r["find_s"] = time.perf_counter() - start
    flat = real_folder(work, files)
    if flat is not None:
        r["flat_ls_s"] = min(timed_ls(flat)[0] for _ in range(2))
    mnt, log = work / "mnt", work / f"serve-{files}.log"
    extra = work / "arrivals"  # a second watched folder: new files make the parse workers work
    shutil.rmtree(extra, ignore_errors=True)
    extra.mkdir()
    print("  serve", flush=True)
    with serving([src, extra], mnt, index, log) as proc:
        r["serve_start_s"] = wait_started(proc, mnt, files, log)
        time.sleep(5)
        r["serve_idle_mb"] = rss_mb(proc.pid)
        r["serve_startup_peak_mb"] = rss_mb(proc.pid, "VmHWM")
        template, where = _ct_template()
        arrivals = 1000
        for name, data in _ct_bytes(template, where, shape.patients + 1, arrivals):
            (extra / name).write_bytes(data)
        wait_started(proc, mnt, files + arrivals, log)
        workers = descendants_of(proc.pid)
        r["worker_private_mb"] = max((private_mb(w) for w in workers), default=float("nan"))
        r["workers"] = len(workers)
        files += arrivals
        # The start-up reconcile of an indexed tree is a full one: its peak
        # (VmHWM before any listing) is the peak of a reconcile.
        before = rss_mb(proc.pid)
        seconds, listed = timed_ls(mnt / "by-sop")
        assert listed == files + 2, (listed, files)
        r["ls_s"], r["ls_growth_mb"] = seconds, rss_mb(proc.pid) - before
        again, _ = timed_ls(mnt / "by-sop")
        r["ls_again_s"] = again
        start = time.perf_counter()
        two = [subprocess.Popen(["ls", "-f", str(mnt / "by-sop")], stdout=subprocess.DEVNULL)]
        two.append(subprocess.Popen(["ls", "-f", str(mnt / "by-sop")], stdout=subprocess.DEVNULL))
        peak_two = 0.0
        while any(p.poll() is None for p in two):
            peak_two = max(peak_two, rss_mb(proc.pid))
            time.sleep(0.02)
        r["ls_two_s"], r["ls_two_peak_mb"] = time.perf_counter() - start, peak_two
        for label in ("plans_first_s", "plans_again_s"):
            start = time.perf_counter()
            out = subprocess.run(
                ["find", str(mnt / "plans"), "-maxdepth", "2"], check=True, capture_output=True
            )
            r[label] = time.perf_counter() - start
            assert out.stdout.count(b"\n") == 1 + 7 * shape.plans, out.stdout.count(b"\n")
            time.sleep(1.2)  # the kernel's entries and the daemon's listing cache expire
        r["serve_peak_mb"] = rss_mb(proc.pid, "VmHWM")
        r["serve_after_mb"] = rss_mb(proc.pid)
    print(json.dumps(r, indent=1), flush=True)
    return r


def report(results: list[dict[str, float | str]]) -> str:
    def f(value: float | str | None, spec: str = ",.0f") -> str:
        return "n/a" if value is None or value != value else format(value, spec)  # NaN

    sizes = [f"{int(r['files']):,}" for r in results]
    rows = []

    def row(what: str, key: str, spec: str = ",.1f", unit: str = "") -> None:
        rows.append([what, *[f(r.get(key), spec) + unit for r in results]])

    row("`dicomfs index`, files/s", "index_rate", ",.0f")
    row("pydicom `dcmread`, 1 process, files/s (baseline)", "pydicom_rate", ",.0f")
    row("index file, bytes per instance", "index_bytes_per_instance", ",.0f")
    row("`dicomfs index` peak RSS, MB", "index_peak_mb", ",.0f")
    row("unchanged re-run, s", "rerun_s", ",.1f")
    row("Python walk + lstat, s (baseline)", "walk_s", ",.1f")
    row("`find -type f`, s (baseline)", "find_s", ",.1f")
    ratio = [f(float(r["rerun_s"]) / float(r["walk_s"]), ".2f") + "x" for r in results]
    rows.append(["re-run / walk+lstat", *ratio])
    row("re-run peak RSS, MB", "rerun_peak_mb", ",.0f")
    row("`serve` start-up (reconcile of an indexed tree), s", "serve_start_s", ",.1f")
    row("`serve` RSS idle after start-up, MB", "serve_idle_mb", ",.0f")
    row("`serve` peak RSS during start-up reconcile, MB", "serve_startup_peak_mb", ",.0f")
    row("parse worker private memory, MB (largest)", "worker_private_mb", ",.1f")
    row("`ls -f by-sop`, s", "ls_s", ",.2f")
    row("`ls -f by-sop` again, s", "ls_again_s", ",.2f")
    row("`ls -f` of a real folder, same count, s (baseline)", "flat_ls_s", ",.2f")
    ratio = [
        f(float(r["ls_s"]) / float(r["flat_ls_s"]), ".1f") + "x" if "flat_ls_s" in r else "n/a"
        for r in results
    ]
    rows.append(["`ls -f by-sop` / real folder", *ratio])
    row("daemon RSS growth for one `ls -f by-sop`, MB", "ls_growth_mb", ",.1f")
    row("two `ls -f by-sop` at once, s", "ls_two_s", ",.2f")
    row("daemon peak RSS during the two, MB", "ls_two_peak_mb", ",.0f")
    row("`find MNT/plans -maxdepth 2`, first, s", "plans_first_s", ",.2f")
    row("`find MNT/plans -maxdepth 2`, again, s", "plans_again_s", ",.2f")
    row("plans", "plans", ",.0f")
    row("`serve` peak RSS over the whole run, MB", "serve_peak_mb", ",.0f")
    return table(["measure", *sizes], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "scale")
    parser.add_argument("--no-write", action="store_true", help="print, do not edit BENCHMARKS.md")
    parser.add_argument(
        "--reuse-index",
        action="store_true",
        help="keep an index-N.sqlite of an earlier run and measure from the re-run on "
        "(10M: the first index takes hours; its figures are then n/a here)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("scale_bench mounts through serve: run it as root")
    args.work.mkdir(parents=True, exist_ok=True)
    results = [measure(args.work, int(s), args.reuse_index) for s in args.sizes.split(",")]
    (args.work / f"results-{args.sizes.replace(',', '-')}.json").write_text(
        json.dumps(results, indent=1)
    )
    body = f"Measured {time.strftime('%Y-%m-%d')} on {machine_line()}.\n\n" + report(results)
    print(body)
    if not args.no_write:
        name = "scale-10m" if any(int(s) >= 5_000_000 for s in args.sizes.split(",")) else "scale"
        write_section(name, body)


if __name__ == "__main__":
    main()
