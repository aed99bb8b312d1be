"""``dicomfs serve`` (and its ingest without FUSE) under the watching cases.

Cases (docs/reliability.md): A1 A4 A8 A10 B2 B3 B4 C2 C5 G3. Real inotify,
real tmpfs volumes, real mounts; waits are deadlines on what status.json,
the index or the mount say.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuse_helpers import build_corpus, public_dir, wait_for
from rel_helpers import CT_PREFIX, DEADLINE, serving, tmpfs, write_ct_copies

from dicomfs.demo import ct_bytes
from dicomfs.fuse import fs
from dicomfs.index import IndexReader, IndexWriter, graph
from dicomfs.live.watch import Watcher
from dicomfs.service.config import Settings
from dicomfs.service.serve import LiveIndex
from dicomfs.view.tree import View

pytestmark = pytest.mark.watch


@pytest.fixture
def base() -> Iterator[Path]:
    path = public_dir("dicomfs-rel-serve-")
    yield path
    for mnt in path.glob("mnt*"):
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
    for vol in path.glob("vol*"):
        subprocess.run(["umount", "-l", str(vol)], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


def by_sop(mnt: Path) -> set[str]:
    return set(os.listdir(mnt / "by-sop"))


def read_or_none(path: Path) -> bytes | None:
    """The bytes, or None while the mount refuses a source it has not verified yet (EIO)."""
    try:
        return path.read_bytes()
    except OSError as exc:
        assert exc.errno == errno.EIO, exc
        return None


def errno_of(action: object) -> int | None:
    try:
        action()  # type: ignore[operator]
    except OSError as exc:
        return exc.errno
    return None


# -- A8: the source volume disappears -----------------------------------------------------------


@pytest.mark.fuse
def test_source_volume_unmounted_under_serve_keeps_the_index_and_alarms(base: Path) -> None:
    vol, index = base / "vol", base / "index.sqlite"
    with tmpfs(vol, "16m"):
        files = write_ct_copies(vol, 30)
        names = {f"{uid}.dcm" for uid in files}
        with serving([vol], base / "mnt", index) as serve:
            serve.wait_idle_indexed(len(files))
            subprocess.run(["umount", "-l", str(vol)], check=True)  # the volume is gone
            wait_for(
                lambda: any("gone at once" in a for a in serve.status()["ingest"]["alarms"]),
                DEADLINE,
                "the mass-loss alarm",
            )
            assert serve.status()["instances"] == len(files)  # no mass de-indexing
            assert by_sop(serve.mnt) == names
            uid = next(iter(files))
            # The bytes are gone with the volume: EIO, never other bytes or an empty file.
            assert errno_of(lambda: (serve.mnt / "by-sop" / f"{uid}.dcm").read_bytes()) == (
                errno.EIO
            )
            # The failed open has the file looked at again (C5): it is gone, and
            # kept while the alarm stands, not de-indexed one read at a time.
            wait_for(lambda: serve.status()["ingest"]["kept"] >= 1, DEADLINE, "the look")
            assert serve.status()["instances"] == len(files)
            assert serve.terminate() == 0
        assert "ALARM" in serve.log()

        # Started while the volume is missing: the same rule, from the first scan on.
        with serving([vol], base / "mnt", index) as again:
            wait_for(
                lambda: any("gone at once" in a for a in again.status()["ingest"]["alarms"]),
                DEADLINE,
                "the alarm at start",
            )
            assert again.status()["instances"] == len(files)
            # The volume comes back: files are found again and served.
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(vol)], check=True
            )
            for uid, path in files.items():
                (vol / path.name).write_bytes(ct_bytes_like(path, uid))
            wait_for(
                lambda: (
                    (again.mnt / "by-sop" / f"{uid}.dcm").exists()
                    and errno_of(lambda: (again.mnt / "by-sop" / f"{uid}.dcm").read_bytes()) is None
                ),
                DEADLINE,
                "the remounted volume served",
            )
            again.wait_idle_indexed(len(files))
            assert again.terminate() == 0


def ct_bytes_like(path: Path, uid: str) -> bytes:
    """The bytes a write_ct_copies file had (its volume is gone): rebuilt the same way."""
    template_uid = f"{CT_PREFIX}.1.1000000"
    template = ct_bytes(
        template_uid,
        study_uid=f"{CT_PREFIX}.1",
        series_uid=f"{CT_PREFIX}.1.1",
        patient_id="REL01",
        patient_name="Reliability^Test",
    )
    return template.replace(template_uid.encode(), uid.encode())


# -- A1: reading through the mount causes no index work -------------------------------------------


@pytest.mark.fuse
def test_reading_1000_files_through_the_mount_causes_no_reindex(base: Path) -> None:
    files = write_ct_copies(base / "src", 200)
    with serving([base / "src"], base / "mnt", base / "index.sqlite") as serve:
        serve.wait_idle_indexed(len(files))
        before = serve.status()["ingest"]
        for _ in range(5):
            for uid, path in files.items():
                assert (serve.mnt / "by-sop" / f"{uid}.dcm").read_bytes() == path.read_bytes()
        sentinel = write_ct_copies(base / "src", 1, start=len(files))
        serve.wait_idle_indexed(len(files) + 1)
        after = serve.status()["ingest"]
        assert after["parsed"] - before["parsed"] == 1  # only the sentinel
        assert after["events"] - before["events"] <= 2  # its create and close
        assert after["reconciles"] == before["reconciles"]
        assert sentinel
        assert serve.terminate() == 0


# -- B4, C2, G3: replaced and deleted sources while a reader holds them open ----------------------


@pytest.mark.fuse
def test_replace_and_delete_under_open_handles(base: Path) -> None:
    """Each version has another size: a read must never mix one's bytes with another's size."""
    src = base / "src"
    src.mkdir()
    uid = f"{CT_PREFIX}.9.1"

    def version(description: str) -> bytes:
        return ct_bytes(uid, study_uid=f"{CT_PREFIX}.9", series_uid=f"{CT_PREFIX}.9.2",
                        series_description=description)  # fmt: skip

    first = version("v1")
    second = version("v2: the same UID, longer")
    other = version("another copy of that UID, longer still")
    assert len(first) < len(second) < len(other)
    seen: list[bytes] = []

    def becomes(path: Path, wanted: bytes, before: bytes) -> bool:
        data = read_or_none(path)
        if data is not None:
            assert data in (before, wanted), f"{len(data)} bytes, neither version"
            seen.append(data)
        return data == wanted

    (src / "a.dcm").write_bytes(first)
    with serving([src], base / "mnt", base / "index.sqlite") as serve:
        serve.wait_idle_indexed(1)
        served = serve.mnt / "by-sop" / f"{uid}.dcm"
        with served.open("rb", buffering=0) as old:
            head = old.read(100)
            # B4: the sender replaces the file by rename, same SOP UID, new bytes.
            (src / ".a.dcm.tmp").write_bytes(second)
            os.replace(src / ".a.dcm.tmp", src / "a.dcm")
            wait_for(lambda: becomes(served, second, first), DEADLINE, "new opens see v2")
            assert head + old.read() == first  # G3: the handle keeps the old bytes
        for _ in range(20):  # G2: right after the re-index, reads are whole
            assert served.read_bytes() == second
        # C2: another file claims the UID with other bytes: recorded, never served.
        (src / "b.dcm").write_bytes(other)
        wait_for(lambda: serve.status()["conflicts"] == 1, DEADLINE, "the conflict")
        assert served.read_bytes() == second
        # Let b's row age: its promotion must not rely on it being freshly indexed.
        conn = sqlite3.connect(f"file:{base / 'index.sqlite'}?mode=ro", uri=True)
        (indexed_at,) = conn.execute(
            "SELECT indexed_at FROM files WHERE path = ?", (os.fsencode(src / "b.dcm"),)
        ).fetchone()
        conn.close()
        wait_for(lambda: time.time() - indexed_at > 3 * fs.ATTR_TIMEOUT, 10, "b to age")
        assert os.stat(served).st_size == len(second)  # the kernel caches this size
        with served.open("rb", buffering=0) as held:
            os.unlink(src / "a.dcm")  # G3: deleted while held open
            wait_for(lambda: becomes(served, other, second), DEADLINE, "the copy promoted")
            for _ in range(20):
                assert served.read_bytes() == other
            assert held.read() == second
        # The conflict went with the file (status.json is cached for up to 1 s).
        wait_for(lambda: serve.status()["conflicts"] == 0, 5, "the conflict settled")
        assert serve.terminate() == 0
    assert seen


# -- C5: a source changed without an event the watcher hears -------------------------------------


@pytest.mark.fuse
def test_changes_without_events_are_refused_then_reindexed(base: Path) -> None:
    """touch and chmod produce no close/move/delete event; the mount notices at open."""
    files = write_ct_copies(base / "src", 3)
    (uid, path), (uid2, path2) = list(files.items())[:2]
    with serving([base / "src"], base / "mnt", base / "index.sqlite") as serve:
        serve.wait_idle_indexed(len(files))
        served = serve.mnt / "by-sop" / f"{uid}.dcm"
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
        assert errno_of(served.read_bytes) == errno.EIO  # never served unverified
        wait_for(lambda: errno_of(served.read_bytes) is None, DEADLINE, "the re-index")
        mtime = path.stat().st_mtime_ns
        wait_for(lambda: os.stat(served).st_mtime_ns == mtime, 5, "new attributes (1 s cache)")

        served2 = serve.mnt / "by-sop" / f"{uid2}.dcm"
        assert os.stat(served2).st_mode & 0o777 == 0o444
        os.chmod(path2, 0o600)  # the mount must not go on showing 0444 (F1)
        errno_of(served2.read_bytes)  # root may open anything: the open itself notices
        wait_for(lambda: os.stat(served2).st_mode & 0o777 == 0o400, DEADLINE, "the mirrored mode")
        assert served2.read_bytes() == path2.read_bytes()
        assert "changed owner or mode since it was indexed" in serve.log()
        assert serve.terminate() == 0


# -- B2: a sender that writes in place -------------------------------------------------------------


@pytest.mark.fuse
def test_in_place_rewrite_is_verified_again(base: Path) -> None:
    files = write_ct_copies(base / "src", 2)
    (old_uid, target), (new_uid, donor) = list(files.items())
    with serving([base / "src"], base / "mnt", base / "index.sqlite") as serve:
        serve.wait_idle_indexed(2)
        os.unlink(donor)
        serve.wait_idle_indexed(1)
        new = ct_bytes_like(donor, new_uid)
        with open(target, "r+b") as handle:  # same inode, like storescp overwriting
            handle.truncate(0)
            handle.write(new)
        wait_for(lambda: by_sop(serve.mnt) == {f"{new_uid}.dcm"}, DEADLINE, "the rewrite")
        assert (serve.mnt / "by-sop" / f"{new_uid}.dcm").read_bytes() == new
        old = serve.mnt / "by-sop" / f"{old_uid}.dcm"
        wait_for(lambda: not old.exists(), 5, "the old name to expire (1 s entry cache)")
        assert serve.terminate() == 0


# -- B3: a study arriving over several associations (no FUSE: the same View) --------------------


def test_a_package_is_eventually_complete_and_missing_is_never_faked(tmp_path: Path) -> None:
    staging = build_corpus(tmp_path / "staging")
    src = tmp_path / "src"
    src.mkdir()
    index = tmp_path / "index.sqlite"
    writer = IndexWriter(index)
    settings = Settings(sources=(src,), index=index, settle_seconds=0.05, workers=1)
    live = LiveIndex(settings, writer, tick=0.05)
    live.start()
    view = View(lambda: IndexReader(index), dir_uid=0, dir_gid=0, mount_time_ns=0, cache_ttl=0)
    c = staging
    try:
        assert live.wait_watching(DEADLINE)

        def arrive(*uids: str) -> None:
            for uid in uids:
                shutil.copy(c.files[uid], src / f"{uid}.dcm")
            reader = view.reader
            wait_for(lambda: all(reader.instance(u) for u in uids), DEADLINE, "arrival")

        def missing() -> set[str]:
            return {m.uid for m in graph.package(view.reader, c.plan).missing}

        def references() -> set[str]:
            return {n.split("_", 1)[1][:-4] for n, _ in view.listdir(f"plans/{c.plan}/references")}

        arrive(c.plan)  # association 1: the plan alone
        assert {c.rs1, c.missing_dose} <= missing()
        assert references() == {c.plan}
        arrive(c.rs1)  # association 2: its structure set
        assert c.rs1 not in missing() and set(c.ct) <= missing()
        assert references() == {c.plan, c.rs1}
        arrive(*c.ct, c.secret, c.dose)  # association 3: the images and a dose
        assert missing() == {c.missing_dose}  # what is missing stays listed, never faked
        assert references() == c.package
        txt = view.lookup(f"plans/{c.plan}/missing.txt")
        assert c.missing_dose.encode() in txt.data()  # type: ignore[union-attr]
    finally:
        view.close()
        live.stop()
        writer.close()


# -- A10: a stalled writer never blocks the event thread -----------------------------------------


def test_events_are_queued_while_the_writer_is_stalled(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    index = tmp_path / "index.sqlite"
    writer = IndexWriter(index)
    settings = Settings(sources=(src,), index=index, settle_seconds=0.05, workers=1)
    live = LiveIndex(settings, writer, tick=0.05)
    live.start()
    try:
        assert live.wait_watching(DEADLINE) and live.ingest.wait_idle(DEADLINE)
        blocker = sqlite3.connect(index, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the ingest worker's next write waits on this
        try:
            write_ct_copies(src, 1)
            wait_for(
                lambda: live.ingest.counters.parsed >= 1 and live.ingest._queue.busy,
                DEADLINE,
                "the worker parsed the file and waits to write it",
            )
            events = live.ingest.counters.events
            files = write_ct_copies(src, 50, start=1)
            wait_for(
                lambda: live.ingest.counters.events >= events + len(files),
                DEADLINE,
                "events queued while the worker waits",
            )
            assert live.watcher is not None and live.watcher.alive()
            assert live.ingest._queue.busy and live.ingest.counters.batches == 0  # still stuck
            reader = IndexReader(index)
            assert reader.status().instances == 0
            reader.close()
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        reader = IndexReader(index)
        wait_for(lambda: reader.status().instances == 51, DEADLINE, "everything indexed")
        reader.close()
    finally:
        live.stop()
        writer.close()


# -- A4: a real inotify queue overflow -------------------------------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def check_file(self, path: str) -> None:
        pass

    def check_created(self, path: str) -> None:
        pass

    def check_dir(self, path: str) -> None:
        pass

    def check_moved_in(self, path: str) -> None:
        pass

    def request_reconcile(self, reason: str) -> None:
        self.reasons.append(reason)


MAX_QUEUED = Path("/proc/sys/fs/inotify/max_queued_events")


@contextlib.contextmanager
def small_inotify_queue(events: int) -> Iterator[None]:
    """fs.inotify.max_queued_events is read when an inotify instance is created."""
    old = MAX_QUEUED.read_text()
    MAX_QUEUED.write_text(str(events))
    try:
        yield
    finally:
        MAX_QUEUED.write_text(old)


def test_a_real_queue_overflow_requests_a_reconcile(tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    names = [root / f"f{n}.dcm" for n in range(64)]
    for path in names:
        path.write_bytes(b"x")
    sink = _Recorder()
    watcher = Watcher([str(root)], sink)
    with small_inotify_queue(16):  # only while the watcher's instance is created
        watcher.start()
    try:

        def overflowed() -> bool:
            return any("Inotify queue overflowed" in r for r in sink.reasons)

        deadline = time.monotonic() + DEADLINE
        while not overflowed() and time.monotonic() < deadline:
            for path in names:  # close-after-write events, never two alike in a row
                os.close(os.open(path, os.O_WRONLY))
        wait_for(overflowed, DEADLINE, "the overflow to be reported")
    finally:
        watcher.stop()
