"""Ingest end to end without FUSE: real inotify on temporary folders, real parser, real index.

Every wait is a poll against a deadline; a test that must show that nothing
happened writes a sentinel file afterwards and waits for it, since the
worker handles paths in due order.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fuse_helpers import wait_for
from pydicom import dcmread

from dicomfs.demo import write_ct_series
from dicomfs.index import IndexReader, IndexWriter
from dicomfs.live import rounds, scan, sources
from dicomfs.live.ingest import Ingest
from dicomfs.live.pending import FILE, Counters, PendingQueue, settled
from dicomfs.service.config import Settings
from dicomfs.service.serve import LiveIndex

SETTLE = 0.1
DEADLINE = 15.0


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.name.startswith("dicomfs")]
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture(scope="module")
def ct_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Small real CT files with distinct SOP Instance UIDs, outside any watched root."""
    return write_ct_series(tmp_path_factory.mktemp("ct"), 60, rows=64)


def sop_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@dataclass
class Live:
    root: Path
    index: Path
    live: LiveIndex
    reader: IndexReader

    @property
    def ingest(self) -> Ingest:
        return self.live.ingest

    def state(self, path: Path) -> str | None:
        return self.reader.file_state(os.fsdecode(path))

    def wait_state(self, path: Path, state: str | None, timeout: float = DEADLINE) -> None:
        wait_for(lambda: self.state(path) == state, timeout, f"{path.name} to be {state}")

    def instances(self) -> int:
        return self.reader.status().instances


def start_live(tmp_path: Path, **overrides: object) -> Live:
    root = tmp_path / "src"
    root.mkdir(exist_ok=True)
    root = Path(os.path.realpath(root))
    index = tmp_path / "index.sqlite"
    options: dict[str, object] = {"settle_seconds": SETTLE, "workers": 2}
    options.update(overrides)
    settings = Settings(sources=(root,), index=index, **options)  # type: ignore[arg-type]
    writer = IndexWriter(index)
    live = LiveIndex(settings, writer, tick=0.05)
    live.start()
    assert live.wait_watching(DEADLINE)
    assert live.ingest.wait_idle(DEADLINE)
    return Live(root, index, live, IndexReader(index))


def stop_live(live: Live) -> None:
    live.live.stop()
    live.reader.close()
    live.live.ingest._writer.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    running = start_live(tmp_path)
    yield running
    stop_live(running)


pytestmark = pytest.mark.watch


def test_copied_file_is_indexed(live: Live, ct_files: list[Path]) -> None:
    target = live.root / "a.dcm"
    shutil.copy(ct_files[0], target)
    live.wait_state(target, "indexed")
    found = live.reader.instance(sop_uid(ct_files[0]))
    assert found is not None and found.file.path == str(target)


@pytest.mark.parametrize("reopen", [False, True], ids=["one-handle", "append-per-chunk"])
def test_slow_writer_is_indexed_only_when_complete(
    live: Live, ct_files: list[Path], reopen: bool
) -> None:
    data = ct_files[1].read_bytes()
    target = live.root / "slow.dcm"
    step = len(data) // 10 + 1
    chunks = [data[i : i + step] for i in range(0, len(data), step)]
    handle = None if reopen else open(target, "wb")  # noqa: SIM115
    try:
        for number, chunk in enumerate(chunks, 1):
            if handle is None:
                with open(target, "ab") as out:  # closes after every chunk: close events
                    out.write(chunk)
            else:
                handle.write(chunk)
                handle.flush()
            if number == len(chunks):
                break  # complete now (the one-handle writer still has to close)
            # The writer pauses longer than the settle time: the worker has every
            # chance to look; the incomplete file must never be an Instance.
            pause_until = time.monotonic() + 2 * SETTLE
            while time.monotonic() < pause_until:
                assert live.state(target) != "indexed"
                assert live.reader.instance(sop_uid(ct_files[1])) is None
                time.sleep(0.01)
    finally:
        if handle is not None:
            handle.close()
    live.wait_state(target, "indexed")
    assert live.reader.instance(sop_uid(ct_files[1])) is not None


