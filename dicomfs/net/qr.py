"""One association to a PACS for query (C-FIND) and retrieve (C-GET, C-MOVE), Study Root.

The fetch logic (``fetch.py``) decides *what* to ask; this module only
knows how to ask and how to read the answers, so the decisions can be
read without DIMSE details.

Every UID put in a retrieve identifier must pass ``records.is_safe_uid``:
UIDs come from files and are untrusted, and an empty or wildcard value
(``*``, ``?``) in a key means "match everything" (PS3.4 C.2.2.2), which
would turn a request for one object into a request for the whole PACS.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom import sop_class as sc
from pynetdicom.association import Association

from dicomfs.dicom.records import is_safe_uid
from dicomfs.net.pacs import PacsAddress, PacsError
from dicomfs.net.receive import make_store_handler
from dicomfs.net.store import StoredObject, StoreWriter

log = logging.getLogger(__name__)

FIND_MODEL = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve - FIND
MOVE_MODEL = "1.2.840.10008.5.1.4.1.2.2.2"  # Study Root Query/Retrieve - MOVE
GET_MODEL = "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root Query/Retrieve - GET

# C-GET delivers over our own association, so every class we may receive
# must be proposed with the SCP role (PS3.4 C.4.3, PS3.7 D.3.3.4) and a
# proposal holds at most 128 contexts: the classes an RT package is made of.
RETRIEVE_STORAGE_CLASSES: tuple[str, ...] = tuple(
    getattr(sc, name)
    for name in (
        "CTImageStorage",
        "EnhancedCTImageStorage",
        "MRImageStorage",
        "EnhancedMRImageStorage",
        "PositronEmissionTomographyImageStorage",
        "EnhancedPETImageStorage",
        "NuclearMedicineImageStorage",
        "ComputedRadiographyImageStorage",
        "DigitalXRayImageStorageForPresentation",
        "DigitalXRayImageStorageForProcessing",
        "XRayAngiographicImageStorage",
        "UltrasoundImageStorage",
        "UltrasoundMultiFrameImageStorage",
        "SecondaryCaptureImageStorage",
        "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
        "RTImageStorage",
        "RTDoseStorage",
        "RTStructureSetStorage",
        "RTPlanStorage",
        "RTIonPlanStorage",
        "RTBeamsTreatmentRecordStorage",
        "RTBrachyTreatmentRecordStorage",
        "RTTreatmentSummaryRecordStorage",
        "RTIonBeamsTreatmentRecordStorage",
        "RTPhysicianIntentStorage",
        "RTSegmentAnnotationStorage",
        "RTRadiationSetStorage",
        "RTRadiationRecordSetStorage",
        "EnhancedRTImageStorage",
        "EnhancedContinuousRTImageStorage",
        "SpatialRegistrationStorage",
        "DeformableSpatialRegistrationStorage",
        "SpatialFiducialsStorage",
        "SegmentationStorage",
        "SurfaceSegmentationStorage",
        "LabelMapSegmentationStorage",
        "EncapsulatedPDFStorage",
        "BasicTextSRStorage",
        "EnhancedSRStorage",
        "ComprehensiveSRStorage",
        "KeyObjectSelectionDocumentStorage",
        "RawDataStorage",
        "GrayscaleSoftcopyPresentationStateStorage",
    )
)
# Uncompressed first; compressed ones so a PACS can send what it holds as is.
RETRIEVE_TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still in archives)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
)
MAX_MATCHES = 50_000
_PENDING = (0xFF00, 0xFF01)


@dataclass(frozen=True, slots=True)
class FindResult:
    """The matches of one C-FIND and its final status (0x0000 when the query was answered)."""

    status: int
    matches: list[Dataset]

    @property
    def ok(self) -> bool:
        return self.status == 0x0000


@dataclass(frozen=True, slots=True)
class RetrieveResult:
    """Final status and sub-operation counts of one C-GET or C-MOVE, and what arrived."""

    status: int
    completed: int
    failed: int
    warning: int
    stored: list[StoredObject]

    @property
    def ok(self) -> bool:
        return self.status == 0x0000 or 0xB000 <= self.status <= 0xBFFF


class Collector:
    """Everything stored during a fetch, in arrival order; appended from association threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[StoredObject] = []
        self._uids: set[str] = set()

    def add(self, stored: StoredObject) -> None:
        with self._lock:
            self._items.append(stored)
            self._uids.add(stored.identity.sop_instance_uid)

    def has(self, sop_uid: str) -> bool:
        with self._lock:
            return sop_uid in self._uids

    def since(self, mark: int) -> list[StoredObject]:
        with self._lock:
            return self._items[mark:]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def items(self) -> list[StoredObject]:
        with self._lock:
            return list(self._items)


