"""Load: 16 readers through the mount while ``serve`` ingests a 5,000-file burst (G7, G9).

No reader may see an error or wrong bytes; every listing is complete for its
moment (no duplicate, nothing that is not a source file); once the burst
settles the mount, the index and the source folder agree exactly; the
daemon's peak memory stays bounded (reported, and asserted < 500 MB).
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from pathlib import Path

import pytest
from fuse_helpers import public_dir, wait_for
from rel_helpers import CT_PREFIX, DEADLINE, serving, write_ct_copies

from dicomfs.index import IndexReader

READERS = 16
BURST = 5000
PRESENT = 100
MEMORY_LIMIT_KB = 500 * 1024


def vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


@pytest.mark.slow
@pytest.mark.fuse
@pytest.mark.watch
def test_16_readers_during_a_5000_file_burst() -> None:
    base = public_dir("dicomfs-rel-load-")
    staging = base / "staging"
    src = base / "src"
    # Files there before the burst, so every reader has something to read from the start.
    before = write_ct_copies(src / "before", PRESENT, series=2)
    files = write_ct_copies(staging, BURST)
    expected = {f"{uid}.dcm": path.read_bytes() for uid, path in (files | before).items()}
    series, present_series = f"{CT_PREFIX}.1.1", f"{CT_PREFIX}.2.1"
    errors: list[str] = []
    stop = threading.Event()
    reads = [0] * READERS
    try:
        with serving([src], base / "mnt", base / "index.sqlite") as serve:
            serve.wait_idle_indexed(PRESENT)
            by_sop, by_series = serve.mnt / "by-sop", serve.mnt / "by-series"

            def reader(n: int) -> None:
                rng = random.Random(n)
                try:
                    while not stop.is_set():
                        names = os.listdir(by_sop)
                        if len(names) != len(set(names)) or not set(names) <= expected.keys():
                            errors.append(f"reader {n}: a listing of {len(names)} is wrong")
                        for name in rng.sample(names, min(4, len(names))):
                            with open(by_sop / name, "rb") as handle:
                                if handle.read() != expected[name]:
                                    errors.append(f"reader {n}: wrong bytes for {name}")
                            reads[n] += 1
                        if rng.random() < 0.2:  # the folder of the files present before
                            os.stat(by_series / present_series)
                            os.listdir(by_series / present_series)
                except Exception as exc:  # reported with the daemon's log below
                    errors.append(f"reader {n}: {exc!r}")

            threads = [threading.Thread(target=reader, args=(n,)) for n in range(READERS)]
            for t in threads:
                t.start()
            started, at_burst = time.monotonic(), sum(reads)
            wait_for(lambda: sum(reads) >= READERS, DEADLINE, "the readers at work")
            for name in sorted(os.listdir(staging)):  # the burst: 5,000 writes and closes
                shutil.copyfile(staging / name, src / name)
            serve.wait_idle_indexed(PRESENT + BURST, timeout=120)
            settled, during = time.monotonic() - started, sum(reads) - at_burst
            stop.set()
            for t in threads:
                t.join(60)
            assert not errors, f"{errors[:5]}\n{serve.log()[-3000:]}"
            assert all(reads), reads  # every reader read files
            assert during > 0, "no read while the burst went in"

            reader_ = IndexReader(base / "index.sqlite")
            indexed = sorted(f"{i.sop_uid}.dcm" for i in reader_.all_instances())
            paths = sorted(os.path.basename(i.file.path) for i in reader_.all_instances())
            reader_.close()
            assert indexed == sorted(expected)
            # Listings are cached for at most 1 s (view.py): then no stale or missing entry.
            wait_for(lambda: sorted(os.listdir(by_sop)) == indexed, 5, "the final listing")
            assert paths == sorted(os.listdir(src / "before") + os.listdir(staging))
            wait_for(lambda: len(os.listdir(by_series / series)) == BURST, 5, "by-series")
            peak = vm_hwm_kb(serve.pid)
            workers = [vm_hwm_kb(pid) for pid in serve.leftovers() if pid != serve.pid]
            print(
                f"\n{BURST} files settled in {settled:.1f} s under {READERS} readers "
                f"({during} reads during it); serve VmHWM {peak / 1024:.0f} MB, "
                f"workers {[round(w / 1024) for w in workers]} MB"
            )
            assert peak < MEMORY_LIMIT_KB, f"serve VmHWM {peak} kB"
            assert serve.terminate() == 0
    finally:
        stop.set()
        shutil.rmtree(base, ignore_errors=True)
