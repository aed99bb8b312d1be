"""Fetch exactly what a plan's package is missing from a PACS, at the lowest level it answers.

dicomfs knows each missing object by SOP Instance UID and, usually, the
study and series the referencing object says it lives in (graph.MissingRef).
So instead of pulling whole studies:

1. When the PACS answers IMAGE-level C-FIND, each missing object is found
   by its UID and retrieved alone (C-GET, or C-MOVE to a temporary
   receiver of ours). When every instance of a series is needed, the series
   is retrieved in one request instead of one per instance.
2. When it answers only STUDY/SERIES level (many do), the smallest series
   that holds the object is retrieved: the series the reference names;
   otherwise the series of the expected modality (structure set ->
   RTSTRUCT, image -> CT/MR/PT ...) in the study of the referencing object,
   smallest first, one at a time, stopping as soon as the UID arrives.
   Series already complete in the index are never retrieved again.
3. A plan that names no structure set at all (a study-level missing entry)
   gets the RTSTRUCT series of its study listed as candidates; they are
   retrieved only with ``candidates=True``, because nothing says which one
   the plan was made on and the package will still not name it.

Objects land in the store folder through the same atomic writer as the
receiver and are indexed after each round; a round's arrivals can reveal
new needs (a structure set names its CT slices), so rounds repeat until
nothing new arrives.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydicom.dataset import Dataset

from dicomfs.dicom.records import Level, is_safe_uid
from dicomfs.errors import NotAPlanError
from dicomfs.index import IndexReader, IndexWriter, graph
from dicomfs.live.scan import reconcile
from dicomfs.net.pacs import PacsAddress, PacsError
from dicomfs.net.qr import Collector, Peer, ProgressFn, number, text
from dicomfs.net.receive import ReceiverHandle, start_receiver
from dicomfs.net.store import Layout, StoredObject, StoreWriter

log = logging.getLogger(__name__)

Method = Literal["auto", "get", "move"]

# What modality a referenced object of each role is expected to have, to
# narrow a series-level search (dicom-references.md section 1 for the roles).
ROLE_MODALITIES: dict[str, frozenset[str]] = {
    "structure_set": frozenset({"RTSTRUCT"}),
    "dose": frozenset({"RTDOSE"}),
    "plan": frozenset({"RTPLAN"}),
    "related_plan": frozenset({"RTPLAN"}),
    "treatment_record": frozenset({"RTRECORD"}),
    "verification_image": frozenset({"RTIMAGE"}),
    "reference_image": frozenset({"RTIMAGE", "CT", "MR", "PT"}),
    "image": frozenset({"CT", "MR", "PT", "NM", "US", "CR", "DX"}),
    "source_image": frozenset({"CT", "MR", "PT", "NM", "US", "CR", "DX"}),
    "registration": frozenset({"REG"}),
    "definition_source": frozenset({"SEG", "RTSTRUCT", "FID"}),
}


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """How to fetch; ``move_port`` is needed only when C-MOVE is used.

    ``move_callers`` are the calling AE titles the temporary C-MOVE receiver
    accepts (default: the PACS's own title, which is what most PACS use for
    their outgoing associations).
    """

    store: Path
    index: Path
    our_ae: str = "DICOMFS"
    method: Method = "auto"
    move_port: int | None = None
    move_bind: str = "0.0.0.0"
    move_callers: tuple[str, ...] = ()
    candidates: bool = False
    timeout: float = 300.0
    layout: Layout = "series"
    max_rounds: int = 8


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """A series as the PACS described it in a SERIES-level C-FIND answer."""

    study_uid: str
    series_uid: str
    modality: str
    count: int | None
    description: str

    def __str__(self) -> str:
        size = "? instances" if self.count is None else f"{self.count} instance(s)"
        desc = f", {self.description!r}" if self.description else ""
        return f"{self.modality or '?'} series {self.series_uid} ({size}{desc})"


@dataclass(slots=True)
class Outcome:
    """What happened to one missing reference.

    ``state``: ``found`` (retrieved), ``not_found``, ``candidates`` (a plan
    naming no structure set: series listed), or ``skipped`` (nothing that can
    be queried safely).
    """

    ref: graph.MissingRef
    state: str
    series_uid: str = ""
    level: str = ""
    note: str = ""
    candidates: list[SeriesInfo] = field(default_factory=list)


@dataclass(slots=True)
class FetchReport:
    plans: list[str]
    outcomes: list[Outcome] = field(default_factory=list)
    stored: list[StoredObject] = field(default_factory=list)
    series_retrieved: list[SeriesInfo] = field(default_factory=list)
    still_missing: dict[str, list[graph.MissingRef]] = field(default_factory=dict)
    image_level: bool | None = None
    methods: set[str] = field(default_factory=set)

    @property
    def complete(self) -> bool:
        return not any(self.still_missing.values())

    @property
    def new_objects(self) -> list[StoredObject]:
        return [s for s in self.stored if not s.duplicate]


@dataclass(frozen=True, slots=True)
class _Ref:
    """A missing reference with the studies where it may be searched."""

    ref: graph.MissingRef
    study_uid: str  # where the reference says it is ('' unknown)
    context_study: str  # study of the referencing object

    @property
    def uid(self) -> str:
        return self.ref.uid

    def studies(self) -> list[str]:
        return list(dict.fromkeys(s for s in (self.study_uid, self.context_study) if s))

    def describe(self) -> str:
        return f"{self.ref.expected} {self.ref.uid}"


def stderr_progress(message: str) -> None:
    print(f"fetch: {message}", file=sys.stderr, flush=True)


def plans_to_fetch(index: Path, plan_uids: Sequence[str] | None) -> list[str]:
    """The given plans (each must be an indexed plan), or every plan with something missing."""
    reader = IndexReader(index)
    try:
        if plan_uids is None:
            return [p.sop_uid for p in reader.plans() if graph.package(reader, p.sop_uid).missing]
        for uid in plan_uids:
            root = graph.resolve(reader, uid)
            if not root.is_plan:
                raise NotAPlanError(
                    f"{uid} is a {root.modality or root.sop_class} object, not an RT Plan"
                )
        return list(dict.fromkeys(plan_uids))
    finally:
        reader.close()


def missing_for(index: Path, plans: Iterable[str]) -> dict[str, list[graph.MissingRef]]:
    reader = IndexReader(index)
    try:
        return {plan: graph.package(reader, plan).missing for plan in plans}
    finally:
        reader.close()


class _MoveTarget:
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


class _Job:
    """One fetch: the association, what arrived, and what the PACS turned out to support."""

    def __init__(
        self,
        peer: Peer,
        options: FetchOptions,
        collector: Collector,
        mover: _MoveTarget,
        report: FetchReport,
        progress: ProgressFn,
    ) -> None:
        self.peer = peer
        self.options = options
        self.collector = collector
        self.mover = mover
        self.report = report
        self.progress = progress
        self.image_level: bool | None = None
        self.series_done: set[str] = set()
        self._series_cache: dict[str, list[SeriesInfo]] = {}
        self.reader: IndexReader | None = None

    # -- what is known -------------------------------------------------

    def arrived(self, uid: str) -> bool:
        return self.collector.has(uid)

    def local_count(self, series_uid: str) -> int:
        if self.reader is None:
            return 0
        return len(self.reader.series_instances(series_uid))

    def outcome(
        self,
        ref: _Ref,
        state: str,
        *,
        series_uid: str = "",
        level: str = "",
        note: str = "",
        candidates: Sequence[SeriesInfo] = (),
    ) -> None:
        self.report.outcomes.append(
            Outcome(ref.ref, state, series_uid, level, note, list(candidates))
        )

    def _image_level_unsupported(self, why: str) -> None:
        if self.image_level is not False:
            self.progress(f"the PACS does not answer IMAGE-level queries ({why}); using series")
        self.image_level = False
        self.report.image_level = False

    def _image_level_works(self) -> None:
        if self.image_level is None:
            self.progress("the PACS answers IMAGE-level queries: retrieving single objects")
        self.image_level = True
        self.report.image_level = True

    # -- queries -------------------------------------------------------

    def list_series(self, study_uid: str) -> list[SeriesInfo]:
        if study_uid in self._series_cache:
            return self._series_cache[study_uid]
        result = self.peer.find("SERIES", _series_keys(study_uid, ""))
        series: list[SeriesInfo] = []
        if not result.ok:
            self.progress(
                f"series query in study {study_uid} failed with status 0x{result.status:04X}"
            )
        for match in result.matches:
            info = _series_info(match)
            if info is not None and info.study_uid == study_uid:
                series.append(info)
        self._series_cache[study_uid] = series
        return series

    def locate_series(self, series_uid: str, studies: Sequence[str]) -> SeriesInfo | None:
        """The series and its study; relational PACS also find it with no study given."""
        for study in [*studies, ""]:
            result = self.peer.find("SERIES", _series_keys(study, series_uid))
            if not result.ok:
                continue
            for match in result.matches:
                info = _series_info(match)
                if info is not None and info.series_uid == series_uid:
                    return info
        return None

    def probe_image_level(self, series: SeriesInfo) -> bool:
        """Does an IMAGE-level query list the instances of a series known to have some?"""
        result = self.peer.find("IMAGE", _image_keys(series.study_uid, series.series_uid, ""))
        if result.ok and result.matches:
            self._image_level_works()
            return True
        self._image_level_unsupported(
            f"status 0x{result.status:04X}" if not result.ok else "no instances listed"
        )
        return False

    def candidates(self, ref: _Ref) -> list[SeriesInfo]:
        """Series that may hold ``ref``: expected modality, not already complete locally."""
        modalities = ROLE_MODALITIES.get(ref.ref.expected, frozenset())
        found: list[SeriesInfo] = []
        for study in ref.studies():
            for info in self.list_series(study):
                if modalities and info.modality not in modalities:
                    continue
                if info.count == 0:
                    continue
                if info.count is not None and self.local_count(info.series_uid) >= info.count:
                    continue  # every instance is already indexed: the UID is not in it
                found.append(info)
        found.sort(key=lambda s: (s.count is None, s.count or 0, s.series_uid))
        return found

    # -- retrieval -----------------------------------------------------

    def method(self) -> str:
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

    # -- resolving missing references ----------------------------------

    def resolve(self, refs: Sequence[_Ref]) -> None:
        by_series: dict[str, list[_Ref]] = {}
        unknown: list[_Ref] = []
        for ref in refs:
            level = ref.ref.level
            if not is_safe_uid(ref.uid):
                self.outcome(ref, "skipped", note="not a valid UID; never sent in a query")
            elif level is Level.INSTANCE and is_safe_uid(ref.ref.series_uid):
                by_series.setdefault(ref.ref.series_uid, []).append(ref)
            elif level is Level.INSTANCE:
                unknown.append(ref)
            elif level not in (Level.SERIES, Level.STUDY):
                self.outcome(ref, "skipped", note=f"{level.value}-level reference")
        for series_uid, group in by_series.items():
            self.resolve_in_series(series_uid, group)
        for ref in unknown:
            self.resolve_unlocated(ref)
        for ref in refs:
            if is_safe_uid(ref.uid) and ref.ref.level is Level.SERIES:
                self.resolve_series_ref(ref)
            elif is_safe_uid(ref.uid) and ref.ref.level is Level.STUDY:
                self.resolve_study_ref(ref)

    def resolve_in_series(self, series_uid: str, refs: list[_Ref]) -> None:
        """Objects whose series the reference names: look only there."""
        pending = [r for r in refs if not self.arrived(r.uid)]
        for ref in refs:
            if ref not in pending:
                self.outcome(ref, "found", series_uid=series_uid, note="arrived earlier")
        if not pending:
            return
        studies = list(dict.fromkeys(s for r in pending for s in r.studies()))
        series = self.locate_series(series_uid, studies)
        if series is None:
            self.progress(f"series {series_uid} ({len(pending)} needed): not on the PACS")
            for ref in pending:
                self.outcome(ref, "not_found", note=f"series {series_uid} is not on the PACS")
            return
        self.progress(f"{len(pending)} object(s) needed from {series}")
        available: set[str] = set()
        if self.image_level is not False:
            result = self.peer.find("IMAGE", _image_keys(series.study_uid, series_uid, ""))
            listed = {text(m, "SOPInstanceUID") for m in result.matches}
            if result.ok and listed:
                self._image_level_works()
                available = listed
            elif self.image_level is None:
                why = f"status 0x{result.status:04X}" if not result.ok else "no instances listed"
                self._image_level_unsupported(why)
        needed = {r.uid for r in pending}
        if self.image_level and not available >= needed:
            missing_here = [r for r in pending if r.uid not in available]
            for ref in missing_here:
                self.outcome(ref, "not_found", note=f"not in {series} on the PACS")
            pending = [r for r in pending if r.uid in available]
        if not pending:
            return
        if self.image_level and available > {r.uid for r in pending}:
            for ref in pending:
                self.progress(f"  retrieving {ref.describe()} (IMAGE level)")
                self.retrieve("IMAGE", series.study_uid, series_uid, ref.uid)
            level = "IMAGE"
        elif series_uid not in self.series_done:
            # Every instance is needed (or the PACS answers series level only).
            self.retrieve_series(series)
            level = "SERIES"
        else:
            level = "SERIES"
        for ref in pending:
            if self.arrived(ref.uid):
                self.outcome(ref, "found", series_uid=series_uid, level=level)
            else:
                self.outcome(ref, "not_found", note=f"{series} retrieved; the object was not in it")

    def resolve_unlocated(self, ref: _Ref) -> None:
        """An object whose series is unknown: by UID if possible, else candidate series."""
        if self.arrived(ref.uid):
            self.outcome(ref, "found", note="arrived earlier")
            return
        self.progress(f"looking for {ref.describe()}")
        if self.image_level is not False:
            study = ref.study_uid if is_safe_uid(ref.study_uid) else ""
            result = self.peer.find("IMAGE", _image_keys(study, "", ref.uid))
            for match in result.matches if result.ok else []:
                if self._retrieve_match(ref, match):
                    return
        candidates = self.candidates(ref)
        kinds = "/".join(sorted(ROLE_MODALITIES.get(ref.ref.expected, ()))) or "any"
        where = ", ".join(ref.studies()) or "?"
        if not candidates:
            self.outcome(ref, "not_found", note=f"no {kinds} series in study {where} on the PACS")
            return
        if self.image_level is not False:
            for series in candidates:
                keys = _image_keys(series.study_uid, series.series_uid, ref.uid)
                result = self.peer.find("IMAGE", keys)
                if not result.ok:
                    self._image_level_unsupported(f"status 0x{result.status:04X}")
                    break
                if any(self._retrieve_match(ref, m) for m in result.matches):
                    return
                if self.image_level is None and not self.probe_image_level(series):
                    break
            if self.image_level:
                self.outcome(ref, "not_found", note=f"in none of {len(candidates)} {kinds} series")
                return
        self.progress(
            f"  series-level search: {len(candidates)} {kinds} series in study {where}, "
            "smallest first, stopping when it arrives"
        )
        tried = 0
        for series in candidates:
            if series.series_uid in self.series_done:
                continue
            tried += 1
            self.retrieve_series(series)
            if self.arrived(ref.uid):
                self.outcome(ref, "found", series_uid=series.series_uid, level="SERIES")
                return
            self.progress(f"  {ref.uid} was not in it")
        self.outcome(ref, "not_found", note=f"retrieved {tried} {kinds} series; in none of them")

    def _retrieve_match(self, ref: _Ref, match: Dataset) -> bool:
        if text(match, "SOPInstanceUID") != ref.uid:
            return False
        study, series = text(match, "StudyInstanceUID"), text(match, "SeriesInstanceUID")
        if not (is_safe_uid(study) and is_safe_uid(series)):
            return False
        self._image_level_works()
        self.progress(f"  found in series {series}; retrieving it alone (IMAGE level)")
        self.retrieve("IMAGE", study, series, ref.uid)
        if self.arrived(ref.uid):
            self.outcome(ref, "found", series_uid=series, level="IMAGE")
        else:
            self.outcome(ref, "not_found", note=f"listed in series {series} but not delivered")
        return True

    def resolve_series_ref(self, ref: _Ref) -> None:
        """A series named without an instance list: the whole series is what is needed."""
        series = self.locate_series(ref.uid, ref.studies())
        if series is None:
            self.outcome(ref, "not_found", note="series not on the PACS")
            return
        if series.series_uid not in self.series_done:
            self.retrieve_series(series)
        self.outcome(ref, "found", series_uid=series.series_uid, level="SERIES")

    def resolve_study_ref(self, ref: _Ref) -> None:
        """The plan names no structure set: list (and optionally retrieve) the study's RTSTRUCTs."""
        if ref.ref.expected != "structure_set":
            self.outcome(ref, "skipped", note="study-level reference; nothing specific to fetch")
            return
        series = [s for s in self.list_series(ref.uid) if s.modality == "RTSTRUCT"]
        self.progress(
            f"plan {ref.ref.referenced_by} names no structure set; "
            f"{len(series)} RTSTRUCT series in its study {ref.uid}"
        )
        if self.options.candidates:
            for info in series:
                if info.series_uid not in self.series_done:
                    self.retrieve_series(info)
        self.outcome(ref, "candidates", candidates=series)


