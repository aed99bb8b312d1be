"""One round of a fetch: for each need, decide where to look and at which level, and record why.

Needs whose series the reference names are looked for in that series only
(a whole series when every instance is needed or the PACS answers series
level only, single objects otherwise); needs with no series are found by
UID where the PACS answers IMAGE level, else by retrieving the candidate
series of the expected modality, smallest first, until the UID arrives.
Every need ends as one :class:`~dicomfs.net.fetch_records.Outcome`. The
PACS is asked through a :class:`~dicomfs.net.fetch_session.PacsSession`;
the index is only read, to skip series already complete locally.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset

from dicomfs.dicom.records import Level, is_safe_uid
from dicomfs.index import IndexReader
from dicomfs.net.fetch_needs import Need
from dicomfs.net.fetch_records import Outcome, SeriesInfo
from dicomfs.net.fetch_session import PacsSession
from dicomfs.net.qr import text


class Resolver:
    """Resolves one round's needs through ``session``, reading the index through ``reader``."""

    def __init__(self, session: PacsSession, reader: IndexReader) -> None:
        self.session = session
        self.reader = reader

    # -- what is known -------------------------------------------------

    def local_count(self, series_uid: str) -> int:
        return len(self.reader.series_instances(series_uid))

    def outcome(
        self,
        need: Need,
        state: str,
        *,
        series_uid: str = "",
        level: str = "",
        note: str = "",
        candidates: Sequence[SeriesInfo] = (),
    ) -> None:
        self.session.report.outcomes.append(
            Outcome(need.ref, state, series_uid, level, note, list(candidates))
        )

    def candidates(self, need: Need) -> list[SeriesInfo]:
        """Series that may hold ``need``: expected modality, not already complete locally."""
        modalities = need.modalities
        found: list[SeriesInfo] = []
        for study in need.studies():
            for info in self.session.list_series(study):
                if modalities and info.modality not in modalities:
                    continue
                if info.count == 0:
                    continue
                if info.count is not None and self.local_count(info.series_uid) >= info.count:
                    continue  # every instance is already indexed: the UID is not in it
                found.append(info)
        found.sort(key=lambda s: (s.count is None, s.count or 0, s.series_uid))
        return found

    # -- resolving missing references ----------------------------------

    def resolve(self, needs: Sequence[Need]) -> None:
        """Instances grouped by named series first, then unlocated ones, then series/study refs."""
        by_series: dict[str, list[Need]] = {}
        unknown: list[Need] = []
        for need in needs:
            level = need.ref.level
            if not is_safe_uid(need.uid):
                self.outcome(need, "skipped", note="not a valid UID; never sent in a query")
            elif level is Level.INSTANCE and is_safe_uid(need.ref.series_uid):
                by_series.setdefault(need.ref.series_uid, []).append(need)
            elif level is Level.INSTANCE:
                unknown.append(need)
            elif level not in (Level.SERIES, Level.STUDY):
                self.outcome(need, "skipped", note=f"{level.value}-level reference")
        for series_uid, group in by_series.items():
            self.resolve_in_series(series_uid, group)
        for need in unknown:
            self.resolve_unlocated(need)
        for need in needs:
            if is_safe_uid(need.uid) and need.ref.level is Level.SERIES:
                self.resolve_series_ref(need)
            elif is_safe_uid(need.uid) and need.ref.level is Level.STUDY:
                self.resolve_study_ref(need)

    def resolve_in_series(self, series_uid: str, needs: list[Need]) -> None:
        """Objects whose series the reference names: look only there."""
        session = self.session
        pending = [n for n in needs if not session.arrived(n.uid)]
        for need in needs:
            if need not in pending:
                self.outcome(need, "found", series_uid=series_uid, note="arrived earlier")
        if not pending:
            return
        studies = list(dict.fromkeys(s for n in pending for s in n.studies()))
        series = session.locate_series(series_uid, studies)
        if series is None:
            session.progress(f"series {series_uid} ({len(pending)} needed): not on the PACS")
            for need in pending:
                self.outcome(need, "not_found", note=f"series {series_uid} is not on the PACS")
            return
        session.progress(f"{len(pending)} object(s) needed from {series}")
        available: set[str] = set()
        if session.image_level is not False:
            result = session.find_images(series.study_uid, series_uid, "")
            listed = {text(m, "SOPInstanceUID") for m in result.matches}
            if result.ok and listed:
                session.image_level_works()
                available = listed
            elif session.image_level is None:
                why = f"status 0x{result.status:04X}" if not result.ok else "no instances listed"
                session.image_level_unsupported(why)
        needed = {n.uid for n in pending}
        if session.image_level and not available >= needed:
            missing_here = [n for n in pending if n.uid not in available]
            for need in missing_here:
                self.outcome(need, "not_found", note=f"not in {series} on the PACS")
            pending = [n for n in pending if n.uid in available]
        if not pending:
            return
        if session.image_level and available > {n.uid for n in pending}:
            for need in pending:
                session.progress(f"  retrieving {need.describe()} (IMAGE level)")
                session.retrieve("IMAGE", series.study_uid, series_uid, need.uid)
            level = "IMAGE"
        elif series_uid not in session.series_done:
            # Every instance is needed (or the PACS answers series level only).
            session.retrieve_series(series)
            level = "SERIES"
        else:
            level = "SERIES"
        for need in pending:
            if session.arrived(need.uid):
                self.outcome(need, "found", series_uid=series_uid, level=level)
            else:
                note = f"{series} retrieved; the object was not in it"
                self.outcome(need, "not_found", note=note)

    def resolve_unlocated(self, need: Need) -> None:
        """An object whose series is unknown: by UID if possible, else candidate series."""
        session = self.session
        if session.arrived(need.uid):
            self.outcome(need, "found", note="arrived earlier")
            return
        session.progress(f"looking for {need.describe()}")
        if session.image_level is not False:
            study = need.study_uid if is_safe_uid(need.study_uid) else ""
            result = session.find_images(study, "", need.uid)
            for match in result.matches if result.ok else []:
                if self._retrieve_match(need, match):
                    return
        candidates = self.candidates(need)
        kinds = need.kinds()
        where = ", ".join(need.studies()) or "?"
        if not candidates:
            self.outcome(need, "not_found", note=f"no {kinds} series in study {where} on the PACS")
            return
        if session.image_level is not False:
            for series in candidates:
                result = session.find_images(series.study_uid, series.series_uid, need.uid)
                if not result.ok:
                    session.image_level_unsupported(f"status 0x{result.status:04X}")
                    break
                if any(self._retrieve_match(need, m) for m in result.matches):
                    return
                if session.image_level is None and not session.probe_image_level(series):
                    break
            if session.image_level:
                self.outcome(need, "not_found", note=f"in none of {len(candidates)} {kinds} series")
                return
        session.progress(
            f"  series-level search: {len(candidates)} {kinds} series in study {where}, "
            "smallest first, stopping when it arrives"
        )
        tried = 0
        for series in candidates:
            if series.series_uid in session.series_done:
                continue
            tried += 1
            session.retrieve_series(series)
            if session.arrived(need.uid):
                self.outcome(need, "found", series_uid=series.series_uid, level="SERIES")
                return
            session.progress(f"  {need.uid} was not in it")
        self.outcome(need, "not_found", note=f"retrieved {tried} {kinds} series; in none of them")

    def _retrieve_match(self, need: Need, match: Dataset) -> bool:
        """Retrieve ``need`` alone if an IMAGE-level answer lists it; False when it does not."""
        if text(match, "SOPInstanceUID") != need.uid:
            return False
        study, series = text(match, "StudyInstanceUID"), text(match, "SeriesInstanceUID")
        if not (is_safe_uid(study) and is_safe_uid(series)):
            return False
        session = self.session
        session.image_level_works()
        session.progress(f"  found in series {series}; retrieving it alone (IMAGE level)")
        session.retrieve("IMAGE", study, series, need.uid)
        if session.arrived(need.uid):
            self.outcome(need, "found", series_uid=series, level="IMAGE")
        else:
            self.outcome(need, "not_found", note=f"listed in series {series} but not delivered")
        return True

    def resolve_series_ref(self, need: Need) -> None:
        """A series named without an instance list: the whole series is what is needed."""
        series = self.session.locate_series(need.uid, need.studies())
        if series is None:
            self.outcome(need, "not_found", note="series not on the PACS")
            return
        if series.series_uid not in self.session.series_done:
            self.session.retrieve_series(series)
        self.outcome(need, "found", series_uid=series.series_uid, level="SERIES")

    def resolve_study_ref(self, need: Need) -> None:
        """The plan names no structure set: list (and optionally retrieve) the study's RTSTRUCTs."""
        if need.ref.expected != "structure_set":
            self.outcome(need, "skipped", note="study-level reference; nothing specific to fetch")
            return
        series = [s for s in self.session.list_series(need.uid) if s.modality == "RTSTRUCT"]
        self.session.progress(
            f"plan {need.ref.referenced_by} names no structure set; "
            f"{len(series)} RTSTRUCT series in its study {need.uid}"
        )
        if self.session.options.candidates:
            for info in series:
                if info.series_uid not in self.session.series_done:
                    self.session.retrieve_series(info)
        self.outcome(need, "candidates", candidates=series)
