"""Asking the PACS during a fetch: the queries, the retrieves, what the PACS turned out to support.

A :class:`PacsSession` wraps the one association (``qr.Peer``) of a fetch
with the fetch's conventions: which keys a SERIES or IMAGE query asks
for, C-GET or C-MOVE (and our temporary C-MOVE receiver), whether the PACS
answers IMAGE-level queries, which series were already retrieved whole.
It lives across the rounds of a fetch, so what was learnt about the PACS
in one round is not asked again in the next. Deciding *what* to ask for
is ``fetch_resolve``'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from dicomfs.dicom.records import is_safe_uid
from dicomfs.net.fetch_records import FetchOptions, FetchReport, SeriesInfo
from dicomfs.net.pacs import PacsAddress, PacsError
from dicomfs.net.qr import Collector, FindResult, Peer, ProgressFn, number, text
from dicomfs.net.receive import ReceiverHandle, start_receiver
from dicomfs.net.store import StoredObject


class MoveTarget:
    """Our temporary C-MOVE destination, started on first use and stopped at the end."""

    def __init__(self, options: FetchOptions, pacs: PacsAddress, collector: Collector) -> None:
        self.options = options
        self.pacs = pacs
        self.collector = collector
        self.handle: ReceiverHandle | None = None

    @property
    def available(self) -> bool:
        return self.options.move_port is not None

    def ensure(self) -> str:
        """Our AE title as the C-MOVE destination, once the receiver listens."""
        if self.handle is None:
            if self.options.move_port is None:
                raise PacsError(
                    f"{self.pacs} needs C-MOVE, which sends to a port of ours: give --move-port N "
                    f"and register AE title {self.options.our_ae!r} with that port at the PACS"
                )
            callers = self.options.move_callers or (self.pacs.ae_title,)
            self.handle = start_receiver(
                self.options.store,
                port=self.options.move_port,
                ae_title=self.options.our_ae,
                bind=self.options.move_bind,
                allowed_callers=callers,
                layout=self.options.layout,
                on_stored=self.collector.add,
            )
        return self.options.our_ae

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.stop()
            self.handle = None


@dataclass(eq=False)
class PacsSession:
    """One fetch's association, what arrived over it, and what the PACS turned out to support.

    ``image_level`` is None until the PACS has shown whether it answers
    IMAGE-level C-FIND; ``series_done`` holds the series retrieved whole.
    """

    peer: Peer
    options: FetchOptions
    collector: Collector
    mover: MoveTarget
    report: FetchReport
    progress: ProgressFn
    image_level: bool | None = None
    series_done: set[str] = field(default_factory=set)
    _series_cache: dict[str, list[SeriesInfo]] = field(default_factory=dict, init=False, repr=False)

    def arrived(self, uid: str) -> bool:
        return self.collector.has(uid)

    def image_level_unsupported(self, why: str) -> None:
        if self.image_level is not False:
            self.progress(f"the PACS does not answer IMAGE-level queries ({why}); using series")
        self.image_level = False
        self.report.image_level = False

    def image_level_works(self) -> None:
        if self.image_level is None:
            self.progress("the PACS answers IMAGE-level queries: retrieving single objects")
        self.image_level = True
        self.report.image_level = True

    # -- queries -------------------------------------------------------

    def find_images(self, study_uid: str, series_uid: str, sop_uid: str) -> FindResult:
        """An IMAGE-level C-FIND; an empty key matches anything (callers vet the UIDs)."""
        return self.peer.find("IMAGE", image_keys(study_uid, series_uid, sop_uid))

    def list_series(self, study_uid: str) -> list[SeriesInfo]:
        """The series of a study the PACS holds (asked once per study per fetch)."""
        if study_uid in self._series_cache:
            return self._series_cache[study_uid]
        result = self.peer.find("SERIES", series_keys(study_uid, ""))
        series: list[SeriesInfo] = []
        if not result.ok:
            self.progress(
                f"series query in study {study_uid} failed with status 0x{result.status:04X}"
            )
        for match in result.matches:
            info = series_info(match)
            if info is not None and info.study_uid == study_uid:
                series.append(info)
        self._series_cache[study_uid] = series
        return series

    def locate_series(self, series_uid: str, studies: Sequence[str]) -> SeriesInfo | None:
        """The series and its study; relational PACS also find it with no study given."""
        for study in [*studies, ""]:
            result = self.peer.find("SERIES", series_keys(study, series_uid))
            if not result.ok:
                continue
            for match in result.matches:
                info = series_info(match)
                if info is not None and info.series_uid == series_uid:
                    return info
        return None

    def probe_image_level(self, series: SeriesInfo) -> bool:
        """Does an IMAGE-level query list the instances of a series known to have some?"""
        result = self.find_images(series.study_uid, series.series_uid, "")
        if result.ok and result.matches:
            self.image_level_works()
            return True
        self.image_level_unsupported(
            f"status 0x{result.status:04X}" if not result.ok else "no instances listed"
        )
        return False

    # -- retrieval -----------------------------------------------------

    def method(self) -> str:
        """``get`` or ``move``, as asked and as the association allows."""
        wanted = self.options.method
        if wanted == "get" or (wanted == "auto" and self.peer.supports_get):
            if not self.peer.supports_get:
                raise PacsError(f"{self.peer.pacs} does not accept C-GET; try --method move")
            return "get"
        if not self.peer.supports_move:
            raise PacsError(f"{self.peer.pacs} accepts neither C-GET nor C-MOVE")
        return "move"

    def retrieve(
        self, level: str, study_uid: str, series_uid: str, sop_uid: str = ""
    ) -> list[StoredObject]:
        """Retrieve at ``level``; under ``auto`` a C-GET delivering nothing falls back to C-MOVE."""
        keys = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}
        if sop_uid:
            keys["SOPInstanceUID"] = sop_uid
        method = self.method()
        if method == "get":
            result = self.peer.get(level, keys, self.collector)
            if (
                not result.stored
                and result.failed
                and self.options.method == "auto"
                and self.mover.available
                and self.peer.supports_move
            ):
                self.progress("C-GET delivered nothing; trying C-MOVE")
                method = "move"
        if method == "move":
            result = self.peer.move(level, keys, self.mover.ensure(), self.collector)
        self.report.methods.add(method)
        if not result.ok:
            self.progress(
                f"  {level}-level C-{method.upper()} ended with status 0x{result.status:04X} "
                f"({result.completed} sent, {result.failed} failed)"
            )
        fresh = [s for s in result.stored if not s.duplicate]
        self.progress(f"  received {len(result.stored)} object(s), {len(fresh)} new")
        return result.stored

    def retrieve_series(self, series: SeriesInfo) -> list[StoredObject]:
        self.progress(f"  retrieving whole {series}")
        self.series_done.add(series.series_uid)
        self.report.series_retrieved.append(series)
        return self.retrieve("SERIES", series.study_uid, series.series_uid)


def series_keys(study_uid: str, series_uid: str) -> dict[str, str]:
    return {
        "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": series_uid,
        "Modality": "",
        "SeriesDescription": "",
        "NumberOfSeriesRelatedInstances": "",
    }


def image_keys(study_uid: str, series_uid: str, sop_uid: str) -> dict[str, str]:
    return {
        "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": series_uid,
        "SOPInstanceUID": sop_uid,
        "SOPClassUID": "",
    }


def series_info(match: Dataset) -> SeriesInfo | None:
    """A SERIES-level answer, or None when its UIDs could not safely be used in a retrieve."""
    study, series = text(match, "StudyInstanceUID"), text(match, "SeriesInstanceUID")
    if not (is_safe_uid(study) and is_safe_uid(series)):
        return None
    return SeriesInfo(
        study_uid=study,
        series_uid=series,
        modality=text(match, "Modality").upper(),
        count=number(match, "NumberOfSeriesRelatedInstances"),
        description=text(match, "SeriesDescription")[:64],
    )
