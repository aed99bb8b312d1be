"""The ``patients/`` tree: the same files, reached by patient, plan label and study (issue 10).

::

    patients/<PatientID>[ <Family^Given>]/
        plans/<RTPlanLabel> <YYYY-MM-DD> <ApprovalStatus>/   same content as plans/<uid>/
        studies/<YYYY-MM-DD> <StudyDescription>/
            <Modality> <SeriesNumber> <SeriesDescription>/<Modality>-<InstanceNumber>.dcm

Names come from ``view.human`` (safe on Linux and Windows, unique in their
folder). A name cannot be turned back into a query (it was cleaned, cut,
maybe suffixed), so a path is resolved by building its parent folder's
listing, one query per level, cached like every listing of the tree; a
lookup deep in the tree costs one cached dictionary access per level.

The tree shows patient data, so it exists only when the ``names`` setting
is ``id`` or ``name`` (``tree.View``). While an upgraded index has not read
every file's details yet (``IndexReader.details_pending``), the whole tree
answers "rebuilding" rather than placeholders where names will be.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from dicomfs.dicom.records import is_safe_uid
from dicomfs.index import IndexReader, InstanceRow, ListingRow, people
from dicomfs.view import human
from dicomfs.view.cache import TTLCache
from dicomfs.view.nodes import DirNode, FileNode, Node, NotFound, Rebuilding

PATIENT_FOLDERS = ("plans", "studies")
_T = TypeVar("_T")


class Host(Protocol):
    """What the tree needs of ``tree.View``: its reader, cache and node makers."""

    @property
    def reader(self) -> IndexReader: ...

    @property
    def cache(self) -> TTLCache: ...

    def make_dir(self, name: str, witness: str | None = None) -> DirNode: ...

    def make_file(self, name: str, inst: InstanceRow | ListingRow) -> FileNode: ...

    def plan_node(self, plan: InstanceRow, rest: list[str]) -> Node: ...

    def plan_listing(self, plan: InstanceRow, rest: list[str]) -> list[tuple[str, Node]]: ...


class PatientsTree:
    """Resolves and lists paths under ``patients/``; ``with_names`` adds PatientName."""

    def __init__(self, host: Host, *, with_names: bool) -> None:
        self._host = host
        self._with_names = with_names

    # -- public -------------------------------------------------------------

    def resolve(self, rest: list[str]) -> Node:
        """The node at ``patients/<rest>``; ``rest`` is not empty."""
        self._check_ready()
        patient = self._patients().get(rest[0])
        if patient is None:
            raise NotFound(rest[0])
        if len(rest) == 1:
            return self._host.make_dir(rest[0], patient.witness)
        folder, below = rest[1], rest[2:]
        if folder == "plans":
            return self._resolve_plan(patient.patient_id, below)
        if folder == "studies":
            return self._resolve_study(patient.patient_id, below)
        raise NotFound(folder)

    def listing(self, rest: list[str]) -> list[tuple[str, Node]]:
        """The entries of the folder ``patients/<rest>`` (already resolved as a folder)."""
        self._check_ready()
        make_dir = self._host.make_dir
        if not rest:
            return [(name, make_dir(name, p.witness)) for name, p in self._patients().items()]
        patient = self._patients()[rest[0]]
        pid = patient.patient_id
        if len(rest) == 1:
            return [(name, make_dir(name, patient.witness)) for name in PATIENT_FOLDERS]
        if rest[1] == "plans":
            plans = self._plans(pid)
            if len(rest) == 2:
                return [(n, make_dir(n, p.file.path)) for n, p in plans.items()]
            return self._host.plan_listing(plans[rest[2]], rest[3:])
        studies = self._studies(pid)
        if len(rest) == 2:
            return [(n, make_dir(n, s.witness)) for n, s in studies.items()]
        series = self._series(pid, studies[rest[2]].study_uid)
        if len(rest) == 3:
            return [(n, make_dir(n, s.witness)) for n, s in series.items()]
        members = self._members(pid, studies[rest[2]].study_uid, series[rest[3]].series_uid)
        return [(n, self._host.make_file(n, row)) for n, row in members.items()]

    def path_of(
        self,
        patient_id: str,
        *,
        study_uid: str | None = None,
        series_uid: str | None = None,
        sop_uid: str | None = None,
        plan_uid: str | None = None,
    ) -> str | None:
        """The path under the mount of a patient, or of one of its studies, series, files or plans.

        None when it has no folder here (e.g. a plan whose UID may not be a
        name). Names come from the same cached listings the tree answers from.
        """
        self._check_ready()
        folder = self._by_id().get(patient_id)
        if folder is None:
            return None
        base = f"patients/{folder}"
        if plan_uid is not None:
            plan = _name_of(self._plans(patient_id), lambda p: p.sop_uid == plan_uid)
            return None if plan is None else f"{base}/plans/{plan}"
        if study_uid is None:
            return base
        studies = self._studies(patient_id)
        study = _name_of(studies, lambda s: s.study_uid == study_uid)
        if study is None or series_uid is None:
            return None if study is None else f"{base}/studies/{study}"
        series = _name_of(self._series(patient_id, study_uid), lambda s: s.series_uid == series_uid)
        if series is None or sop_uid is None:
            return None if series is None else f"{base}/studies/{study}/{series}"
        members = self._members(patient_id, study_uid, series_uid)
        member = _name_of(members, lambda m: m.sop_uid == sop_uid)
        return None if member is None else f"{base}/studies/{study}/{series}/{member}"

    # -- resolution ---------------------------------------------------------

    def _resolve_plan(self, pid: str, rest: list[str]) -> Node:
        if not rest:
            return self._host.make_dir("plans")
        plan = self._plans(pid).get(rest[0])
        if plan is None:
            raise NotFound(rest[0])
        if len(rest) == 1:
            return self._host.make_dir(rest[0], plan.file.path)
        return self._host.plan_node(plan, rest[1:])

    def _resolve_study(self, pid: str, rest: list[str]) -> Node:
        if not rest:
            return self._host.make_dir("studies")
        study = self._studies(pid).get(rest[0])
        if study is None:
            raise NotFound(rest[0])
        if len(rest) == 1:
            return self._host.make_dir(rest[0], study.witness)
        series = self._series(pid, study.study_uid).get(rest[1])
        if series is None:
            raise NotFound(rest[1])
        if len(rest) == 2:
            return self._host.make_dir(rest[1], series.witness)
        if len(rest) == 3:
            member = self._members(pid, study.study_uid, series.series_uid).get(rest[2])
            if member is not None:
                return self._host.make_file(rest[2], member)
        raise NotFound("/".join(rest))

    def _check_ready(self) -> None:
        if self._host.reader.details_pending():
            raise Rebuilding("the index is reading every file's details again: try again")

    # -- folder contents, cached ----------------------------------------------

    def _patients(self) -> dict[str, people.PatientRow]:
        def build() -> dict[str, people.PatientRow]:
            names = self._with_names
            return human.unique(
                (human.patient_folder(p.patient_id, p.patient_name, names), p.patient_id, p)
                for p in people.patients(self._host.reader)
            )

        return self._host.cache.get(("patients", "list"), build)

    def plan_paths(self) -> dict[str, str]:
        """{plan UID: its folder under patients/} for every plan, from two queries."""
        by_patient: dict[str, list[people.PlanRow]] = {}
        for row in people.plans(self._host.reader):
            by_patient.setdefault(row.instance.patient_id, []).append(row)
        paths = {}
        for folder, patient in self._patients().items():
            for name, plan in _plan_names(by_patient.get(patient.patient_id, [])).items():
                paths[plan.sop_uid] = f"patients/{folder}/plans/{name}"
        return paths

    def _by_id(self) -> dict[str, str]:
        """{PatientID: its folder name}, from the cached listing of patients/."""

        def build() -> dict[str, str]:
            return {p.patient_id: name for name, p in self._patients().items()}

        return self._host.cache.get(("patients", "by-id"), build)

    # Cache keys start with what they hold: the values after it come from files,
    # and a series UID "series" must not find a listing of series.

    def _plans(self, pid: str) -> dict[str, InstanceRow]:
        def build() -> dict[str, InstanceRow]:
            return _plan_names(people.plans(self._host.reader, pid))

        return self._host.cache.get(("patients", "plans", pid), build)

    def _studies(self, pid: str) -> dict[str, people.StudyRow]:
        def build() -> dict[str, people.StudyRow]:
            return human.unique(
                (human.study_folder(s.study_date, s.study_description), s.study_uid, s)
                for s in people.studies(self._host.reader, pid)
            )

        return self._host.cache.get(("patients", "studies", pid), build)

    def _series(self, pid: str, study_uid: str) -> dict[str, people.SeriesRow]:
        def build() -> dict[str, people.SeriesRow]:
            rows = people.series(self._host.reader, pid, study_uid)
            return human.unique(
                (
                    human.series_folder(s.modality, s.series_number, s.series_description),
                    s.series_uid,
                    s,
                )
                for s in rows
            )

        return self._host.cache.get(("patients", "series", pid, study_uid), build)

    def _members(self, pid: str, study_uid: str, series_uid: str) -> dict[str, ListingRow]:
        def build() -> dict[str, ListingRow]:
            rows = people.members(self._host.reader, pid, study_uid, series_uid)
            return human.unique(
                (
                    (human.member_file(m.row.modality, m.instance_number), m.row.sop_uid, m.row)
                    for m in rows
                ),
                extension=".dcm",
            )

        return self._host.cache.get(("patients", "members", pid, study_uid, series_uid), build)


def _plan_names(rows: list[people.PlanRow]) -> dict[str, InstanceRow]:
    """The plan folders of one patient (``rows``: all of that patient's plans)."""
    return human.unique(
        (
            human.plan_folder(p.instance.label, p.plan_date, p.approval_status),
            p.instance.sop_uid,
            p.instance,
        )
        for p in rows
        if is_safe_uid(p.instance.sop_uid)
    )


def _name_of(entries: Mapping[str, _T], match: Callable[[_T], bool]) -> str | None:
    return next((name for name, item in entries.items() if match(item)), None)
