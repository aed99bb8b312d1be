"""Writing objects received over the network into a store folder, atomically and safely.

The store folder lives inside a watched source, so a file must appear
there complete or not at all: it is written under a dot-name ending in
``.part`` (ignored by the scanner and the watcher, reliability.md B2),
fsynced, then renamed into place, which the watcher sees as "moved in".

Names come from the dataset's SOP Instance UID (0008,0018), never from the
C-STORE request (reliability.md D1), and only when the UID passes
``records.is_safe_uid``; any other value gets a synthetic name built from
its hash, so a hostile UID such as ``../../evil`` can never become a path
(reliability.md C1). An existing file is never replaced: an identical copy
is dropped, a different one is stored beside it under a second name and
becomes a recorded conflict in the index (reliability.md C2).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import secrets
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

from dicomfs.dicom.part10 import encode_file_meta
from dicomfs.dicom.records import clean_uid, is_safe_uid

log = logging.getLogger(__name__)

PARTIAL_PREFIX = ".incoming-"
PARTIAL_SUFFIX = ".part"
# Only the identifying elements at the start of a dataset are read to name
# it; a deflated dataset is inflated no further than this (reliability.md D2:
# a small deflate bomb must not cost gigabytes).
HEADER_LIMIT = 4 << 20
_LAST_IDENTITY_TAG = 0x0020000E  # Series Instance UID; everything needed comes before it

Layout = Literal["series", "flat"]


class DatasetError(Exception):
    """The received dataset cannot be decoded far enough to identify it."""


@dataclass(frozen=True, slots=True)
class Identity:
    """What a received dataset says it is; values are cleaned but untrusted."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    modality: str


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object placed in the store; ``duplicate`` when an identical copy was already there."""

    identity: Identity
    path: Path
    duplicate: bool = False


_IDENTITY_TAGS = {
    "sop_class_uid": 0x00080016,
    "sop_instance_uid": 0x00080018,
    "modality": 0x00080060,
    "study_uid": 0x0020000D,
    "series_uid": 0x0020000E,
}


def _raw_text(ds: Dataset, tag: int) -> str:
    """An element's bytes as text, without pydicom's value conversion.

    Converting would run pydicom's value validation, which warns on every
    hostile UID; the raw bytes are all a name needs, and they are checked
    by ``is_safe_uid`` before any use as a path.
    """
    element = ds.get_item(tag)
    value = getattr(element, "value", None)
    if isinstance(value, bytes):
        return clean_uid(value.decode("latin-1"))
    return clean_uid(value) if isinstance(value, str) else ""


def read_identity(stream: bytes, transfer_syntax: str) -> Identity:
    """Decode just enough of a dataset (no File Meta) to name and sort it.

    Raises DatasetError for anything that does not yield a SOP Class UID
    and a SOP Instance UID: such a dataset is answered "cannot understand".
    """
    ts = UID(transfer_syntax)
    data: bytes = stream
    if ts == DeflatedExplicitVRLittleEndian:
        try:
            data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(stream, HEADER_LIMIT)
        except zlib.error as exc:
            raise DatasetError(f"deflated dataset does not inflate: {exc}") from exc
    implicit = ts == ImplicitVRLittleEndian
    little = ts != ExplicitVRBigEndian

    def stop(tag: BaseTag, vr: str | None, length: int) -> bool:
        return int(tag) > _LAST_IDENTITY_TAG

    try:
        ds = read_dataset(io.BytesIO(data), implicit, little, stop_when=stop, defer_size=1024)
        values = {key: _raw_text(ds, tag) for key, tag in _IDENTITY_TAGS.items()}
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # any decoding failure is the sender's problem
        raise DatasetError(f"dataset cannot be decoded: {type(exc).__name__}: {exc}") from exc
    if not values["sop_instance_uid"] or not values["sop_class_uid"]:
        raise DatasetError("dataset has no SOP Class UID or SOP Instance UID")
    return Identity(**values)


def safe_name(sop_uid: str) -> str:
    """``<uid>.dcm`` for a safe UID, else ``unsafe-<sha256 prefix>.dcm``; never a path."""
    if is_safe_uid(sop_uid):
        return f"{sop_uid}.dcm"
    digest = hashlib.sha256(sop_uid.encode("utf-8", "surrogateescape")).hexdigest()
    return f"unsafe-{digest[:16]}.dcm"


def encode_file(stream: bytes, identity: Identity, transfer_syntax: str, calling_ae: str) -> bytes:
    """The DICOM file: File Meta, then the dataset bytes exactly as received.

    The dataset is not re-encoded, so the stored file keeps the sender's
    transfer syntax and element encoding (compressed pixel data passes
    through untouched). The File Meta group is ``dicom.part10``'s, the one
    the view's ``part10`` setting serves too.
    """
    meta = encode_file_meta(
        identity.sop_class_uid, identity.sop_instance_uid, transfer_syntax, calling_ae
    )
    return meta + stream


def _same_content(path: Path, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as handle:
        if os.fstat(handle.fileno()).st_size != len(data):
            return False
        return handle.read() == data


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        # The file is already in place; a folder that cannot be synced costs
        # durability on power loss only, which the reconcile scan tolerates.
        log.debug("fsync of folder %s failed: %s", folder, errno.errorcode.get(exc.errno or 0))
    finally:
        os.close(fd)


class StoreWriter:
    """Places received objects in ``root``; safe to call from several association threads.

    ``layout="series"`` puts each object under ``<study>/<series>/`` when both
    UIDs are safe (else at the top of the store); ``"flat"`` keeps every file
    at the top. ``on_stored`` is called after each object is in place, on the
    thread that stored it.
    """

    def __init__(
        self,
        root: Path,
        *,
        layout: Layout = "series",
        on_stored: Callable[[StoredObject], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self.layout = layout
        self.on_stored = on_stored
        # Serialises "does the name exist? rename" so two associations storing
        # the same UID cannot both win (rename(2) would silently replace).
        self._place_lock = threading.Lock()

    def folder_for(self, identity: Identity) -> Path:
        if (
            self.layout == "series"
            and is_safe_uid(identity.study_uid)
            and is_safe_uid(identity.series_uid)
        ):
            return self.root / identity.study_uid / identity.series_uid
        return self.root

    def store(self, stream: bytes, transfer_syntax: str, calling_ae: str = "") -> StoredObject:
        """Identify, write and place one dataset (without File Meta).

        Raises DatasetError when the dataset cannot be identified and
        OSError when the store cannot take it (full, read-only, I/O error);
        in both cases no partial file is left behind and nothing already
        stored is touched.
        """
        identity = read_identity(stream, transfer_syntax)
        data = encode_file(stream, identity, transfer_syntax, calling_ae)
        stored = self.place(data, identity)
        if self.on_stored is not None:
            self.on_stored(stored)
        return stored

    def place(self, data: bytes, identity: Identity) -> StoredObject:
        folder = self.folder_for(identity)
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f"{PARTIAL_PREFIX}{secrets.token_hex(8)}{PARTIAL_SUFFIX}"
        fd = os.open(
            partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
        )
        try:
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            return self._rename_into_place(partial, folder, data, identity)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise

    def _rename_into_place(
        self, partial: Path, folder: Path, data: bytes, identity: Identity
    ) -> StoredObject:
        name = safe_name(identity.sop_instance_uid)
        target = folder / name
        with self._place_lock:
            if os.path.lexists(target):
                if _same_content(target, data):
                    os.unlink(partial)
                    return StoredObject(identity, target, duplicate=True)
                # Same UID, different bytes: keep both; the index keeps serving
                # the first and records the conflict.
                digest = hashlib.sha256(data).hexdigest()[:12]
                target = folder / f"{name[: -len('.dcm')]}.{digest}.dcm"
                if os.path.lexists(target):
                    os.unlink(partial)
                    return StoredObject(identity, target, duplicate=True)
                log.warning(
                    "a different object with SOP Instance UID already stored as %s; kept the new "
                    "one as %s (the index records the conflict)",
                    name,
                    target.name,
                )
            os.rename(partial, target)
        _fsync_dir(folder)
        return StoredObject(identity, target)
