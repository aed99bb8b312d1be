"""The C-STORE receiver: a pynetdicom storage SCP that writes into a store folder.

Planning systems and PACS push objects to an AE title; dicomfs accepts
every storage SOP class (RT included) in every transfer syntax pynetdicom
knows, because the dataset bytes are written as received and never
re-encoded (compressed data passes through). Each object is placed by
:class:`~dicomfs.net.store.StoreWriter`, atomically and under a safe name.

Statuses (PS3.4 B.2.3) tell the sender what to do: 0xA700 "out of
resources" when the store is full or read-only (retry later, nothing is
lost), 0xC210 "cannot understand" when the dataset cannot be identified
(do not retry). Storing is a notification-style job: one bad object is
logged and answered, and the server goes on (style.md, pynetdicom).

Run inside ``dicomfs serve`` (the watcher indexes what lands in the store)
or alone as ``dicomfs receive`` (then stored files are indexed here, on one
writer thread, when an index is given).
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from dicomfs.errors import ConfigError
from dicomfs.net.pacs import ReceiverError, check_ae_title
from dicomfs.net.store import DatasetError, Layout, StoredObject, StoreWriter

log = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC210
STATUS_PROCESSING_FAILURE = 0xC211

ACSE_TIMEOUT = 30.0
DIMSE_TIMEOUT = 60.0
NETWORK_TIMEOUT = 60.0
MAX_ASSOCIATIONS = 16
INDEX_BATCH = 200

_OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


def make_store_handler(writer: StoreWriter) -> Callable[[Event], int]:
    """An EVT_C_STORE handler for ``writer``, shared by the receiver and by C-GET in fetch."""

    def handle_store(event: Event) -> int:
        calling = event.assoc.requestor.ae_title
        try:
            stream = event.encoded_dataset(include_meta=False)
            transfer_syntax = str(event.context.transfer_syntax)
            stored = writer.store(stream, transfer_syntax, calling)
        except DatasetError as exc:
            log.warning("refused an object from %s: %s", calling, exc)
            return STATUS_CANNOT_UNDERSTAND
        except OSError as exc:
            if exc.errno in _OUT_OF_SPACE:
                why = "the store is full"
            elif exc.errno in _READ_ONLY:
                why = "the store is read-only or not writable"
            else:
                why = "the store cannot be written"
            log.error("refused an object from %s: %s (%s)", calling, why, exc)
            return STATUS_OUT_OF_RESOURCES
        except Exception:
            log.exception("unexpected failure storing an object from %s", calling)
            return STATUS_PROCESSING_FAILURE
        requested = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")
        if requested.rstrip("\x00 ") != stored.identity.sop_instance_uid:
            log.warning(
                "C-STORE from %s announced another SOP Instance UID than its dataset holds; "
                "the dataset's UID names the file",
                calling,
            )
        return STATUS_SUCCESS

    return handle_store


def check_store_in_sources(store: Path, sources: Sequence[Path]) -> Path:
    """The store's real path, or ConfigError when ``serve`` would not watch it.

    Under ``serve`` nothing but the watcher indexes received files, so a
    store outside every source would fill up with objects nobody sees.
    """
    real = os.path.realpath(store)
    roots = [os.path.realpath(s) for s in sources]
    if not any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
        raise ConfigError(
            f"store folder {store} is not inside any source folder "
            f"({', '.join(map(str, sources)) or 'none'}); received files would not be indexed"
        )
    return Path(real)


def storage_ae(ae_title: str) -> AE:
    """An AE that accepts every storage class in every transfer syntax, and C-ECHO."""
    ae = AE(ae_title)
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    ae.acse_timeout = ACSE_TIMEOUT
    ae.dimse_timeout = DIMSE_TIMEOUT
    ae.network_timeout = NETWORK_TIMEOUT
    ae.maximum_associations = MAX_ASSOCIATIONS
    return ae


class _Indexer:
    """Indexes stored files on its own thread: the index has one writer (reliability.md E1).

    Used by ``dicomfs receive`` alone; under ``serve`` the watcher does this.
    """

    def __init__(self, index: Path | str) -> None:
        self.index = index
        self._queue: queue.Queue[Path | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="dicomfs-receive-index", daemon=True)
        self._thread.start()

    def submit(self, stored: StoredObject) -> None:
        if not stored.duplicate:
            self._queue.put(stored.path)

    def wait(self, timeout: float) -> bool:
        """True once everything submitted so far is indexed (for tests and shutdown)."""
        done = threading.Event()

        def waiter() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=waiter, daemon=True).start()
        return done.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        from dicomfs.dicom.parse import parse_file
        from dicomfs.index import IndexWriter
        from dicomfs.live.scan import file_digest

        try:
            writer = IndexWriter(self.index)
        except Exception as exc:
            log.error("cannot open index %s; received files are not indexed: %s", self.index, exc)
            writer = None
        try:
            while True:
                first = self._queue.get()
                batch = [first]
                while len(batch) < INDEX_BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                paths = [p for p in batch if p is not None]
                try:
                    if writer is not None and paths:
                        results = [r for r in (parse_file(str(p)) for p in paths) if r is not None]
                        writer.apply(results, digest=file_digest)
                except Exception:
                    log.exception("indexing %d received files failed; a reconcile will", len(paths))
                finally:
                    for _ in batch:
                        self._queue.task_done()
                if None in batch:
                    return
        finally:
            if writer is not None:
                writer.close()


class ReceiverHandle:
    """A running receiver; ``stop()`` ends it (open associations are aborted)."""

    def __init__(
        self,
        server: ThreadedAssociationServer,
        ae_title: str,
        store: Path,
        indexer: _Indexer | None,
    ) -> None:
        self._server = server
        self.ae_title = ae_title
        self.store = store
        self._indexer = indexer
        self.bind: str = str(server.server_address[0])
        self.port: int = int(server.server_address[1])

    @property
    def index(self) -> Path | str | None:
        """The index stored files go into here (None: someone else indexes the store)."""
        return None if self._indexer is None else self._indexer.index

    def wait_indexed(self, timeout: float = 30.0) -> bool:
        """True when every object stored so far is in the index (no index: always True)."""
        return self._indexer is None or self._indexer.wait(timeout)

    def stop(self) -> None:
        self._server.shutdown()
        if self._indexer is not None:
            self._indexer.stop()

    def __enter__(self) -> ReceiverHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_receiver(
    store: Path,
    *,
    port: int,
    ae_title: str = "DICOMFS",
    bind: str = "127.0.0.1",
    allowed_callers: Sequence[str] = (),
    layout: Layout = "series",
    index: Path | str | None = None,
    on_stored: Callable[[StoredObject], None] | None = None,
) -> ReceiverHandle:
    """Start listening (non-blocking) and return a handle; ``port=0`` picks a free port.

    ``allowed_callers`` empty accepts any calling AE title; otherwise other
    callers are rejected at association time ("calling AE title not
    recognised"). ``index``: index each stored file on a writer thread
    (leave None under ``serve``, whose watcher indexes the store).
    ``on_stored`` is called on the association thread after each object.
    """
    title = check_ae_title(ae_title)
    callers = [check_ae_title(c, "allowed calling AE title") for c in allowed_callers]
    store = Path(store)
    try:
        store.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReceiverError(f"cannot create store folder {store}: {exc.strerror}") from exc
    indexer = _Indexer(Path(index)) if index is not None else None

    def stored_hook(stored: StoredObject) -> None:
        if indexer is not None:
            indexer.submit(stored)
        if on_stored is not None:
            on_stored(stored)

    writer = StoreWriter(store, layout=layout, on_stored=stored_hook)
    ae = storage_ae(title)
    if callers:
        ae.require_calling_aet = callers
    handlers: list[Any] = [
        (evt.EVT_C_STORE, make_store_handler(writer)),
        (evt.EVT_ACCEPTED, _log_association, ["accepted"]),
        (evt.EVT_REJECTED, _log_association, ["rejected"]),
    ]
    try:
        server = ae.start_server((bind, port), block=False, evt_handlers=handlers)
    except OSError as exc:
        if indexer is not None:
            indexer.stop()
        raise ReceiverError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}") from exc
    if server is None:  # only a blocking server returns None
        raise ReceiverError(f"cannot listen on {bind}:{port}")
    handle = ReceiverHandle(server, title, store, indexer)
    log.info(
        "receiving as %s on %s:%d into %s (callers: %s)",
        title,
        handle.bind,
        handle.port,
        store,
        ", ".join(callers) or "any",
    )
    return handle


def _log_association(event: Event, what: str) -> None:
    requestor = event.assoc.requestor
    log.info("association %s: %s from %s", what, requestor.ae_title, requestor.address)


def run_receiver(start: Callable[[], ReceiverHandle]) -> int:
    """``dicomfs receive``: serve until SIGINT or SIGTERM, then stop cleanly; returns 0.

    ``start`` starts the receiver (``start_receiver`` with the command's
    settings); it is called once the signal handlers are in place, so a
    signal that comes while it starts still ends the receiver cleanly.
    """
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        handle = start()
        index = handle.index
        print(
            f"dicomfs: receiving as {handle.ae_title} on {handle.bind}:{handle.port} "
            f"into {handle.store}" + (f", indexing into {index}" if index else ""),
            file=sys.stderr,
            flush=True,
        )
        try:
            while not stopping.wait(1.0):
                pass
        finally:
            handle.stop()
        print("dicomfs: receiver stopped", file=sys.stderr, flush=True)
        return 0
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
