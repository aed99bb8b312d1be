"""Mount lifecycle: checks before mounting, stale mounts, clean stop on signals.

The FUSE loop runs in a thread of its own; the thread that called
``run_mount`` waits for it, handles SIGTERM/SIGINT/SIGHUP (when it is the
main thread) and ``stop_event``, and unmounts. So ``serve`` can call
``run_mount`` from its main thread while indexing runs in other threads, and
a signal never lands in a libfuse handler that would end the loop with an
error status.

Never ``auto_unmount``: after a crash the mountpoint must say "Transport
endpoint is not connected", not show an empty folder a reader could take
for deleted data (reliability.md G4). Start-up clears such a stale mount.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import grp
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from dicomfs.errors import MountError
from dicomfs.fuse.caller import can_switch
from dicomfs.index import IndexReader, as_target, default_index_path
from dicomfs.view.paths import NAMES, default_names
from dicomfs.view.tree import View

log = logging.getLogger(__name__)

FUSERMOUNT = "fusermount3"
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_POLL = 0.1
_EXIT_GRACE = 5.0


def is_stale_mount(path: Path | str) -> bool:
    """True when ``path`` is a FUSE mount whose daemon died (ENOTCONN).

    ``stat`` of the mountpoint alone can still be answered from the kernel's
    attribute cache for a moment after the daemon died, so a name that no
    cache can hold is looked up too.
    """
    probe = os.path.join(path, f".dicomfs-probe-{uuid.uuid4().hex}")
    for target in (path, probe):
        try:
            os.stat(target)
        except OSError as exc:
            if exc.errno in (errno.ENOTCONN, errno.ECONNABORTED):
                return True
    return False


def _fusermount() -> str:
    found = shutil.which(FUSERMOUNT)
    if found is None:
        raise MountError(
            f"{FUSERMOUNT} not found: install the Debian package fuse3 (apt-get install fuse3)"
        )
    return found


def unmount(mountpoint: Path | str, *, lazy: bool = False) -> None:
    """``fusermount3 -u [-z] -- MOUNTPOINT``; MountError with its message on failure."""
    args = [_fusermount(), "-u", *(["-z"] if lazy else []), "--", os.fspath(mountpoint)]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        detail = done.stderr.strip() or f"exit status {done.returncode}"
        raise MountError(f"cannot unmount {mountpoint}: {detail}")


def _check_mountpoint(mountpoint: Path) -> None:
    if not Path("/dev/fuse").exists():
        raise MountError("/dev/fuse is missing: install the Debian package fuse3 and load `fuse`")
    _fusermount()
    if is_stale_mount(mountpoint):
        log.warning("%s is a stale FUSE mount (a previous daemon died): clearing it", mountpoint)
        unmount(mountpoint, lazy=True)
    if not mountpoint.exists():
        raise MountError(
            f"mountpoint {mountpoint} does not exist: create it with mkdir -p {mountpoint}"
        )
    if not mountpoint.is_dir():
        raise MountError(f"mountpoint {mountpoint} is not a directory")
    if os.path.ismount(mountpoint):
        raise MountError(
            f"mountpoint {mountpoint} is busy: something is already mounted there "
            f"(unmount it with {FUSERMOUNT} -u {mountpoint})"
        )


def _group_id(group: str | None) -> int:
    if group is None:
        return os.getegid()
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise MountError(f"unknown group {group!r}: create it (groupadd) or name another") from None


class _Runner:
    """One mount: the FUSE thread, and the stop logic shared by signals and stop_event."""

    def __init__(
        self,
        mountpoint: Path,
        view: View,
        allow_other: bool,
        symlinks: bool,
        space_paths: tuple[str, ...],
        fuse_debug: bool = False,
    ) -> None:
        from dicomfs.fuse import binding, fs  # imported here: they load libfuse

        self.mountpoint = mountpoint
        self.ready = threading.Event()
        self.finished = threading.Event()
        self.wake = threading.Event()
        self.stop_requested = threading.Event()
        self.error: BaseException | None = None
        self.operations = fs.DicomFS(
            view,
            on_init=self._initialized,
            symlinks=symlinks,
            as_caller=allow_other,
            space_paths=space_paths,
        )
        self._serve: Callable[[], None] = functools.partial(
            binding.serve, self.operations, mountpoint, allow_other=allow_other, debug=fuse_debug
        )
        self.thread = threading.Thread(target=self._run, name="dicomfs-fuse", daemon=True)

    def _initialized(self) -> None:
        self.ready.set()
        self.wake.set()

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished.set()
            self.wake.set()

    def stop(self) -> bool:
        """Unmount: cleanly if nothing is busy, else end the loop (libfuse detaches).

        False when nothing could be done yet (not mounted so far): try again.
        """
        if self.finished.is_set():
            return True
        self.operations.stop_invalidating()  # before libfuse frees what it uses
        try:
            unmount(self.mountpoint)
            return True
        except MountError as exc:
            log.warning("%s; ending the FUSE loop instead (lazy detach)", exc)
        if self.operations.exit_loop():
            # The loop checks its exit flag after the next request: send one
            # that no cache can answer.
            threading.Thread(target=self._wake, daemon=True).start()
            if self.finished.wait(_EXIT_GRACE):
                return True
        try:
            unmount(self.mountpoint, lazy=True)
        except MountError as exc:
            log.error("%s", exc)
            return False
        return True

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.stat(self.mountpoint / f".dicomfs-stop-{uuid.uuid4().hex}")


def run_mount(
    mountpoint: Path,
    index_path: Path | str,
    *,
    allow_other: bool = False,
    group: str | None = None,
    foreground: bool = True,
    on_ready: Callable[[], None] | None = None,
    stop_event: threading.Event | None = None,
    extra_status: Callable[[], Mapping[str, Any]] | None = None,
    on_source_changed: Callable[[str], None] | None = None,
    symlinks: bool = False,
    sources: Sequence[Path | str] = (),
    names: str | None = None,
    part10: bool = False,
    fuse_debug: bool = False,
) -> int:
    """Mount ``index_path`` read-only at ``mountpoint``; return 0 after a clean stop.

    Stops on SIGTERM/SIGINT/SIGHUP (when called from the main thread), when
    ``stop_event`` is set, or when someone unmounts the mountpoint.
    ``on_ready`` runs in the caller's thread once FUSE_INIT was answered
    (serve sends READY=1 from it); it must not block on the mount itself.
    Virtual folders are owned by the effective user and ``group`` (default:
    the effective group), mode 0750; files mirror their sources.
    ``extra_status`` adds keys to .dicomfs/status.json (serve: queue length);
    ``on_source_changed(path)`` hears of a source that no longer matches the
    index (serve: queue a re-index); both are called from FUSE threads.
    ``symlinks`` presents source files as symbolic links to their paths.
    ``sources`` are the source folders: ``statfs`` of the mount reports the
    space of their filesystems (an SMB share shows it as the drive size);
    without them, that of the filesystem holding the index.
    ``names`` is what paths may show (``view.paths.NAMES``); None takes
    ``default_names``: "id" for a private mount, "uid" with ``allow_other``.
    ``part10`` serves files written without a PS3.10 header with one in
    front (``view.tree``); with ``symlinks`` those files stay regular files.
    ``fuse_debug`` has libfuse print every request it gets on stderr (its
    ``-d``): which requests a reader's commands cost, for troubleshooting
    and for the tests that count them.
    """
    mountpoint = Path(os.path.abspath(mountpoint))
    # Readers are opened later, from FUSE threads, after libfuse may have
    # changed the working directory: a relative index path would not resolve.
    index_path = as_target(index_path)
    _check_mountpoint(mountpoint)
    gid = _group_id(group)
    if allow_other and (part10 or not symlinks) and not can_switch():
        # Sources are opened with each reader's credentials (caller.py); a
        # daemon that cannot take them would open with its own rights. With
        # symlinks too when part10 is on: files given a header are not links.
        raise MountError(
            "allow_other needs CAP_SETUID and CAP_SETGID so that sources are opened with "
            "each reader's own rights (ACLs, closed folders): run as root, or grant them "
            "(systemd: AmbientCapabilities=CAP_SETUID CAP_SETGID), or mount without allow_other"
        )
    names = names or default_names(shared=allow_other)
    if allow_other and names != "uid" and not can_switch():
        # patients/ folders are shown only to readers of their files (fs.py).
        raise MountError(
            f"names = {names!r} on a mount other users can open needs CAP_SETUID and "
            "CAP_SETGID, to show each reader only the patients whose files they may read: "
            "run as root or grant them, or keep names = 'uid'"
        )
    IndexReader(index_path).close()  # fail now with the index's own message
    beside = index_path.parent if isinstance(index_path, Path) else Path.home()
    space_paths = tuple(os.path.abspath(s) for s in sources) or (str(beside),)
    if not foreground:
        return _spawn_background(
            mountpoint, index_path, allow_other, group, symlinks, sources, names, part10
        )
    view = View(
        lambda: IndexReader(index_path),
        dir_uid=os.geteuid(),
        dir_gid=gid,
        mount_time_ns=time.time_ns(),
        extra_status=extra_status,
        on_source_changed=on_source_changed,
        names=names,
        part10=part10,
    )
    runner = _Runner(mountpoint, view, allow_other, symlinks, space_paths, fuse_debug)
    log.info(
        "mounting %s at %s (allow_other=%s, gid=%d, names=%s, part10=%s)",
        index_path, mountpoint, allow_other, gid, names, part10,
    )  # fmt: skip
    previous = _install_signal_handlers(runner)
    try:
        runner.thread.start()
        _supervise(runner, on_ready, stop_event)
    except BaseException:
        runner.stop()  # never leave a mount behind on an error of ours
        raise
    finally:
        _restore_signal_handlers(previous)
        view.close()
    if runner.error is not None and not runner.stop_requested.is_set():
        if not runner.ready.is_set():
            raise MountError(
                f"FUSE could not mount {mountpoint} ({runner.error!r}); see the messages above"
            ) from runner.error
        log.warning("FUSE loop ended with %r", runner.error)
    log.info("unmounted %s", mountpoint)
    return 0


READAHEAD_KB = 1024


def _raise_readahead(mountpoint: Path) -> None:
    """Let the kernel read a whole 0.5 MB image in one request, not four.

    FUSE mounts get a 128 KB readahead window; each window is a round trip
    to this daemon. Raising it (root only, through the mount's backing
    device in sysfs) roughly halved the first read of a CT slice here.
    """
    try:
        dev = os.stat(mountpoint).st_dev
        Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb").write_text(
            f"{READAHEAD_KB}\n"
        )
    except OSError as exc:
        log.debug("readahead left at the kernel default: %s", exc)


def _supervise(
    runner: _Runner, on_ready: Callable[[], None] | None, stop_event: threading.Event | None
) -> None:
    announced = stopped = False
    while not runner.finished.is_set():
        # Init and the end of the loop wake us at once; signals and
        # stop_event are polled (a signal handler must not take locks).
        runner.wake.wait(_POLL)
        runner.wake.clear()
        if stop_event is not None and stop_event.is_set():
            runner.stop_requested.set()
        if runner.stop_requested.is_set():
            if not stopped:
                stopped = runner.stop()
        elif runner.ready.is_set() and not announced:
            announced = True
            log.info("mounted %s", runner.mountpoint)
            _raise_readahead(runner.mountpoint)
            if on_ready is not None:
                on_ready()
    runner.thread.join()


def _install_signal_handlers(runner: _Runner) -> dict[int, object]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: unmounting", signal.Signals(signum).name)
        runner.stop_requested.set()

    return {sig: signal.signal(sig, handler) for sig in _STOP_SIGNALS}


def _restore_signal_handlers(previous: dict[int, object]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)  # type: ignore[arg-type]


def _spawn_background(
    mountpoint: Path,
    index_path: Path | str,
    allow_other: bool,
    group: str | None,
    symlinks: bool,
    sources: Sequence[Path | str] = (),
    names: str = "uid",
    part10: bool = False,
) -> int:
    """Start ``python -m dicomfs.fuse.mount`` detached and return once the mount is live."""
    args = [sys.executable, "-m", "dicomfs.fuse.mount", str(mountpoint), "--index", str(index_path)]
    args += ["--allow-other"] if allow_other else []
    args += ["--symlinks"] if symlinks else []
    args += ["--group", group] if group else []
    args += ["--names", names]
    args += ["--part10"] if part10 else []
    for source in sources:
        args += ["--source", os.path.abspath(source)]
    child = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if os.path.ismount(mountpoint):
            return 0
        if child.poll() is not None:
            raise MountError(f"the background mount exited with status {child.returncode}")
        time.sleep(_POLL)
    child.terminate()
    raise MountError(f"{mountpoint} did not appear within 30 s")


def main(argv: list[str] | None = None) -> int:
    """``python -m dicomfs.fuse.mount MOUNTPOINT [--index PATH]``: tests, background mounts."""
    parser = argparse.ArgumentParser(prog="python -m dicomfs.fuse.mount")
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("--index", type=as_target, default=None)
    parser.add_argument("--allow-other", action="store_true")
    parser.add_argument("--symlinks", action="store_true")
    parser.add_argument("--group", default=None)
    parser.add_argument("--names", choices=NAMES, default=None)
    parser.add_argument("--part10", action="store_true", help="a PS3.10 header where none")
    parser.add_argument("--source", action="append", default=[], help="for free-space figures")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--fuse-debug", action="store_true", help="print every FUSE request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return run_mount(
            args.mountpoint,
            args.index or default_index_path(),
            allow_other=args.allow_other,
            group=args.group,
            symlinks=args.symlinks,
            sources=args.source,
            names=args.names,
            part10=args.part10,
            fuse_debug=args.fuse_debug,
        )
    except MountError as exc:
        print(f"dicomfs: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
