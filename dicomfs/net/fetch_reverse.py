"""The reverse half of a fetch: find on the PACS the objects that name the plan.

A plan does not name most of its doses, RT images and treatment records:
they name it (dicom-references.md 3.3, the reverse hop of the package), and
no C-FIND key matches "objects whose ReferencedRTPlanSequence holds this
UID". So they can only be found by looking: retrieve the objects of the
kinds that may name a plan (the RTDOSE, RTIMAGE, RTRECORD and RTPLAN
series, and the REG series that register the plan's anatomy), index them
like everything else, and let ``graph.package`` decide what belongs. What
does not belong stays indexed (it is a valid object of the patient) and the
summary says it was retrieved only to be looked at.

The search is bounded: only the plan's study and the studies of its
structure set and images (the same patient, as the index knows them),
never more than ``MAX_SERIES_PER_ROUND`` series per round, smallest first,
each series at most once per fetch and none already complete in the index.
Where the PACS answers IMAGE-level C-FIND only the instances not indexed
yet are retrieved; otherwise whole series. A registration the package
holds names the images it registers; those are needs like the forward
ones (``registration_needs``), resolved by ``fetch_resolve``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from pydicom.dataset import Dataset

from dicomfs.dicom.records import Level, is_safe_uid
from dicomfs.index import IndexReader, graph
from dicomfs.net.fetch_needs import Need
from dicomfs.net.fetch_records import FetchReport, SeriesInfo
from dicomfs.net.fetch_session import PacsSession
from dicomfs.net.qr import text

# Series of these modalities may hold objects that name a plan (or, for
# REG, register its anatomy); nothing else is retrieved to be looked at.
REVERSE_MODALITIES = frozenset({"RTDOSE", "RTIMAGE", "RTRECORD", "RTPLAN", "REG"})
MAX_SERIES_PER_ROUND = 32
# Package members whose studies are searched besides the plan's own.
SEARCHED_ROLES = graph.ANATOMY_ROLES


def search_studies(reader: IndexReader, plans: Iterable[str]) -> list[str]:
    """The plans' studies and those of their structure sets and images, same patient only."""
    studies: dict[str, None] = {}
    for plan in plans:
        root = reader.instance(plan)
        if root is None:
            continue
        members = [root] + [
            m.instance for m in graph.package(reader, plan).references if m.role in SEARCHED_ROLES
        ]
        for inst in members:
            if inst.patient_id == root.patient_id and is_safe_uid(inst.study_uid):
                studies.setdefault(inst.study_uid)
    return list(studies)


def registration_needs(
    index: Path | str, plans: Sequence[str], attempted: set[tuple[str, str]]
) -> list[Need]:
    """The images the packages' registrations name but the index does not hold yet.

    The package does not list them as missing (a registration is found by
    frame of reference, not named by the plan), yet a complete package holds
    them; ``attempted`` is shared with the forward needs.
    """
    reader = IndexReader(index)
    try:
        needs: dict[str, Need] = {}
        for plan in plans:
            for member in graph.package(reader, plan).registrations:
                if member.role != "registration":
                    continue
                edges = [r.edge for r in reader.forward_edges(member.sop_uid)]
                edges = [e for e in edges if e.level is Level.INSTANCE]
                known = reader.instances(e.target_uid for e in edges)
                for edge in edges:
                    uid = edge.target_uid
                    if uid in known or uid in needs or (Level.INSTANCE.value, uid) in attempted:
                        continue
                    ref = graph.MissingRef(
                        level=Level.INSTANCE,
                        uid=uid,
                        expected="registered_image",
                        referenced_by=member.sop_uid,
                        attribute=edge.path,
                        study_uid=edge.study_uid,
                        series_uid=edge.series_uid,
                    )
                    study = edge.study_uid if is_safe_uid(edge.study_uid) else ""
                    context = member.instance.study_uid
                    needs[uid] = Need(ref, study, context if is_safe_uid(context) else "")
        return list(needs.values())
    finally:
        reader.close()