def _identifier(level: str, keys: Mapping[str, str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _check_retrieve_keys(keys: Mapping[str, str]) -> None:
    for keyword, value in keys.items():
        if keyword.endswith("UID") and not is_safe_uid(value):
            raise PacsError(f"refusing to retrieve with {keyword}={value!r}: not a valid UID")


def _status_of(status: Dataset) -> int:
    if "Status" not in status:
        raise PacsError(
            "the PACS stopped answering (association aborted or timed out); "
            "try again, or raise --timeout"
        )
    return int(status.Status)


class Peer:
    """An open association to ``pacs`` as ``our_ae``; objects sent over C-GET go to ``writer``.

    Use as a context manager; the association is released on exit.
    """

    def __init__(
        self,
        pacs: PacsAddress,
        *,
        our_ae: str,
        writer: StoreWriter,
        timeout: float = 300.0,
    ) -> None:
        self.pacs = pacs
        self.our_ae = our_ae
        self.writer = writer
        self.timeout = timeout
        self._assoc: Association | None = None

    def __enter__(self) -> Peer:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        ae = AE(self.our_ae)
        ae.acse_timeout = min(self.timeout, 30.0)
        ae.dimse_timeout = self.timeout
        ae.network_timeout = self.timeout
        ae.connection_timeout = min(self.timeout, 30.0)
        for model in (FIND_MODEL, GET_MODEL, MOVE_MODEL):
            ae.add_requested_context(model)
        for storage in RETRIEVE_STORAGE_CLASSES:
            ae.add_requested_context(storage, list(RETRIEVE_TRANSFER_SYNTAXES))
        roles = [build_role(storage, scp_role=True) for storage in RETRIEVE_STORAGE_CLASSES]
        handlers: list[Any] = [(evt.EVT_C_STORE, make_store_handler(self.writer))]
        assoc = ae.associate(
            self.pacs.host,
            self.pacs.port,
            ae_title=self.pacs.ae_title,
            ext_neg=roles,  # type: ignore[arg-type]
            evt_handlers=handlers,
        )
        if not assoc.is_established:
            raise PacsError(f"cannot associate with {self.pacs}: {self._why_not(assoc)}")
        self._assoc = assoc
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        self.supports_find = FIND_MODEL in accepted
        self.supports_get = GET_MODEL in accepted
        self.supports_move = MOVE_MODEL in accepted
        if not self.supports_find:
            self.close()
            raise PacsError(f"{self.pacs} does not accept Study Root C-FIND queries")

    def _why_not(self, assoc: Association) -> str:
        """Tell "nobody listens" from "refused us": pynetdicom reports both as aborted."""
        titles = f"check its AE title and that it knows our AE title {self.our_ae!r} (--our-ae)"
        if assoc.is_rejected:
            return f"the PACS rejected the association: {titles}"
        try:
            with socket.create_connection((self.pacs.host, self.pacs.port), timeout=10):
                pass
        except OSError as exc:
            return (
                f"no answer ({exc.strerror or exc}): check host and port, "
                "and that the PACS is running"
            )
        return f"the PACS closed the association request without accepting it: {titles}"

    def close(self) -> None:
        if self._assoc is not None and self._assoc.is_established:
            self._assoc.release()
        self._assoc = None

    @property
    def assoc(self) -> Association:
        if self._assoc is None or not self._assoc.is_established:
            raise PacsError(f"the association with {self.pacs} was lost")
        return self._assoc

    def find(self, level: str, keys: Mapping[str, str]) -> FindResult:
        """One C-FIND; a failure status is returned, not raised: it tells what the PACS supports."""
        matches: list[Dataset] = []
        final = 0x0000
        responses: Iterator[tuple[Dataset, Dataset | None]] = self.assoc.send_c_find(
            _identifier(level, keys), FIND_MODEL
        )
        for status, identifier in responses:
            code = _status_of(status)
            if code in _PENDING:
                if identifier is not None and len(matches) < MAX_MATCHES:
                    matches.append(identifier)
                continue
            final = code
        return FindResult(final, matches)

    def get(self, level: str, keys: Mapping[str, str], collector: Collector) -> RetrieveResult:
        _check_retrieve_keys(keys)
        mark = len(collector)
        responses = self.assoc.send_c_get(_identifier(level, keys), GET_MODEL)
        return self._retrieve_result(responses, collector, mark)

    def move(
        self, level: str, keys: Mapping[str, str], destination: str, collector: Collector
    ) -> RetrieveResult:
        _check_retrieve_keys(keys)
        mark = len(collector)
        responses = self.assoc.send_c_move(_identifier(level, keys), destination, MOVE_MODEL)
        return self._retrieve_result(responses, collector, mark)

    @staticmethod
    def _retrieve_result(
        responses: Iterator[tuple[Dataset, Dataset | None]], collector: Collector, mark: int
    ) -> RetrieveResult:
        final = 0x0000
        counts = {"completed": 0, "failed": 0, "warning": 0}
        for status, _identifier_ds in responses:
            final = _status_of(status)
            for key, keyword in (
                ("completed", "NumberOfCompletedSuboperations"),
                ("failed", "NumberOfFailedSuboperations"),
                ("warning", "NumberOfWarningSuboperations"),
            ):
                value = status.get(keyword)
                if value is not None:
                    counts[key] = int(value)
        return RetrieveResult(final, stored=collector.since(mark), **counts)


def text(ds: Dataset, keyword: str) -> str:
    """A query answer's value as clean text ('' when absent); answers are untrusted too."""
    value = ds.get(keyword, "")
    return str(value).rstrip("\x00 ").strip() if value is not None else ""


def number(ds: Dataset, keyword: str) -> int | None:
    try:
        return int(text(ds, keyword))
    except ValueError:
        return None


ProgressFn = Callable[[str], None]