def test_copy_into_new_nested_folder(live: Live, ct_files: list[Path]) -> None:
    """`mkdir -p a/b/c && cp x a/b/c/`: the close happens before c is watched (A2)."""
    for i in range(5):
        nested = live.root / f"a{i}" / "b" / "c"
        os.makedirs(nested)
        shutil.copy(ct_files[2 + i], nested / "x.dcm")
    for i in range(5):
        live.wait_state(live.root / f"a{i}" / "b" / "c" / "x.dcm", "indexed")


def test_folder_moved_in_from_outside(live: Live, ct_files: list[Path], tmp_path: Path) -> None:
    staging = tmp_path / "staging" / "study"
    (staging / "series1").mkdir(parents=True)
    (staging / "series2" / "deep").mkdir(parents=True)
    for i, src in enumerate(ct_files[10:16]):
        folder = staging / ("series1" if i < 3 else "series2/deep")
        shutil.copy(src, folder / f"{i}.dcm")
    os.rename(staging, live.root / "study")
    wait_for(lambda: live.instances() == 6, DEADLINE, "6 instances")
    assert live.state(live.root / "study" / "series2" / "deep" / "5.dcm") == "indexed"


def test_rename_over_existing_file_and_move_within(live: Live, ct_files: list[Path]) -> None:
    target = live.root / "x.dcm"
    shutil.copy(ct_files[20], target)
    live.wait_state(target, "indexed")
    old_uid, new_uid = sop_uid(ct_files[20]), sop_uid(ct_files[21])
    staged = live.root / ".x.dcm.tmp"  # ignored name: the atomic-publish idiom
    shutil.copy(ct_files[21], staged)
    os.replace(staged, target)
    wait_for(lambda: live.reader.instance(new_uid) is not None, DEADLINE, "replacement")
    assert live.reader.instance(old_uid) is None
    assert live.state(staged) is None

    moved = live.root / "sub" / "y.dcm"
    moved.parent.mkdir()
    os.rename(target, moved)
    live.wait_state(moved, "indexed")
    live.wait_state(target, None)
    found = live.reader.instance(new_uid)
    assert found is not None and found.file.path == str(moved)


def test_delete_file_and_folder(live: Live, ct_files: list[Path]) -> None:
    (live.root / "d").mkdir()
    for i in range(4):
        shutil.copy(ct_files[25 + i], live.root / "d" / f"{i}.dcm")
    shutil.copy(ct_files[29], live.root / "single.dcm")
    wait_for(lambda: live.instances() == 5, DEADLINE, "5 instances")
    os.unlink(live.root / "single.dcm")
    live.wait_state(live.root / "single.dcm", None)
    shutil.rmtree(live.root / "d")
    wait_for(lambda: live.instances() == 0, DEADLINE, "folder removed from the index")


def test_moved_out_folder_is_removed(live: Live, ct_files: list[Path], tmp_path: Path) -> None:
    (live.root / "out").mkdir()
    for i in range(3):
        shutil.copy(ct_files[30 + i], live.root / "out" / f"{i}.dcm")
    wait_for(lambda: live.instances() == 3, DEADLINE, "3 instances")
    os.rename(live.root / "out", tmp_path / "gone")
    wait_for(lambda: live.instances() == 0, DEADLINE, "moved-out folder removed")


