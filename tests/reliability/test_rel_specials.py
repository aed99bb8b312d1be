"""Symlinks, FIFOs and sockets under a source of a running ``serve`` (reliability.md A11).

They are never opened nor followed, and never skipped in silence: each is
listed in ``.dicomfs/rejected.txt`` (and ``dicomfs rejected``) with its
reason and counted in ``status.json``, whether it was there at start or
appeared while watching, and the watching daemon says exactly what a fresh
``dicomfs index`` of the same tree says. A link that becomes a regular file
is indexed like any file.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuse_helpers import public_dir, wait_for
from rel_helpers import DEADLINE, ServeProcess, dicomfs, serving, write_ct_copies

SYMLINK_REASON = "symbolic link: not followed (a link could point outside the source)"


@pytest.fixture
def base() -> Iterator[Path]:
    path = public_dir("dicomfs-rel-specials-")
    yield path
    for mnt in path.glob("mnt*"):
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


def _rejected_txt(serve: ServeProcess) -> dict[str, tuple[str, str]]:
    """rejected.txt through the mount: path -> (kind, reason)."""
    try:
        text = (serve.mnt / ".dicomfs" / "rejected.txt").read_text()
    except OSError:
        return {}
    rows = (line.split("\t") for line in text.splitlines())
    return {path: (kind, reason) for path, kind, reason in rows}


def _rejected_by_index(base: Path, src: Path) -> dict[str, tuple[str, str]]:
    """What a fresh ``dicomfs index`` of ``src`` lists as rejected."""
    index = base / "fresh.sqlite"
    done = dicomfs("index", src, "--index", index, "-q")
    assert done.returncode == 0, done.stderr
    listed = dicomfs("rejected", "--index", index)
    assert listed.returncode == 0, listed.stderr
    rows = (line.split("\t") for line in listed.stdout.decode().splitlines())
    return {path: (kind, reason) for path, kind, reason in rows}


@pytest.mark.fuse
@pytest.mark.watch
def test_special_entries_under_serve_are_listed_as_the_scan_lists_them(base: Path) -> None:
    src = base / "src"
    files = write_ct_copies(src, 3)
    outside = write_ct_copies(base / "outside", 1, start=100)
    (escaped_uid, escaped), *_ = outside.items()
    names = sorted(p.name for p in files.values())
    (src / "link-inside.dcm").symlink_to(names[0])
    (src / "link-outside.dcm").symlink_to(escaped)
    (src / "dangling.dcm").symlink_to("nowhere.dcm")
    (src / "loop.dcm").symlink_to("loop.dcm")
    os.mkfifo(src / "pipe.dcm")
    at_start = {
        str(src / "link-inside.dcm"): ("symlink", SYMLINK_REASON),
        str(src / "link-outside.dcm"): ("symlink", SYMLINK_REASON),
        str(src / "dangling.dcm"): ("symlink", SYMLINK_REASON),
        str(src / "loop.dcm"): ("symlink", SYMLINK_REASON),
        str(src / "pipe.dcm"): ("not_regular", "not a regular file: FIFO"),
    }
    with serving([src], base / "mnt", base / "index.sqlite") as serve:
        serve.wait_idle_indexed(len(files))
        wait_for(lambda: _rejected_txt(serve) == at_start, DEADLINE, "rejected.txt at start")
        assert serve.status()["rejected_files"] == len(at_start)
        assert not (serve.mnt / "by-sop" / f"{escaped_uid}.dcm").exists()

        # While watching: new specials are listed, a link replaced by a file is indexed.
        (src / "sub").mkdir()
        (src / "sub" / "late-link.dcm").symlink_to(escaped)
        os.mkfifo(src / "late-pipe.dcm")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(str(src / "late.sock"))
        replacement = write_ct_copies(base / "staging", 1, start=200)
        (new_uid, staged), *_ = replacement.items()
        os.rename(staged, src / "link-inside.dcm")  # over the link
        expected = {
            **{k: v for k, v in at_start.items() if not k.endswith("link-inside.dcm")},
            str(src / "sub" / "late-link.dcm"): ("symlink", SYMLINK_REASON),
            str(src / "late-pipe.dcm"): ("not_regular", "not a regular file: FIFO"),
            str(src / "late.sock"): ("not_regular", "not a regular file: socket"),
        }
        serve.wait_idle_indexed(len(files) + 1)
        wait_for(lambda: _rejected_txt(serve) == expected, DEADLINE, "rejected.txt after events")
        served = serve.mnt / "by-sop" / f"{new_uid}.dcm"
        assert served.read_bytes() == (src / "link-inside.dcm").read_bytes()
        # The watching daemon and a fresh scan of the same tree say the same.
        assert _rejected_by_index(base, src) == expected
        assert serve.terminate() == 0
    assert "Traceback" not in serve.log()
