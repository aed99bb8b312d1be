"""``dicomfs serve``: index, watch and mount (and/or serve WebDAV) in one process.

Order matters (design.md "Service"): the watch starts before the initial
reconcile, so a file that arrives during a long first scan is queued, not
lost; the mount comes up at once in the main thread and fills while the
scan runs; READY=1 goes out only when the kernel has answered FUSE_INIT.
A supervisor thread restarts a dead observer and sends WATCHDOG=1 only while
the observer and the writer are alive (reliability.md H3); a thread of its
own keeps a STATUS= line current, since counting a big index takes seconds
(4 s at ten million files, 46 s with a cold cache: a ping that waited for
it would be late, and systemd would restart a healthy daemon).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dicomfs import __version__
from dicomfs.errors import ConfigError, DicomfsError, IndexCorruptError
from dicomfs.index import (
    IndexReader,
    IndexWriter,
    as_target,
    index_errors,
    is_damage,
    roots,
    set_aside,
)
from dicomfs.live import scan
from dicomfs.live.ingest import Ingest, ProgressSink
from dicomfs.live.watch import Watcher
from dicomfs.service.config import Settings
from dicomfs.service.notify import Notifier

if TYPE_CHECKING:
    from dicomfs.share.webdav import Access, WebDavOptions, WebDavServer
    from dicomfs.view.tree import View

log = logging.getLogger(__name__)

STATUS_EVERY = 10.0
STATUS_JOIN = 5.0  # seconds stop waits for a count in progress


class LiveIndex:
    """The writer thread, the watcher and their supervisor: everything but the mount.

    Tests drive it without FUSE; ``serve`` runs it beside ``run_mount``.
    """

    def __init__(
        self,
        settings: Settings,
        writer: IndexWriter,
        *,
        notifier: Notifier | None = None,
        progress: ProgressSink | None = None,
        tick: float = 1.0,
    ) -> None:
        self.settings = settings
        self.roots = scan.normalize_roots(settings.sources)
        self.notifier = notifier if notifier is not None else Notifier({})
        self.ingest = Ingest(
            writer,
            self.roots,
            settle=settings.settle_seconds,
            batch_size=settings.batch_size,
            batch_window=settings.batch_window,
            queue_limit=settings.queue_limit,
            workers=settings.workers,
            reconcile_interval=settings.reconcile_interval,
        )
        self.watcher = (
            Watcher(self.roots, self.ingest, reconcile_interval=settings.reconcile_interval)
            if settings.watch == "inotify"
            else None
        )
        interval = self.notifier.watchdog_interval
        self.tick = min(tick, interval / 2) if interval else tick
        self._progress = progress
        self._stop = threading.Event()
        self._watching = threading.Event()
        self._supervisor = threading.Thread(
            target=self._supervise, name="dicomfs-supervisor", daemon=True
        )
        self._bring_up_thread = threading.Thread(target=self._bring_up, name="dicomfs-watch-start")
        self._status_thread = threading.Thread(
            target=self._report_status, name="dicomfs-status", daemon=True
        )
        self._reader: IndexReader | None = None

    def start(self) -> None:
        self.ingest.start()
        self._supervisor.start()
        if self.notifier.enabled:
            self._status_thread.start()

    def wait_watching(self, timeout: float) -> bool:
        """True once the observer runs (or there is none) and the initial reconcile is queued."""
        return self._watching.wait(timeout)

    def healthy(self) -> bool:
        watching = self.watcher is None or self.watcher.alive()
        return self.ingest.alive() and self._supervisor.is_alive() and watching

    def stop(self) -> None:
        self._stop.set()
        if self._supervisor.is_alive():
            self._supervisor.join()
        if self._bring_up_thread.is_alive():
            self._bring_up_thread.join()  # a watcher still starting is stopped below
        if self.watcher is not None:
            self.watcher.stop()
        self.ingest.stop()
        if self._status_thread.is_alive():
            self._status_thread.join(STATUS_JOIN)
        if self._reader is not None and not self._status_thread.is_alive():
            self._reader.close()  # else still counting: the process exit closes it

    # -- supervisor ------------------------------------------------------------------

    def _bring_up(self) -> None:
        # Watch first, then scan: events during the scan queue up behind it.
        try:
            if self.watcher is not None:
                self.watcher.start()
            self.ingest.request_reconcile("start", progress=self._progress)
            self._watching.set()
        except Exception:
            log.critical("could not start watching the sources", exc_info=True)

    def _supervise(self) -> None:
        try:
            bring_up = self._bring_up_thread
            bring_up.start()
            next_ping = 0.0
            while not self._stop.wait(self.tick):
                now = time.monotonic()
                healthy = self.ingest.alive()
                # While watches are added to a big tree the daemon counts as
                # alive; afterwards the observer must run.
                if not bring_up.is_alive():
                    if self.watcher is not None and self._watching.is_set():
                        healthy = self.watcher.check() and healthy
                    elif not self._watching.is_set():
                        healthy = False  # the bring-up thread failed
                interval = self.notifier.watchdog_interval
                if healthy and interval is not None and now >= next_ping:
                    self.notifier.watchdog()
                    next_ping = now + interval
        except Exception:
            # No more WATCHDOG=1 from here: systemd restarts the service.
            log.critical("supervisor thread died", exc_info=True)

    def _report_status(self) -> None:
        """STATUS= every ``STATUS_EVERY`` seconds, however long the counts take."""
        try:
            while True:
                self.notifier.status(self.status_line())
                if self._stop.wait(STATUS_EVERY):
                    return
        except Exception:
            log.exception("the status line thread died; the daemon goes on")

    def status_line(self) -> str:
        counts = self.ingest.status()
        text = f"{counts['queued']} queued, {counts['indexed']} indexed since start"
        if self._reader is not None and not self._reader.is_current():
            self._reader.close()  # the index was rebuilt (reliability.md E6)
            self._reader = None
        try:
            if self._reader is None:
                self._reader = IndexReader(self.settings.index)
            status = self._reader.status()
            text = f"{status.instances} instances, {status.rejected_files} rejected; " + text
            if self._reader.rebuilding_since() is not None:
                text = "rebuilding the index (the mount answers EAGAIN); " + text
        except index_errors(DicomfsError) as exc:
            log.debug("no index counts for the status line: %s", exc)
        if counts["alarms"]:
            text += f"; ALARM: {counts['alarms'][-1]}"
        return text


def _create_mountpoint(mountpoint: Path) -> None:
    """The quick start promises a missing mountpoint is created (README)."""
    try:
        if not os.path.lexists(mountpoint):
            mountpoint.mkdir(parents=True)
            log.info("created mountpoint %s", mountpoint)
    except OSError as exc:
        # A stale FUSE mount answers ENOTCONN/EEXIST here; run_mount clears it
        # and reports anything else with a clear message.
        log.debug("cannot create %s: %s", mountpoint, exc)


def _open_index(path: Path | str) -> IndexWriter:
    """The writer; an index SQLite calls damaged is moved aside and rebuilt (E6)."""
    try:
        return IndexWriter(path)
    except IndexCorruptError as exc:
        if not is_damage(exc) or not isinstance(path, Path):
            raise  # another schema version or not a dicomfs index: the user decides
        log.error(
            "the index %s is damaged (%s): kept it as %s; rebuilding it from the source folders",
            path,
            exc.__cause__,
            set_aside(path),
        )
        return IndexWriter(path)


def _receiver_store(settings: Settings) -> Path | None:
    """Where received objects go: inside a watched source, so they get indexed."""
    if settings.scp_port is None:
        return None
    from dicomfs.net.receive import check_store_in_sources

    store = settings.scp_store or Path(settings.sources[0]) / "received"
    store.mkdir(parents=True, exist_ok=True)
    return check_store_in_sources(store, settings.sources)


def _webdav_options(settings: Settings) -> WebDavOptions | None:
    """The WebDAV share's settings (``webdav_*`` keys); None without ``webdav_port``."""
    if settings.webdav_port is None:
        return None
    from dicomfs.share.webdav import WebDavOptions

    return WebDavOptions(
        port=settings.webdav_port,
        bind=settings.webdav_bind,
        run_as=settings.webdav_run_as,
        users_file=settings.webdav_users,
        tls_cert=settings.webdav_tls_cert,
        tls_key=settings.webdav_tls_key,
    )


