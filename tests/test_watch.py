"""The watcher: kernel mask, filtering, lost-event detection and supervision (real inotify)."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuse_helpers import wait_for
from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)
from watchdog.observers.api import EventQueue, ObservedWatch
from watchdog.observers.inotify import InotifyEmitter
from watchdog.observers.inotify_c import InotifyConstants

from dicomfs.live import watch
from dicomfs.live.watch import EVENT_FILTER, Watcher


class Recorder:
    """A Sink that remembers every call; thread-safe enough for list.append."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def check_file(self, path: str) -> None:
        self.calls.append(("file", path))

    def check_created(self, path: str) -> None:
        self.calls.append(("created", path))

    def check_dir(self, path: str) -> None:
        self.calls.append(("dir", path))

    def check_moved_in(self, path: str) -> None:
        self.calls.append(("file", path))
        self.calls.append(("moved", path))

    def request_reconcile(self, reason: str) -> None:
        self.calls.append(("reconcile", reason))

    def paths(self, kind: str) -> set[str]:
        return {p for k, p in list(self.calls) if k == kind}


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "src"
    path.mkdir()
    return Path(os.path.realpath(path))


@pytest.fixture
def watching(root: Path) -> Iterator[tuple[Watcher, Recorder]]:
    sink = Recorder()
    watcher = Watcher([str(root)], sink)
    watcher.start()
    try:
        yield watcher, sink
    finally:
        watcher.stop()


def test_kernel_mask_excludes_reads() -> None:
    """watchdog derives the inotify mask from the filter: no open/access/close-nowrite."""
    watch_spec = ObservedWatch("/tmp", recursive=True, event_filter=EVENT_FILTER)
    emitter = InotifyEmitter(
        EventQueue(),
        watch_spec,
        event_filter=EVENT_FILTER,
        inotify_fd=object(),  # type: ignore[arg-type]  # never used before start()
    )
    mask = emitter.get_event_mask_from_filter()
    for read_bit in ("IN_OPEN", "IN_ACCESS", "IN_CLOSE_NOWRITE", "IN_MODIFY", "IN_ATTRIB"):
        assert not mask & getattr(InotifyConstants, read_bit), read_bit
    for bit in ("IN_CLOSE_WRITE", "IN_MOVED_FROM", "IN_MOVED_TO", "IN_DELETE", "IN_CREATE"):
        assert mask & getattr(InotifyConstants, bit), bit
    assert FileOpenedEvent not in EVENT_FILTER and FileClosedNoWriteEvent not in EVENT_FILTER


def test_handler_filters_names_and_routes_moves(root: Path) -> None:
    sink = Recorder()
    handler = watch._Handler([str(root)], sink)
    r = str(root)
    handler.dispatch(FileClosedEvent(f"{r}/a.dcm"))
    handler.dispatch(FileClosedEvent(f"{r}/b.dcm.part"))
    handler.dispatch(FileClosedEvent(f"{r}/.hidden.dcm"))
    handler.dispatch(FileClosedEvent(f"{r}/.staging/c.dcm"))
    handler.dispatch(FileClosedEvent("/elsewhere/d.dcm"))
    handler.dispatch(FileMovedEvent(f"{r}/.e.tmp", f"{r}/e.dcm"))  # atomic publish
    handler.dispatch(FileMovedEvent("", f"{r}/f.dcm"))  # moved in from outside
    handler.dispatch(FileMovedEvent(f"{r}/g.dcm", ""))  # moved out
    handler.dispatch(DirMovedEvent("", f"{r}/study"))
    handler.dispatch(DirCreatedEvent(f"{r}/new"))
    handler.dispatch(FileCreatedEvent(f"{r}/h.dcm"))
    handler.dispatch(FileMovedEvent(f"{r}/x", f"{r}/y", is_synthetic=True))
    assert sink.calls == [
        ("file", f"{r}/a.dcm"),
        ("file", f"{r}/e.dcm"),
        ("moved", f"{r}/e.dcm"),  # renamed in: looked at without the settle wait
        ("file", f"{r}/f.dcm"),
        ("moved", f"{r}/f.dcm"),
        ("file", f"{r}/g.dcm"),
        ("dir", f"{r}/study"),
        ("dir", f"{r}/new"),
        ("created", f"{r}/h.dcm"),
    ]
    assert handler.events_seen == 12


def test_handler_never_raises_into_watchdog(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Recorder):
        def check_file(self, path: str) -> None:
            raise RuntimeError("boom")

    handler = watch._Handler([str(root)], Broken())
    handler.dispatch(FileClosedEvent(f"{root}/a.dcm"))  # must not raise
    assert "could not queue filesystem event" in caplog.text


