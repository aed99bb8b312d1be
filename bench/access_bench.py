"""What opening a source with the reader's own credentials costs per open, in one run.

    .venv/bin/python bench/access_bench.py [--files 2000] [--rounds 5]

With ``allow_other`` the FUSE daemon opens each source with the reader's
fsuid, fsgid and groups (``dicomfs/fuse/caller.py``): it reads the reader's
groups from /proc (at most once a second per process) and switches the
thread's credentials around the open.
Measured, as open+close of every file of a series, median per open:

- an unprivileged reader opening the source files directly (the baseline);
- the same reader through an ``allow_other`` mount (credentials switched);
- root through the same mount (the daemon's own user: no switch), so the
  difference between the two mount figures is the switch itself.

Needs root (it creates and removes a temporary user and group).
Results go to BENCHMARKS.md between the ``access`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine_line, table, write_section
from mount_bench import build_index, mounted

USER = "dicomfs-bench-reader"
GROUP = "dicomfs-bench-readers"

# Run as the reader: open+close every path, ``rounds`` times; per-open seconds.
_OPENER = """
import json, os, sys, time
paths = sys.argv[2:]
rounds = int(sys.argv[1])
for p in paths:  # warm the dentry and attribute caches: only the open is measured
    os.close(os.open(p, os.O_RDONLY))
per_open = []
for _ in range(rounds):
    start = time.perf_counter()
    for p in paths:
        os.close(os.open(p, os.O_RDONLY))
    per_open.append((time.perf_counter() - start) / len(paths))
print(json.dumps(per_open))
"""


def _opener_python() -> str:
    """An interpreter the reader may run (pyenv's may live under /root)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/{version}", "/usr/bin/python3", sys.executable):
        if os.path.exists(candidate) and os.stat(candidate).st_mode & 0o001:
            return candidate
    raise SystemExit("no Python interpreter another user may run")


def open_cost(user: str | None, paths: list[str], rounds: int) -> float:
    """Median seconds per open+close, as ``user`` (None: this process's user)."""
    cmd = [_opener_python(), "-c", _OPENER, str(rounds), *paths]
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd="/")
    return float(statistics.median(json.loads(done.stdout)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("access_bench.py needs root (it creates a reader account)")
    from dicomfs.demo import write_ct_series

    subprocess.run(["groupadd", "--system", GROUP], check=True)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "-G", GROUP, "-s", "/usr/sbin/nologin", USER],
        check=True,
    )
    work = Path(tempfile.mkdtemp(prefix="dicomfs-access-bench-", dir="/tmp"))
    try:
        work.chmod(0o755)
        write_ct_series(work / "src", args.files, rows=16)
        for folder in [work / "src", *(p for p in (work / "src").rglob("*") if p.is_dir())]:
            folder.chmod(0o755)
        index = work / "index.sqlite"
        build_index(work / "src", index)
        sources = sorted(str(p) for p in (work / "src").rglob("*.dcm"))
        direct = open_cost(USER, sources, args.rounds)
        with mounted(index, work / "mnt", "--allow-other", "--group", GROUP) as mnt:
            served = sorted(str(p) for p in (mnt / "by-sop").iterdir())
            as_reader = open_cost(USER, served, args.rounds)
            as_daemon = open_cost(None, served, args.rounds)
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(work / "mnt")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
        subprocess.run(["userdel", USER], capture_output=True)
        subprocess.run(["groupdel", GROUP], capture_output=True)
    us = 1e6
    rows = [
        ["reader opens the sources directly (baseline)", f"{direct * us:.1f}", "1.00x"],
        [
            "reader through an allow_other mount (credentials switched)",
            f"{as_reader * us:.1f}",
            f"{as_reader / direct:.2f}x",
        ],
        [
            "daemon's own user through the same mount (no switch)",
            f"{as_daemon * us:.1f}",
            f"{as_daemon / direct:.2f}x",
        ],
    ]
    body = "\n".join(
        [
            "## Opening a source as the reader (allow_other)",
            "",
            f"`bench/access_bench.py --files {args.files} --rounds {args.rounds}`; "
            f"{machine_line()}. Median time of one open+close (the page cache and the "
            "kernel's entry cache warm; only the open round trip is measured).",
            "",
            table(["who opens", "µs per open", "vs direct"], rows),
            "",
            f"The credential switch itself (setgroups, setfsgid and setfsuid on the "
            f"thread, checked, and back; the reader's groups come from /proc at most once "
            f"a second per process): {(as_reader - as_daemon) * us:.1f} µs per open, "
            "the difference between the two mount rows.",
        ]
    )
    write_section("access", body)
    print(body)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
