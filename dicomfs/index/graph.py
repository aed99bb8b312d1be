"""Graph questions answered from the index: forward, reverse, plan package, missing.

The plan package follows design.md ("references/") and dicom-references.md
section 3.3:

1. direct forward references of the plan (structure set, reference images,
   doses it names; plans it names are included but not expanded);
2. forward references of those, transitively and cycle-safe: an instance
   reference resolves to that instance; a series reference without an
   instance list resolves to every indexed instance of the series; series,
   study and frame-of-reference nodes are leaves;
3. the plan itself, and exactly one hop of reverse references to the plan (doses, RT images,
   records, other plans), plus the two allowed second hops (RECORD doses
   that name those records, verification images the records name) and the
   forward needs of the doses (DVH structure set, registrations).

Never by series or frame of reference alone: objects found only through a
shared frame of reference are candidates (``inferred``), reported in the
manifest and never mixed into ``references/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from dicomfs.dicom.records import Edge, Level, Role
from dicomfs.errors import UnknownUidError
from dicomfs.index import IndexReader, InstanceRow

# Objects whose own references a package follows. Images and plans other
# than the root are leaves: a planning CT is referenced by everything of the
# patient, and related plans are listed, not expanded.
STRUCTURE_SET_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
DOSE_CLASS = "1.2.840.10008.5.1.4.1.1.481.2"
RT_IMAGE_CLASS = "1.2.840.10008.5.1.4.1.1.481.1"
RECORD_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.481.4",
        "1.2.840.10008.5.1.4.1.1.481.6",
        "1.2.840.10008.5.1.4.1.1.481.7",
        "1.2.840.10008.5.1.4.1.1.481.9",
    }
)
SEGMENTATION_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.66.4",
        "1.2.840.10008.5.1.4.1.1.66.5",
        "1.2.840.10008.5.1.4.1.1.66.7",
        "1.2.840.10008.5.1.4.1.1.66.8",
    }
)
EXPANDED_CLASSES = frozenset({STRUCTURE_SET_CLASS, DOSE_CLASS}) | SEGMENTATION_CLASSES

# Edges listed as related but never followed (dicom-references.md 3.2).
NOT_FOLLOWED_ROLES = frozenset({Role.PREDECESSOR})
# Members whose frame of reference is the plan's anatomy.
ANATOMY_ROLES = frozenset({Role.STRUCTURE_SET.value, Role.IMAGE.value, "series_member"})
# Plans that legitimately have no patient model (PS3.3 C.8.8.9 PlanIntent).
QA_PLAN_INTENTS = frozenset({"VERIFICATION", "MACHINE_QA"})
LEAF_LEVELS = frozenset({Level.STUDY, Level.FRAME_OF_REFERENCE})
MAX_MEMBERS = 20_000


class Provenance(StrEnum):
    EXPLICIT = "explicit"  # reached through stored references
    INFERRED = "inferred"  # reached only through a shared frame of reference


@dataclass(frozen=True, slots=True)
class Member:
    """One object in a package view, with how it was found."""

    instance: InstanceRow
    role: str
    attribute: str
    via: str
    direction: str  # "forward" | "reverse" | "frame_of_reference"
    provenance: Provenance = Provenance.EXPLICIT
    note: str = ""

    @property
    def sop_uid(self) -> str:
        return self.instance.sop_uid


@dataclass(frozen=True, slots=True)
class MissingRef:
    """A reference that does not resolve to an indexed object.

    ``study_uid``/``series_uid`` are where the referencing object says the
    target lives, so a user can retrieve exactly that series from a PACS.
    """

    level: Level
    uid: str
    expected: str
    referenced_by: str
    attribute: str
    study_uid: str = ""
    series_uid: str = ""


@dataclass(slots=True)
class Package:
    """The graph view of one root object (a plan, or any instance)."""

    root: InstanceRow
    references: list[Member] = field(default_factory=list)
    referenced_by: list[Member] = field(default_factory=list)
    registrations: list[Member] = field(default_factory=list)
    related: list[Member] = field(default_factory=list)
    candidates: list[Member] = field(default_factory=list)
    missing: list[MissingRef] = field(default_factory=list)
    truncated: bool = False


def _member_role(inst: InstanceRow, edge_role: str) -> str:
    """Name a reverse hit by what it is, since the edge role is always "plan"."""
    if inst.sop_class == DOSE_CLASS:
        return "dose"
    if inst.sop_class == RT_IMAGE_CLASS:
        return "rt_image"
    if inst.sop_class in RECORD_CLASSES:
        return "treatment_record"
    if inst.is_plan:
        return "related_plan"
    return edge_role


class _Builder:
    """One traversal; keeps the visited sets so every UID is added once."""

    def __init__(self, reader: IndexReader, root: InstanceRow) -> None:
        self.reader = reader
        self.package = Package(root=root)
        self.seen: set[str] = {root.sop_uid}
        self.expanded: set[str] = set()
        self.missing_keys: set[tuple[str, str]] = set()
        self.series_done: set[str] = set()
        self._edges: dict[str, list[Edge]] = {}

    def edges(self, sop_uid: str) -> list[Edge]:
        """The forward references of ``sop_uid``, asked of the index once per package.

        The root's are read by three steps and a structure set's by two; on a
        PostgreSQL index each asking is a round trip, and a structure set's are
        hundreds of rows.
        """
        found = self._edges.get(sop_uid)
        if found is None:
            found = self._edges[sop_uid] = [row.edge for row in self.reader.forward_edges(sop_uid)]
        return found

    def add(self, member: Member, into: list[Member]) -> bool:
        if member.sop_uid in self.seen:
            return False
        if len(self.seen) >= MAX_MEMBERS:
            self.package.truncated = True
            return False
        self.seen.add(member.sop_uid)
        into.append(member)
        return True

    def note_missing(self, src_uid: str, edge: Edge) -> None:
        key = (edge.level.value, edge.target_uid)
        if key in self.missing_keys:
            return
        self.missing_keys.add(key)
        self.package.missing.append(
            MissingRef(
                level=edge.level,
                uid=edge.target_uid,
                expected=edge.role.value,
                referenced_by=src_uid,
                attribute=edge.path,
                study_uid=edge.study_uid,
                series_uid=edge.series_uid,
            )
        )

    def expand_forward(self, src: InstanceRow, *, follow: bool = True) -> None:
        """Add the forward references of ``src``; recurse into expandable targets."""
        if src.sop_uid in self.expanded:
            return
        self.expanded.add(src.sop_uid)
        edges = self.edges(src.sop_uid)
        targets = self.reader.instances(e.target_uid for e in edges if e.level is Level.INSTANCE)
        to_expand: list[InstanceRow] = []
        for edge in edges:
            if edge.level in LEAF_LEVELS:
                continue
            if edge.level is Level.SERIES:
                self._add_series(src, edge)
                continue
            target = targets.get(edge.target_uid)
            if target is None:
                if edge.target_uid not in self.seen:
                    self.note_missing(src.sop_uid, edge)
                continue
            note = ""
            if edge.class_hint and edge.class_hint != target.sop_class:
                note = f"referenced as class {edge.class_hint}, indexed as {target.sop_class}"
            member = Member(target, edge.role.value, edge.path, src.sop_uid, "forward", note=note)
            if edge.role in NOT_FOLLOWED_ROLES:
                self.add(member, self.package.related)
                continue
            added = self.add(member, self.package.references)
            if added and follow and target.sop_class in EXPANDED_CLASSES and not target.is_plan:
                to_expand.append(target)
        for target in to_expand:
            self.expand_forward(target)

    def _add_series(self, src: InstanceRow, edge: Edge) -> None:
        """A series named without an instance list stands for all its instances."""
        if edge.qualifier("instances_listed") == "yes" or edge.target_uid in self.series_done:
            return
        self.series_done.add(edge.target_uid)
        members = self.reader.series_instances(edge.target_uid)
        if not members:
            self.note_missing(src.sop_uid, edge)
            return
        for inst in members:
            self.add(
                Member(inst, "series_member", edge.path, src.sop_uid, "forward"),
                self.package.references,
            )

    def note_absent_structure_set(self) -> None:
        """A treatment plan that names no structure set still needs one.

        Real exports omit the reference (the Pinnacle sample in
        shared/testdata says TREATMENT_DEVICE yet was planned on a patient),
        so unless the plan is a QA/verification plan the package reports a
        study-level missing structure set: the user knows what to retrieve
        and from which study.
        """
        root = self.package.root
        if root.plan_intent in QA_PLAN_INTENTS:
            return
        if any(edge.role is Role.STRUCTURE_SET for edge in self.edges(root.sop_uid)):
            return
        self.package.missing.append(
            MissingRef(
                level=Level.STUDY,
                uid=root.study_uid,
                expected=Role.STRUCTURE_SET.value,
                referenced_by=root.sop_uid,
                attribute="ReferencedStructureSetSequence (absent)",
                study_uid=root.study_uid,
            )
        )

    def reverse_hop(self, *, into_references: bool) -> list[InstanceRow]:
        """One hop of reverse references to the root; returns the referencing objects."""
        root = self.package.root
        rows = self.reader.reverse_edges(root.sop_uid)
        sources = self.reader.instances(row.src_uid for row in rows)
        found: list[InstanceRow] = []
        listed: set[str] = set()
        for row in rows:
            src = sources.get(row.src_uid)
            if src is None or src.sop_uid in listed or src.sop_uid == root.sop_uid:
                continue
            listed.add(src.sop_uid)
            member = Member(
                src, _member_role(src, row.edge.role.value), row.edge.path, src.sop_uid, "reverse"
            )
            self.package.referenced_by.append(member)
            found.append(src)
            if into_references:
                self.add(member, self.package.references)
        return found

    def second_hops(self, hits: list[InstanceRow]) -> None:
        """The two allowed second hops, and the forward needs of reverse hits."""
        for hit in hits:
            if hit.sop_class in RECORD_CLASSES:
                for row in self.reader.reverse_edges(hit.sop_uid):
                    src = self.reader.instance(row.src_uid)
                    if src is not None and src.sop_class == DOSE_CLASS:
                        self.add(
                            Member(src, "record_dose", row.edge.path, hit.sop_uid, "reverse"),
                            self.package.references,
                        )
                self.expand_forward(hit, follow=False)
            elif hit.sop_class == DOSE_CLASS:
                self.expand_forward(hit, follow=False)

    def registrations(self) -> None:
        """Registrations touching the package's frames of reference, one hop."""
        pkg = self.package
        # The plan's own coordinate system and its anatomy's; related plans,
        # doses and RT images do not widen the set (a QA plan would pull in
        # the patient's registrations through the plan it verifies).
        frames = {pkg.root.for_uid} | {
            m.instance.for_uid for m in pkg.references if m.role in ANATOMY_ROLES
        }
        for edge in self.edges(pkg.root.sop_uid):
            if edge.level is Level.FRAME_OF_REFERENCE:
                frames.add(edge.target_uid)
        for member in pkg.references:
            if member.instance.sop_class == STRUCTURE_SET_CLASS:
                for edge in self.edges(member.sop_uid):
                    if edge.level is Level.FRAME_OF_REFERENCE:
                        frames.add(edge.target_uid)
        frames.discard("")
        if not frames:
            return
        for reg in self.reader.registrations(frames):
            edges = self.edges(reg.sop_uid)
            named = {reg.for_uid} | {
                e.target_uid for e in edges if e.level is Level.FRAME_OF_REFERENCE
            }
            named.discard("")
            if not named & frames:
                continue
            self.add(
                Member(
                    reg, "registration", "FrameOfReferenceUID", reg.sop_uid, "frame_of_reference"
                ),
                pkg.registrations,
            )
            image_uids = [e.target_uid for e in edges if e.level is Level.INSTANCE]
            for _uid, inst in sorted(self.reader.instances(image_uids).items()):
                self.add(
                    Member(
                        inst, "registered_image", "RegistrationSequence", reg.sop_uid, "forward"
                    ),
                    pkg.registrations,
                )
            for inst in self.reader.instances_on_frame_of_reference(named - frames):
                self.add(
                    Member(
                        inst,
                        "registered_image",
                        "FrameOfReferenceUID",
                        reg.sop_uid,
                        "frame_of_reference",
                        Provenance.INFERRED,
                    ),
                    pkg.registrations,
                )

    def candidates_by_frame(self) -> None:
        """No structure set resolved: offer same-FoR objects, never as members."""
        pkg = self.package
        if any(m.instance.sop_class == STRUCTURE_SET_CLASS for m in pkg.references):
            return
        if not pkg.root.for_uid:
            return
        for inst in self.reader.instances_on_frame_of_reference([pkg.root.for_uid]):
            if inst.sop_uid in self.seen or inst.is_plan:
                continue
            pkg.candidates.append(
                Member(
                    inst,
                    "candidate",
                    "FrameOfReferenceUID",
                    pkg.root.sop_uid,
                    "frame_of_reference",
                    Provenance.INFERRED,
                    note="same frame of reference as the plan; not referenced explicitly",
                )
            )