def _series_keys(study_uid: str, series_uid: str) -> dict[str, str]:
    return {
        "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": series_uid,
        "Modality": "",
        "SeriesDescription": "",
        "NumberOfSeriesRelatedInstances": "",
    }


def _image_keys(study_uid: str, series_uid: str, sop_uid: str) -> dict[str, str]:
    return {
        "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": series_uid,
        "SOPInstanceUID": sop_uid,
        "SOPClassUID": "",
    }


def _series_info(match: Dataset) -> SeriesInfo | None:
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


def _refs_for(index: Path, plans: Sequence[str], attempted: set[tuple[str, str]]) -> list[_Ref]:
    reader = IndexReader(index)
    try:
        refs: dict[tuple[str, str], _Ref] = {}
        for plan in plans:
            for missing in graph.package(reader, plan).missing:
                key = (missing.level.value, missing.uid)
                if key in attempted or key in refs:
                    continue
                source = reader.instance(missing.referenced_by)
                context = source.study_uid if source is not None else ""
                refs[key] = _Ref(
                    missing,
                    study_uid=missing.study_uid if is_safe_uid(missing.study_uid) else "",
                    context_study=context if is_safe_uid(context) else "",
                )
        return list(refs.values())
    finally:
        reader.close()


def fetch(
    pacs: PacsAddress,
    plan_uids: Sequence[str] | None,
    options: FetchOptions,
    progress: ProgressFn = stderr_progress,
) -> FetchReport:
    """Retrieve what the plans (None: every plan with something missing) miss, then index it.

    Raises PacsError when the PACS cannot be reached or refuses us, and the
    index errors of IndexReader/IndexWriter; a missing object the PACS does
    not have is an outcome, not an error.
    """
    plans = plans_to_fetch(options.index, plan_uids)
    report = FetchReport(plans=plans)
    report.still_missing = missing_for(options.index, plans)
    if not report.still_missing or report.complete:
        progress("nothing is missing; the PACS was not asked")
        return report
    options.store.mkdir(parents=True, exist_ok=True)
    collector = Collector()
    writer = StoreWriter(options.store, layout=options.layout, on_stored=collector.add)
    mover = _MoveTarget(options, pacs, collector)
    attempted: set[tuple[str, str]] = set()
    with contextlib.ExitStack() as stack:
        stack.callback(mover.stop)
        progress(f"asking {pacs} as {options.our_ae}")
        peer = stack.enter_context(
            Peer(pacs, our_ae=options.our_ae, writer=writer, timeout=options.timeout)
        )
        job = _Job(peer, options, collector, mover, report, progress)
        for round_number in range(1, options.max_rounds + 1):
            refs = _refs_for(options.index, plans, attempted)
            if not refs:
                break
            attempted.update((r.ref.level.value, r.uid) for r in refs)
            progress(f"round {round_number}: {len(refs)} missing reference(s) to look for")
            mark = len(collector)
            job.reader = IndexReader(options.index)
            try:
                job.resolve(refs)
            finally:
                job.reader.close()
                job.reader = None
            arrived = collector.since(mark)
            if not arrived:
                break
            fresh = sum(not s.duplicate for s in arrived)
            progress(f"indexing {fresh} new file(s) in {options.store}")
            index_store(options.index, options.store)
    report.stored = collector.items()
    report.still_missing = missing_for(options.index, plans)
    return report


def index_store(index: Path, store: Path) -> None:
    """Bring the index level with the store folder (the daemon may also be watching it)."""
    writer = IndexWriter(index)
    try:
        reconcile(writer, [store], workers=1)
    finally:
        writer.close()
