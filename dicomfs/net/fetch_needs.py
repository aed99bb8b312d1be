"""What a fetch asks for: the plans' missing references, read from the index as needs.

Each round of a fetch starts here: which plans, what each still misses
(graph.MissingRef), and for every missing object the studies where it may
be searched (the one the reference names, and the one of the referencing
object) and the modalities its role leads one to expect. Only the index is
read; nothing here talks to the PACS.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dicomfs.dicom.records import is_safe_uid
from dicomfs.errors import NotAPlanError
from dicomfs.index import IndexReader, graph

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
    "registered_image": frozenset({"CT", "MR", "PT", "NM", "US", "CR", "DX"}),
    "registration": frozenset({"REG"}),
    "definition_source": frozenset({"SEG", "RTSTRUCT", "FID"}),
}


@dataclass(frozen=True, slots=True)
class Need:
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

    @property
    def modalities(self) -> frozenset[str]:
        """The modalities its role leads one to expect (empty: no idea)."""
        return ROLE_MODALITIES.get(self.ref.expected, frozenset())

    def kinds(self) -> str:
        """The expected modalities as the progress lines name them ("any" when unknown)."""
        return "/".join(sorted(self.modalities)) or "any"


def plans_to_fetch(index: Path | str, plan_uids: Sequence[str] | None) -> list[str]:
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


def missing_for(index: Path | str, plans: Iterable[str]) -> dict[str, list[graph.MissingRef]]:
    """What each plan's package misses right now, per plan."""
    reader = IndexReader(index)
    try:
        return {plan: graph.package(reader, plan).missing for plan in plans}
    finally:
        reader.close()


def needs_for(
    index: Path | str, plans: Sequence[str], attempted: set[tuple[str, str]]
) -> list[Need]:
    """The missing references of ``plans`` not yet looked for, once each across plans.

    ``attempted`` holds (level, UID) of what earlier rounds looked for: a
    reference the PACS did not satisfy then is not asked for again.
    """
    reader = IndexReader(index)
    try:
        needs: dict[tuple[str, str], Need] = {}
        for plan in plans:
            for missing in graph.package(reader, plan).missing:
                key = (missing.level.value, missing.uid)
                if key in attempted or key in needs:
                    continue
                source = reader.instance(missing.referenced_by)
                context = source.study_uid if source is not None else ""
                needs[key] = Need(
                    missing,
                    study_uid=missing.study_uid if is_safe_uid(missing.study_uid) else "",
                    context_study=context if is_safe_uid(context) else "",
                )
        return list(needs.values())
    finally:
        reader.close()