def resolve(reader: IndexReader, uid: str) -> InstanceRow:
    """The serving instance for ``uid`` or UnknownUidError."""
    inst = reader.instance(uid)
    if inst is None:
        raise UnknownUidError(f"{uid!r} is not an indexed SOP Instance UID")
    return inst


def package(reader: IndexReader, uid: str) -> Package:
    """The graph view of ``uid``: the full plan package for a plan, else forward closure."""
    root = resolve(reader, uid)
    builder = _Builder(reader, root)
    if root.is_plan:
        # The package holds the plan too (dicom-references.md 3.3: N = {P}), so
        # a planning system pointed at references/ imports a complete set.
        builder.package.references.append(Member(root, "plan", "", root.sop_uid, "self"))
    builder.expand_forward(root)
    hits = builder.reverse_hop(into_references=root.is_plan)
    if root.is_plan:
        builder.note_absent_structure_set()
        builder.second_hops(hits)
        builder.registrations()
        builder.candidates_by_frame()
    return builder.package


def missing(reader: IndexReader, uid: str) -> list[MissingRef]:
    return package(reader, uid).missing


def forward(reader: IndexReader, uid: str) -> list[Edge]:
    resolve(reader, uid)
    return [row.edge for row in reader.forward_edges(uid)]


def reverse(reader: IndexReader, uid: str) -> list[tuple[str, Edge]]:
    """Who names ``uid``. Works for UIDs that are not indexed too (a missing target)."""
    return [(row.src_uid, row.edge) for row in reader.reverse_edges(uid)]