def test_a_folder_too_big_for_a_round_is_left_to_a_reconcile(
    live: Live, ct_files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A million files moved in or out arrive as one folder event (issue 13).

    A round would hold every path of it; past the limit (here 4) what was
    found is written and a reconcile, whose lists go to disk, does the rest.
    """
    monkeypatch.setattr(rounds, "FOLDER_LOOK_LIMIT", 4)
    staging = tmp_path / "staging" / "big"
    staging.mkdir(parents=True)
    for i, src in enumerate(ct_files[40:52]):
        shutil.copy(src, staging / f"{i}.dcm")
    before = live.ingest.counters.reconciles
    os.rename(staging, live.root / "big")
    wait_for(lambda: live.instances() == 12, DEADLINE, "12 instances")
    assert live.ingest.counters.reconciles > before
    os.rename(live.root / "big", tmp_path / "gone")
    wait_for(lambda: live.instances() == 0, DEADLINE, "moved-out folder removed")
    assert live.ingest.counters.reconciles > before + 1


def test_ignored_names_and_special_files(live: Live, ct_files: list[Path]) -> None:
    part = live.root / "incoming.dcm.part"
    shutil.copy(ct_files[33], part)
    os.mkfifo(live.root / "pipe.dcm")  # opening it would block the worker forever
    os.symlink(ct_files[34], live.root / "link.dcm")
    final = live.root / "incoming.dcm"
    os.rename(part, final)
    live.wait_state(final, "indexed")
    # Recorded as rejected from their lstat: the FIFO never opened, the link never followed.
    live.wait_state(live.root / "pipe.dcm", "rejected")
    live.wait_state(live.root / "link.dcm", "rejected")
    assert live.state(part) is None
    # A full reconcile agrees (and does not hang on the FIFO).
    live.ingest.request_reconcile("test")
    assert live.ingest.wait_idle(DEADLINE)
    assert live.state(live.root / "pipe.dcm") == "rejected" and live.instances() == 1
    assert live.state(live.root / "link.dcm") == "rejected"


def test_hard_link_into_the_tree_is_indexed(
    live: Live, ct_files: list[Path], tmp_path: Path
) -> None:
    outside = tmp_path / "linked.dcm"
    shutil.copy(ct_files[35], outside)
    os.link(outside, live.root / "linked.dcm")  # IN_CREATE only, no close event
    live.wait_state(live.root / "linked.dcm", "indexed")


def test_repeated_events_cause_no_churn(live: Live, ct_files: list[Path]) -> None:
    target = live.root / "same.dcm"
    shutil.copy(ct_files[36], target)
    live.wait_state(target, "indexed")
    parsed = live.ingest.counters.parsed
    for _ in range(5):
        with open(target, "r+b"):
            pass  # opened for writing, closed unchanged: IN_CLOSE_WRITE, same content
    sentinel = live.root / "sentinel.dcm"
    shutil.copy(ct_files[37], sentinel)
    live.wait_state(sentinel, "indexed")
    assert live.ingest.counters.parsed == parsed + 1
    assert live.ingest.counters.unchanged >= 1


def test_reading_files_causes_no_reindex_work(live: Live, ct_files: list[Path]) -> None:
    for i in range(50):
        shutil.copy(ct_files[i % 40], live.root / f"{i}.dcm")
    wait_for(lambda: live.reader.status().files == 50, DEADLINE, "50 files")
    assert live.ingest.wait_idle(DEADLINE)
    parsed, looks = live.ingest.counters.parsed, live.ingest.counters.looks
    events = live.live.watcher.events_seen  # type: ignore[union-attr]
    for _ in range(20):  # 1,000 reads, the way a mount reader opens its source
        for i in range(50):
            fd = os.open(live.root / f"{i}.dcm", os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.pread(fd, 1 << 16, 0)
            finally:
                os.close(fd)
    sentinel = live.root / "sentinel.dcm"
    shutil.copy(ct_files[50], sentinel)
    live.wait_state(sentinel, "indexed")
    assert live.ingest.counters.parsed == parsed + 1
    assert live.ingest.counters.looks - looks <= 2  # the sentinel's create and close
    assert live.live.watcher.events_seen - events == 2  # type: ignore[union-attr]


def test_lost_events_trigger_a_reconcile(tmp_path: Path, ct_files: list[Path]) -> None:
    # The supervisor must not restart the stopped observer here: only the
    # overflow report may bring the file in.
    running = start_live(tmp_path)
    try:
        running.live.tick = 3600.0
        watcher = running.live.watcher
        assert watcher is not None
        watcher._observer.stop()  # type: ignore[union-attr]
        watcher._observer.join(5)  # type: ignore[union-attr]
        unseen = running.root / "unseen.dcm"
        shutil.copy(ct_files[40], unseen)
        reconciles = running.ingest.counters.reconciles
        import logging

        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost"
        )
        running.wait_state(unseen, "indexed")
        assert running.ingest.counters.reconciles == reconciles + 1
        assert running.ingest.counters.events == 0  # no event ever named the file
    finally:
        stop_live(running)


def test_dead_observer_is_restarted_and_reconciled(live: Live, ct_files: list[Path]) -> None:
    watcher = live.live.watcher
    assert watcher is not None
    reconciles = live.ingest.counters.reconciles
    watcher._observer.stop()  # type: ignore[union-attr]
    placed = live.root / "while-dead.dcm"
    shutil.copy(ct_files[41], placed)
    wait_for(lambda: watcher.restarts == 1 and watcher.alive(), DEADLINE, "observer restart")
    live.wait_state(placed, "indexed")
    wait_for(lambda: live.ingest.counters.reconciles > reconciles, DEADLINE, "reconcile")
    after = live.root / "after-restart.dcm"
    shutil.copy(ct_files[42], after)
    live.wait_state(after, "indexed")


def test_swapped_root_keeps_index_and_raises_alarm(
    live: Live, ct_files: list[Path], tmp_path: Path
) -> None:
    count = scan.MASS_LOSS_MIN_FILES + 5
    for i in range(count):
        shutil.copy(ct_files[i], live.root / f"{i}.dcm")
    wait_for(lambda: live.instances() == count, DEADLINE, f"{count} instances")
    # What an unmounted volume looks like: the same path, a different, empty folder.
    os.rename(live.root, tmp_path / "detached")
    live.root.mkdir()
    wait_for(lambda: live.ingest.alarms != [], DEADLINE, "mass-loss alarm")
    assert any("are gone at once" in alarm for alarm in live.ingest.alarms)
    assert live.instances() == count
    # Watching continues on the new folder.
    fresh = live.root / "fresh.dcm"
    shutil.copy(ct_files[45], fresh)
    live.wait_state(fresh, "indexed")
    assert live.instances() == count + 1


def test_stopping_abandons_the_walk_of_an_unchanged_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unchanged tree yields nothing to parse, so the stop is checked folder by folder.

    At ten million files that walk takes minutes, longer than systemd waits
    for a stop (TimeoutStopSec=60).
    """
    running = start_live(tmp_path)
    folders = 30
    for i in range(folders):
        (running.root / f"d{i:02}").mkdir()
    # Their events are looked at first: a round's walk of a new folder is not the subject.
    assert running.ingest.wait_idle(DEADLINE)
    listed: list[bytes] = []
    real_listing = sources._listing

    def listing(folder: bytes, unreadable: list[str]) -> list[tuple[bytes, os.stat_result]]:
        listed.append(folder)
        if len(listed) == 5:  # in the middle of the walk: the daemon is told to stop
            wait_for(lambda: running.ingest._queue.stopping, DEADLINE, "the stop")
        return real_listing(folder, unreadable)

    monkeypatch.setattr(sources, "_listing", listing)
    reconciles = running.ingest.counters.reconciles
    running.ingest.request_reconcile("test")
    wait_for(lambda: len(listed) >= 5, DEADLINE, "the walk")
    stop_live(running)
    assert len(listed) == 5  # not the other 26 folders
    assert running.ingest.counters.reconciles == reconciles


def test_poll_mode_finds_files_by_periodic_reconcile(tmp_path: Path, ct_files: list[Path]) -> None:
    running = start_live(tmp_path, watch="poll", reconcile_interval=0.3)
    try:
        assert running.live.watcher is None
        placed = running.root / "polled.dcm"
        shutil.copy(ct_files[43], placed)
        running.wait_state(placed, "indexed")
        assert running.ingest.counters.events == 0
        os.unlink(placed)
        running.wait_state(placed, None)
    finally:
        stop_live(running)


def test_full_queue_drops_into_reconcile(tmp_path: Path) -> None:
    writer = IndexWriter(tmp_path / "i.sqlite")
    ingest = Ingest(writer, [str(tmp_path)], queue_limit=16, settle=60.0)
    try:
        for i in range(20):
            ingest.check_file(f"{tmp_path}/{i}.dcm")
        ingest.check_file(f"{tmp_path}/0.dcm")  # merging a queued path needs no room
        assert ingest.queue_length() == 16
        assert ingest.counters.dropped == 4 and ingest.counters.merged == 1
        request = ingest._queue.reconcile
        assert request is not None and "event queue full" in request.reasons
    finally:
        writer.close()


def test_settle_rule() -> None:
    now = time.time_ns()
    assert settled(10, now - 600_000_000, None, 0.5)  # last change 0.6 s ago
    assert not settled(10, now - 100_000_000, None, 0.5)  # still warm
    future = now + 3_600_000_000_000  # clock skew: an hour ahead
    assert not settled(10, future, None, 0.5)
    assert settled(10, future, (10, future), 0.5)  # unchanged since the last look
    assert not settled(11, future, (10, future), 0.5)


def test_a_path_renamed_in_is_due_at_once_and_a_written_one_after_the_settle_period() -> None:
    """A rename is complete when seen: a burst moved in waits for no settle period (issue 13).

    The look still applies the settle rule to the file's mtime (B1): only the
    wait before the first look goes. A controlled clock, no timing.
    """
    now = [100.0]
    queue = PendingQueue(
        Counters(), settle=0.5, batch_size=10, batch_window=0.05, queue_limit=100,
        clock=lambda: now[0],
    )  # fmt: skip
    queue.put(FILE, "/src/written.dcm")
    queue.put(FILE, "/src/moved.dcm", at_once=True)
    now[0] += 0.06  # past the batch window, before the settle period
    job = queue.next_job()
    assert job == []  # first, the index file check the worker does on its own clock
    queue.finished()
    job = queue.next_job()
    assert isinstance(job, list) and [path for path, _ in job] == ["/src/moved.dcm"]
    queue.finished()
    now[0] += 0.5
    job = queue.next_job()
    assert isinstance(job, list) and [path for path, _ in job] == ["/src/written.dcm"]


def test_parse_workers_are_kept_between_bursts_and_replaced_when_killed(tmp_path: Path) -> None:
    """One pool for the daemon's life: the same processes parse burst after burst (issue 13).

    A worker killed between bursts (the OOM killer, an operator) breaks the
    pool; the next burst starts new workers and is indexed all the same.
    """
    running = start_live(tmp_path)
    pool = running.ingest._pool
    count = scan.POOL_THRESHOLD + 6  # a burst big enough for the workers

    def burst(number: int) -> None:
        staging = tmp_path / "staging" / f"study{number}"
        write_ct_series(staging, count, rows=16, seed=100 + number)
        os.rename(staging, running.root / staging.name)  # one folder event: one round
        wait_for(lambda: running.instances() == number * count, DEADLINE, f"burst {number}")

    try:
        assert pool.worker_pids() == []  # none before the first burst
        burst(1)
        first = pool.worker_pids()
        assert len(first) == 2 and pool.starts == 1
        burst(2)
        assert pool.worker_pids() == first and pool.starts == 1
        os.kill(first[0], signal.SIGKILL)
        burst(3)
        replaced = pool.worker_pids()
        assert pool.starts == 2 and len(replaced) == 2 and not set(replaced) & set(first)
        assert running.ingest.counters.errors == 0  # the burst went on in the new workers
    finally:
        stop_live(running)
    assert pool.worker_pids() == []
    wait_for(
        lambda: not any(os.path.exists(f"/proc/{pid}") for pid in replaced),
        DEADLINE,
        "the workers to end with the daemon",
    )


def index_seconds(folder: Path, index: Path) -> float:
    """How long `dicomfs index` (scan.reconcile) takes for ``folder`` into a fresh index."""
    writer = IndexWriter(index)
    started = time.monotonic()
    scan.reconcile(writer, [folder], workers=2)
    elapsed = time.monotonic() - started
    writer.close()
    return elapsed


@pytest.mark.slow
def test_burst_of_2000_files_keeps_up_with_dicomfs_index(tmp_path: Path) -> None:
    """A study of 2,000 files moved in at once goes through the process pool in big batches.

    The reference is timed just before and just after, and averaged, so a load
    change on a shared machine does not decide the ratio.
    """
    study = tmp_path / "burst" / "study"
    write_ct_series(study, 2000, rows=64, seed=7)
    before = index_seconds(study, tmp_path / "before.sqlite")

    running = start_live(tmp_path)
    try:
        started = time.monotonic()
        os.rename(study, running.root / "study")
        # Counted after each commit; cheaper to poll than SQL counts on a busy CPU.
        wait_for(lambda: running.ingest.counters.indexed == 2000, 60, "2000 files indexed")
        # The settle time is a deliberate wait that `dicomfs index` does not have.
        watch_seconds = time.monotonic() - started - SETTLE
        assert running.instances() == 2000
        assert running.ingest.counters.parsed == 2000
        assert running.ingest.counters.batches <= 5
        after = index_seconds(running.root / "study", tmp_path / "after.sqlite")
    finally:
        stop_live(running)
    ratio = (before + after) / 2 / watch_seconds
    print(f"index {before:.2f}/{after:.2f} s, watch {watch_seconds:.2f} s, ratio {ratio:.2f}")
    # Speed is the benchmark's job (bench/serve_bench.py, BENCHMARKS.md), not a test's.