@pytest.mark.watch
def test_real_events_reach_the_sink(root: Path, watching: tuple[Watcher, Recorder]) -> None:
    _, sink = watching
    (root / "a.dcm").write_bytes(b"x")
    os.makedirs(root / "n" / "m")
    staged = root.parent / "outside"
    (staged / "deep").mkdir(parents=True)
    (staged / "deep" / "f.dcm").write_bytes(b"y")
    os.rename(staged, root / "moved")
    (root / "a.dcm").rename(root / "b.dcm")
    os.unlink(root / "b.dcm")
    wait_for(lambda: f"{root}/b.dcm" in sink.paths("file"), 5, "events")
    wait_for(lambda: f"{root}/moved" in sink.paths("dir"), 5, "moved-in folder")
    assert f"{root}/a.dcm" in sink.paths("file")
    assert {f"{root}/n", f"{root}/n/m"} <= sink.paths("dir") | {f"{root}/n/m"}
    assert f"{root}/n" in sink.paths("dir")


@pytest.mark.watch
def test_reads_produce_no_events(root: Path, watching: tuple[Watcher, Recorder]) -> None:
    watcher, sink = watching
    for i in range(20):
        (root / f"{i}.dcm").write_bytes(os.urandom(64))
    wait_for(lambda: len(sink.paths("file")) == 20, 5, "20 close events")
    seen = watcher.events_seen
    for _ in range(50):
        for i in range(20):
            with open(root / f"{i}.dcm", "rb") as handle:
                handle.read()
    # A sentinel written after the reads arrives after anything they could cause.
    (root / "sentinel.dcm").write_bytes(b"s")
    wait_for(lambda: f"{root}/sentinel.dcm" in sink.paths("file"), 5, "sentinel")
    created_and_closed = 2
    assert watcher.events_seen - seen == created_and_closed


@pytest.mark.watch
def test_lost_events_log_record_requests_reconcile(watching: tuple[Watcher, Recorder]) -> None:
    watcher, sink = watching
    logging.getLogger("watchdog.observers.inotify_c").warning(
        "Inotify queue overflowed; filesystem events were lost"
    )
    assert watcher.lost_event_reports == 1
    assert [r for k, r in sink.calls if k == "reconcile"] == [
        "watchdog reported lost events: Inotify queue overflowed; filesystem events were lost"
    ]


@pytest.mark.watch
def test_dead_observer_is_restarted(root: Path, watching: tuple[Watcher, Recorder]) -> None:
    watcher, sink = watching
    assert watcher.check() and watcher.alive()
    watcher._observer.stop()  # type: ignore[union-attr]
    watcher._observer.join(5)  # type: ignore[union-attr]
    assert not watcher.alive()
    assert watcher.check() is False
    assert watcher.alive() and watcher.restarts == 1
    assert ("reconcile", "the inotify observer is not running") in sink.calls
    (root / "after.dcm").write_bytes(b"x")
    wait_for(lambda: f"{root}/after.dcm" in sink.paths("file"), 5, "events after the restart")


@pytest.mark.watch
def test_swapped_root_is_noticed(root: Path, watching: tuple[Watcher, Recorder]) -> None:
    watcher, sink = watching
    os.rename(root, root.parent / "old")
    assert watcher.check() is False  # root vanished
    assert any("was replaced, mounted over or removed" in r for k, r in sink.calls)
    root.mkdir()
    assert watcher.check() is False  # a new, empty folder at the root path
    assert watcher.check() is True
    (root / "new.dcm").write_bytes(b"x")
    wait_for(lambda: f"{root}/new.dcm" in sink.paths("file"), 5, "events in the new root")


def test_watch_limit_is_reported(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(5):
        (root / f"d{i}").mkdir()
    monkeypatch.setattr(watch, "max_user_watches", lambda: 4)
    assert watch.check_watch_limit([str(root)], 600) is False
    assert (
        "inotify watch limit" in caplog.text and "sysctl fs.inotify.max_user_watches" in caplog.text
    )
    monkeypatch.setattr(watch, "max_user_watches", lambda: 100)
    assert watch.check_watch_limit([str(root)], 600) is True


def test_count_dirs_skips_ignored_and_symlinks(root: Path) -> None:
    (root / "a" / "b").mkdir(parents=True)
    (root / ".cache" / "x").mkdir(parents=True)
    os.symlink(root / "a", root / "link")
    assert watch.count_dirs([str(root)], stop_after=1000) == 3
    shutil.rmtree(root / "a")