class ReverseSearch:
    """Looks through the reverse-candidate series of the searched studies, round after round.

    Lives as long as the fetch, so a series is looked at once however many
    rounds name its study.
    """

    def __init__(self, session: PacsSession) -> None:
        self.session = session
        self.looked: set[str] = set()

    def candidates(self, reader: IndexReader, studies: Sequence[str]) -> list[SeriesInfo]:
        """Series that may hold objects naming the plan, not yet looked at or complete here."""
        found: list[SeriesInfo] = []
        for study in studies:
            for info in self.session.list_series(study):
                if info.modality not in REVERSE_MODALITIES or info.count == 0:
                    continue
                if info.series_uid in self.looked or info.series_uid in self.session.series_done:
                    continue
                local = len(reader.series_instances(info.series_uid))
                if info.count is not None and local >= info.count:
                    continue  # every instance is already indexed
                found.append(info)
        found.sort(key=lambda s: (s.count is None, s.count or 0, s.series_uid))
        return found

    def run(self, reader: IndexReader, studies: Sequence[str]) -> bool:
        """Look through one round's share of candidates; True when some are left for later."""
        candidates = self.candidates(reader, studies)
        if not candidates:
            return False
        batch = candidates[:MAX_SERIES_PER_ROUND]
        kinds = "/".join(sorted({s.modality for s in batch}))
        where = "1 study" if len(studies) == 1 else f"{len(studies)} studies"
        self.session.progress(
            f"reverse search: {len(batch)} {kinds} series in {where} may hold objects "
            "that name the plan; smallest first"
        )
        for series in batch:
            self.looked.add(series.series_uid)
            self.look_at(reader, series)
        left = len(candidates) - len(batch)
        if left:
            self.session.progress(f"reverse search: {left} more series left for the next round")
        return left > 0

    def look_at(self, reader: IndexReader, series: SeriesInfo) -> None:
        """Retrieve what ``series`` holds and the index does not: by instance if possible."""
        session = self.session
        if session.image_level is not False:
            result = session.find_images(series.study_uid, series.series_uid, "")
            listed = listed_instances(result.matches, series)
            if result.ok and (listed or session.image_level):
                if listed:
                    session.image_level_works()
                    self._retrieve_instances(reader, series, listed)
                return
            if session.image_level is None:
                why = f"status 0x{result.status:04X}" if not result.ok else "no instances listed"
                session.image_level_unsupported(why)
        session.retrieve_series(series)

    def _retrieve_instances(
        self, reader: IndexReader, series: SeriesInfo, listed: list[str]
    ) -> None:
        session = self.session
        known = reader.instances(listed)
        wanted = [uid for uid in listed if uid not in known and not session.arrived(uid)]
        if not wanted:
            session.progress(f"  {series}: every instance is indexed already")
        elif len(wanted) == len(listed):
            session.retrieve_series(series)
        else:
            session.progress(f"  {series}: {len(wanted)} instance(s) not indexed yet (IMAGE level)")
            for uid in wanted:
                session.retrieve("IMAGE", series.study_uid, series.series_uid, uid)


def listed_instances(matches: Iterable[Dataset], series: SeriesInfo) -> list[str]:
    """The SOP Instance UIDs an IMAGE-level answer lists for ``series`` (answers are untrusted)."""
    uids: dict[str, None] = {}
    for match in matches:
        uid, in_series = text(match, "SOPInstanceUID"), text(match, "SeriesInstanceUID")
        if is_safe_uid(uid) and in_series in ("", series.series_uid):
            uids.setdefault(uid)
    return list(uids)


def classify(
    index: Path | str, plans: Sequence[str], before: set[str], report: FetchReport
) -> None:
    """Sort what was retrieved: brought into a package by the reverse search, or only looked at.

    ``before`` holds the package members from before the fetch; objects a
    forward outcome accounts for are the forward half's and not listed again.
    """
    forward = {o.ref.uid for o in report.outcomes if o.state == "found"}
    roles: dict[str, str] = {}
    reader = IndexReader(index)
    try:
        for plan in plans:
            for member in package_members(reader, plan):
                roles.setdefault(member.sop_uid, member.role)
    finally:
        reader.close()
    seen: set[str] = set()
    for stored in report.stored:
        uid = stored.identity.sop_instance_uid
        if uid in seen:
            continue
        seen.add(uid)
        if uid not in roles:
            report.looked_at.append(stored)
        elif uid not in before and uid not in forward:
            report.reverse_found.append((roles[uid], stored))


def package_members(reader: IndexReader, plan: str) -> list[graph.Member]:
    """What a plan's package holds: references, reverse hits, registrations, related."""
    pkg = graph.package(reader, plan)
    return [*pkg.references, *pkg.referenced_by, *pkg.registrations, *pkg.related]


def member_uids(index: Path | str, plans: Sequence[str]) -> set[str]:
    reader = IndexReader(index)
    try:
        return {m.sop_uid for plan in plans for m in package_members(reader, plan)}
    finally:
        reader.close()