def _start_webdav(
    settings: Settings, options: WebDavOptions, access: Access, live: LiveIndex
) -> tuple[WebDavServer, View]:
    """The share over its own view of the index, beside the mount or instead of it."""
    from dicomfs.share.webdav import WebDavServer
    from dicomfs.view.paths import default_names
    from dicomfs.view.tree import View

    index = as_target(settings.index)
    view = View(
        lambda: IndexReader(index),
        dir_uid=os.geteuid(),
        dir_gid=os.getegid(),
        mount_time_ns=time.time_ns(),
        extra_status=lambda: {"ingest": live.ingest.status()},
        on_source_changed=live.ingest.recheck,
        # Over the network: patient data in names only when the administrator asks.
        names=settings.names or default_names(shared=True),
        part10=settings.part10,
    )
    try:
        return WebDavServer(view, options, access).start(), view
    except BaseException:
        view.close()
        raise


def serve(settings: Settings, *, notifier: Notifier | None = None) -> int:
    """Run until SIGTERM/SIGINT or an unmount; 0 after a clean stop.

    With ``webdav_port`` the view is also served over WebDAV; with it and no
    mountpoint, only over WebDAV (hosts without FUSE).
    """
    from dicomfs.fuse.mount import run_mount
    from dicomfs.live.progress import Progress

    # A crash in C (libfuse, SQLite, ctypes) then leaves every thread's Python
    # stack in the log (the journal under systemd) instead of a bare signal.
    faulthandler.enable()
    if not settings.sources:
        raise ConfigError(
            "no source folder: give SOURCE arguments, DICOMFS_SOURCES or `sources` in the config"
        )
    if settings.mountpoint is None and settings.webdav_port is None:
        raise ConfigError(
            "no mountpoint: give --mount, DICOMFS_MOUNTPOINT or `mountpoint` in the config "
            "(or --webdav-port to serve over WebDAV only)"
        )
    log.info("dicomfs %s serve: %s", __version__, settings.log_summary())
    # Before any index is opened: paths under a root are stored by its name.
    roots.configure(dict(settings.roots), settings.host).check_sources(settings.sources)
    notifier = notifier if notifier is not None else Notifier()
    webdav_options = _webdav_options(settings)
    access = None
    if webdav_options is not None:
        from dicomfs.share.webdav import plan_access

        access = plan_access(webdav_options)  # refuse a bad share before any work starts
    mountpoint = Path(settings.mountpoint) if settings.mountpoint is not None else None
    if mountpoint is not None:
        _create_mountpoint(mountpoint)
    receiver_store = _receiver_store(settings)
    writer = _open_index(settings.index)
    live: LiveIndex | None = None
    receiver = None
    webdav: tuple[WebDavServer, View] | None = None
    try:
        live = LiveIndex(settings, writer, notifier=notifier, progress=Progress("initial scan"))
        live.start()
        if receiver_store is not None and settings.scp_port is not None:
            from dicomfs.net.receive import start_receiver

            # Files only: the watcher sees each rename into the store and indexes it.
            receiver = start_receiver(
                receiver_store,
                port=settings.scp_port,
                ae_title=settings.ae_title,
                bind=settings.scp_bind,
                allowed_callers=settings.scp_allow,
            )
            log.info(
                "receiving C-STORE as %s on %s:%d into %s",
                settings.ae_title,
                settings.scp_bind,
                receiver.port,
                receiver_store,
            )

        if webdav_options is not None and access is not None:
            webdav = _start_webdav(settings, webdav_options, access, live)
        if mountpoint is None:
            assert webdav is not None
            from dicomfs.share.webdav import wait_for_stop

            server = webdav[0]
            notifier.ready(f"serving WebDAV at {server.url}; initial scan running")
            wait_for_stop(lambda: not server.alive())
            return 0 if server.error is None else 1

        def on_ready() -> None:
            notifier.ready(f"mounted at {mountpoint}; initial scan running")

        return run_mount(
            mountpoint,
            settings.index,
            allow_other=settings.allow_other,
            group=settings.group,
            on_ready=on_ready,
            symlinks=settings.symlinks,
            names=settings.names,
            part10=settings.part10,
            sources=settings.sources,  # statfs: the sources' space (SMB drive size)
            # status.json shows the queue and alarms; a source that no longer
            # matches the index (seen by the mount at open) is looked at again.
            extra_status=lambda: {"ingest": live.ingest.status()} if live else {},
            on_source_changed=live.ingest.recheck,
        )
    finally:
        notifier.stopping("stopping: finishing the current batch")
        if webdav is not None:
            webdav[0].stop()
            webdav[1].close()
        if receiver is not None:
            receiver.stop()
        if live is not None:
            live.stop()
        writer.close()
        log.info("stopped")
