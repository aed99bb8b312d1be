"""What readers of a running ``serve`` see while its index is rebuilt (reliability.md E6, C2).

A rebuild starts from an empty index and fills it with a full reconcile. A
mount that answered from that index meanwhile would list an empty (then a
partial) ``by-sop/`` as if the files were gone; a script reading it would
draw the wrong conclusion. The view answers EAGAIN instead, and
``.dicomfs/status.json`` says ``"rebuilding": true``, until the rebuild's
reconcile is complete. A rebuild also keeps serving the copy of a duplicated
UID that served before, when that file is still there. Real ``serve``
processes, real mounts, real damage to the index file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuse_helpers import public_dir, wait_for
from rel_helpers import DEADLINE, ServeProcess, serving, write_ct_copies

from dicomfs.index import IndexReader, IndexWriter

# Enough files that the rebuild takes seconds with one parse worker: longer
# than the second a mount reader waits before it notices a new index file.
REBUILD_FILES = 5000


@pytest.fixture
def base() -> Iterator[Path]:
    path = public_dir("dicomfs-rel-rebuild-")
    yield path
    for mnt in path.glob("mnt*"):
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


def _damage(index: Path, how: str) -> None:
    if how == "deleted":
        index.unlink()
    elif how == "damaged":  # garbage over the whole file, same inode and size
        size = index.stat().st_size
        with open(index, "r+b") as handle:
            handle.write(os.urandom(size))
    else:  # another, empty dicomfs index moved over it
        other = index.with_name("other.sqlite")
        IndexWriter(other).close()
        os.replace(other, index)


def _status(serve: ServeProcess) -> dict[str, object] | None:
    try:
        return serve.status()
    except OSError as exc:
        assert exc.errno == errno.EIO, exc  # the old, damaged index before readers reopen
        return None


@pytest.mark.fuse
@pytest.mark.watch
@pytest.mark.slow
@pytest.mark.parametrize("how", ["deleted", "damaged", "replaced"])
def test_the_mount_never_lists_an_empty_by_sop_while_the_index_is_rebuilt(
    base: Path, how: str
) -> None:
    files = write_ct_copies(base / "src", REBUILD_FILES)
    wanted = sorted(f"{uid}.dcm" for uid in files)
    index = base / "index.sqlite"
    with serving([base / "src"], base / "mnt", index, "--workers", "1") as serve:
        serve.wait_idle_indexed(len(files), timeout=120)
        by_sop = serve.mnt / "by-sop"
        assert sorted(os.listdir(by_sop)) == wanted
        _damage(index, how)
        failures: list[int] = []
        said_rebuilding = False
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline, f"no complete listing again; log:\n{serve.log()}"
            try:
                names = os.listdir(by_sop)
            except OSError as exc:
                failures.append(exc.errno or 0)
            else:
                # Every listing that succeeds is complete: the old index (until
                # readers notice the new file) or the rebuilt one, never between.
                if sorted(names) != wanted:
                    pytest.fail(
                        f"a listing of {len(names)} of {len(files)} files succeeded "
                        f"during the rebuild (errors before it: {failures[-5:]})"
                    )
                if errno.EAGAIN in failures:
                    break  # the rebuild was seen, and it is over
            status = _status(serve)
            said_rebuilding = said_rebuilding or bool(status and status.get("rebuilding"))
            time.sleep(0.01)
        assert set(failures) <= {errno.EAGAIN, errno.EIO}, failures
        assert said_rebuilding, "status.json never said the index was being rebuilt"
        wait_for(
            lambda: (
                (_status(serve) or {}).get("ingest", {}).get("rebuilds") == 1  # type: ignore[union-attr]
                and (_status(serve) or {}).get("rebuilding") is False
            ),
            5,
            "status.json",
        )  # cached for up to 1 s
        status = serve.status()
        assert status["rebuilding"] is False and status["instances"] == len(files)
        assert status["ingest"]["rebuilds"] == 1  # type: ignore[index]
        uid, path = next(iter(files.items()))
        assert (by_sop / f"{uid}.dcm").read_bytes() == path.read_bytes()
        assert serve.terminate() == 0
    assert "rebuilding it from the source folders" in serve.log()


@pytest.mark.fuse
@pytest.mark.watch
def test_a_rebuild_keeps_the_copy_that_served_before(base: Path) -> None:
    """C2 across a rebuild: a later copy with an OLDER mtime (cp -p) still does not take over."""
    files = write_ct_copies(base / "src", 5)
    uid, first = next(iter(files.items()))
    index = base / "index.sqlite"
    with serving([base / "src"], base / "mnt", index) as serve:
        serve.wait_idle_indexed(len(files))
        served = serve.mnt / "by-sop" / f"{uid}.dcm"
        assert served.read_bytes() == first.read_bytes()
        # A second copy of the same UID with other bytes arrives later, carrying
        # an mtime older than the first copy's (a timestamp-preserving copy).
        later = base / "src" / "restored" / "copy.dcm"
        later.parent.mkdir()
        data = bytearray(first.read_bytes())
        data[-1] ^= 0xFF  # other pixel bytes: a conflict, not a benign duplicate
        later.write_bytes(bytes(data))
        old = first.stat().st_mtime_ns - 3_600_000_000_000
        os.utime(later, ns=(old, old))
        wait_for(lambda: _conflicts(serve) == 1, DEADLINE, "the conflict recorded")
        assert served.read_bytes() == first.read_bytes()  # the first copy keeps serving

        index.unlink()  # the index is rebuilt from the source folders
        wait_for(lambda: _rebuilt(serve, len(files)), 60, "the rebuild")
        assert served.read_bytes() == first.read_bytes(), "the rebuild swapped the served copy"
        assert _conflicts(serve) == 1
        assert serve.terminate() == 0


def _conflicts(serve: ServeProcess) -> int:
    status = _status(serve)
    return int(status["conflicts"]) if status else -1  # type: ignore[call-overload]


def _rebuilt(serve: ServeProcess, instances: int) -> bool:
    status = _status(serve)
    if not status or status.get("rebuilding"):
        return False
    ingest = status["ingest"]
    return status["instances"] == instances and ingest["rebuilds"] >= 1  # type: ignore[index]


def test_status_json_says_whether_the_index_is_being_rebuilt(tmp_path: Path) -> None:
    """Without FUSE: the view over an index set aside for a rebuild, then completed."""
    from dicomfs.index import set_aside
    from dicomfs.live.scan import reconcile
    from dicomfs.view.nodes import FileNode, Rebuilding
    from dicomfs.view.tree import View

    files = write_ct_copies(tmp_path / "src", 3)
    index = tmp_path / "index.sqlite"
    writer = IndexWriter(index)
    reconcile(writer, [tmp_path / "src"], workers=1)
    writer.close()
    set_aside(index)  # what serve does to a damaged index: an empty one, to be rebuilt
    view = View(lambda: IndexReader(index), dir_uid=0, dir_gid=0, mount_time_ns=0, cache_ttl=0)
    try:
        node = view.lookup(".dicomfs/status.json")
        assert isinstance(node, FileNode) and node.content is not None
        assert json.loads(node.content)["rebuilding"] is True
        assert [name for name, _ in view.listdir("")] == sorted(
            ["by-sop", "by-series", "by-study", "plans", "objects", ".dicomfs"]
        )
        assert [name for name, _ in view.listdir(".dicomfs")] == ["status.json"]
        uid = next(iter(files))
        for folder in ("by-sop", "by-series", "by-study", "plans", "objects"):
            with pytest.raises(Rebuilding):
                view.listdir(folder)
        for path in (f"by-sop/{uid}.dcm", ".dicomfs/rejected.txt"):
            with pytest.raises(Rebuilding):
                view.lookup(path)
        writer = IndexWriter(index)
        reconcile(writer, [tmp_path / "src"], workers=1)  # the rebuild's reconcile completes
        writer.close()
        view.close()  # readers reopen (serve's readers notice within a second)
        node = view.lookup(".dicomfs/status.json")
        assert isinstance(node, FileNode) and node.content is not None
        assert json.loads(node.content)["rebuilding"] is False
        assert sorted(name for name, _ in view.listdir("by-sop")) == sorted(
            f"{u}.dcm" for u in files
        )
    finally:
        view.close()


def test_an_empty_index_moved_over_the_one_the_view_began_with_is_not_taken_for_the_truth(
    tmp_path: Path,
) -> None:
    """Replaced by hand with a new, empty index: "rebuilding" (serve rebuilds it), not empty."""
    from dicomfs.live.scan import reconcile
    from dicomfs.view.nodes import Rebuilding
    from dicomfs.view.tree import View

    files = write_ct_copies(tmp_path / "src", 3)
    index = tmp_path / "index.sqlite"
    writer = IndexWriter(index)
    reconcile(writer, [tmp_path / "src"], workers=1)
    writer.close()
    shutil.copy(index, tmp_path / "copy.sqlite")  # the same answers, another file
    view = View(lambda: IndexReader(index), dir_uid=0, dir_gid=0, mount_time_ns=0, cache_ttl=0)
    try:
        assert len(view.listdir("by-sop")) == len(files)
        IndexWriter(tmp_path / "empty.sqlite").close()
        os.replace(tmp_path / "empty.sqlite", index)
        view.close()  # readers reopen (a mount's readers notice within a second)
        with pytest.raises(Rebuilding):
            view.listdir("by-sop")
        os.replace(tmp_path / "copy.sqlite", index)  # an index with answers is answered from
        view.close()
        assert len(view.listdir("by-sop")) == len(files)
    finally:
        view.close()

    # A first index, empty while its first scan runs, is shown filling (README).
    fresh = tmp_path / "fresh.sqlite"
    IndexWriter(fresh).close()
    first = View(lambda: IndexReader(fresh), dir_uid=0, dir_gid=0, mount_time_ns=0, cache_ttl=0)
    try:
        assert first.listdir("by-sop") == []
    finally:
        first.close()
