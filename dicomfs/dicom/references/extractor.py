"""Edge building for one instance: the known paths' building blocks and the generic walk.

An :class:`Extractor` turns reference items into :class:`Edge` records and owns
the rules every path shares: no edge to the instance itself or to an empty
UID, one edge per (target, level, role, qualifiers), unsafe targets marked,
and coverage, so an element a known path has handled (emitted or not) is
never reported again as GENERIC by the walk. The walk then visits every
sequence in file order, down to :data:`MAX_WALK_DEPTH`, and picks up the
references no known path claimed (dicom-references.md section 3.1).

An object keeps at most ``limits.MAX_EDGES``
distinct edges: the next one stops all reading of the object and flags it
``edges_capped`` with the path of the first reference left out
(reliability.md D6). The walk goes depth first on a stack of item iterators,
so it holds one item per level, never a level's items.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from dicomfs.dicom.records import Edge, Level, Role, is_safe_uid
from dicomfs.dicom.references.limits import Reading
from dicomfs.dicom.references.node import Node
from dicomfs.dicom.references.raw import sequence_tags
from dicomfs.dicom.references.tags import (
    FOR_TAGS,
    REF_CLASS_UID,
    REF_FRAME_NUMBER,
    REF_IMAGE_SEQ,
    REF_INSTANCE_SEQ,
    REF_SEGMENT_NUMBER,
    REF_SERIES_SEQ,
    REF_SOP_SEQ,
    REF_SOP_UID,
    REF_STUDY_SEQ,
    RT_REF_STUDY_SEQ,
    SERIES_UID,
    STUDY_REFERENCE_CLASSES,
    STUDY_UID,
)

# Nesting depth the walkers follow. Real data stays below ~15 (SR content
# trees); anything deeper is cut and flagged "walk_truncated", never recursed.
MAX_WALK_DEPTH = 64

Qualifiers = tuple[tuple[str, str], ...]


def qualifier(name: str, value: str) -> Qualifiers:
    """``((name, value),)``, or nothing when the value is empty: blanks are never stated."""
    return ((name, value),) if value else ()


class Extractor:
    """Collects edges for one instance: dedupe, own-UID filter, coverage."""

    def __init__(self, own_sop_uid: str, reading: Reading) -> None:
        self.own_sop_uid = own_sop_uid
        self.reading = reading
        self.flags = reading.flags
        self.edges: list[Edge] = []
        self._seen: set[tuple[str, Level, Role, Qualifiers]] = set()
        # Elements handled by a known path, emitted or not, as one int each
        # (a hash of the node's position and the tag): the generic walk must
        # not report them again as GENERIC. Items are read again when walked,
        # so the position, not the node object, names an element. A hash
        # collision could only hide a GENERIC edge of the same file.
        self._covered: set[int] = set()

    def cover(self, node: Node, tag: int) -> bool:
        """Mark ``tag`` of ``node`` handled; False if it already was."""
        key = hash((node.key, tag))
        if key in self._covered:
            return False
        self._covered.add(key)
        return True

    def is_covered(self, node: Node, tag: int) -> bool:
        return hash((node.key, tag)) in self._covered

    def emit(
        self,
        target: str,
        level: Level,
        role: Role,
        node: Node,
        tag: int,
        *,
        class_hint: str = "",
        qualifiers: Qualifiers = (),
        study_uid: str = "",
        series_uid: str = "",
    ) -> None:
        if not target or target == self.own_sop_uid or self.reading.stopped:
            return
        if not is_safe_uid(target):
            qualifiers = (*qualifiers, ("unsafe_uid", "yes"))
        key = (target, level, role, qualifiers)
        if key in self._seen:
            return
        if len(self.edges) >= self.reading.edges_max:
            self.reading.too_many_edges(node.element_path(tag))
            return
        self._seen.add(key)
        self.edges.append(
            Edge(
                target_uid=target,
                level=level,
                role=role,
                path=node.element_path(tag),
                class_hint=class_hint,
                qualifiers=qualifiers,
                study_uid=study_uid,
                series_uid=series_uid,
            )
        )

    # -- building blocks -----------------------------------------------------

    def sop_ref(
        self,
        item: Node,
        role: Role,
        qualifiers: Qualifiers = (),
        *,
        level: Level = Level.INSTANCE,
        study_uid: str = "",
        series_uid: str = "",
        sub_object: bool = True,
    ) -> None:
        """One SOP Instance Reference Macro item (with frame/segment numbers if any)."""
        if REF_SOP_UID not in item.elems or not self.cover(item, REF_SOP_UID):
            return
        elems = item.elems
        if (
            sub_object
            and level is Level.INSTANCE
            and (REF_FRAME_NUMBER in elems or REF_SEGMENT_NUMBER in elems)
        ):
            qualifiers = (
                *qualifiers,
                *qualifier("frame", item.values(REF_FRAME_NUMBER)),
                *qualifier("segment", item.values(REF_SEGMENT_NUMBER)),
            )
        self.emit(
            item.uid(REF_SOP_UID),
            level,
            role,
            item,
            REF_SOP_UID,
            class_hint=item.uid(REF_CLASS_UID),
            qualifiers=qualifiers,
            study_uid=study_uid,
            series_uid=series_uid,
        )

    def sop_refs(self, node: Node, seq_tag: int, role: Role, qualifiers: Qualifiers = ()) -> None:
        for item in node.items(seq_tag):
            self.sop_ref(item, role, qualifiers)

    def frame_of_reference(self, node: Node, tag: int, qualifiers: Qualifiers = ()) -> None:
        if tag in node.elems and self.cover(node, tag):
            self.emit(
                node.uid(tag),
                Level.FRAME_OF_REFERENCE,
                Role.FRAME_OF_REFERENCE,
                node,
                tag,
                qualifiers=qualifiers,
            )

    def series(self, node: Node, *, study_uid: str = "", listed: bool = False) -> None:
        if SERIES_UID in node.elems and self.cover(node, SERIES_UID):
            self.emit(
                node.uid(SERIES_UID),
                Level.SERIES,
                Role.SERIES,
                node,
                SERIES_UID,
                qualifiers=(("instances_listed", "yes" if listed else "no"),),
                study_uid=study_uid,
            )

    def hierarchical(self, node: Node, seq_tag: int, role: Role) -> None:
        """Hierarchical SOP Instance Reference Macro: study > series > instance."""
        for study in node.items(seq_tag):
            study_uid = study.uid(STUDY_UID)
            for series in study.items(REF_SERIES_SEQ):
                self.cover(series, SERIES_UID)
                series_uid = series.uid(SERIES_UID)
                for ref in series.items(REF_SOP_SEQ):
                    self.sop_ref(ref, role, study_uid=study_uid, series_uid=series_uid)

    def common_instances(self, node: Node, study_uid: str) -> None:
        """Common Instance Reference (C.12.2) and PS series > image lists."""
        for series in node.items(REF_SERIES_SEQ):
            self.cover(series, SERIES_UID)
            series_uid = series.uid(SERIES_UID)
            for ref in series.items(REF_INSTANCE_SEQ):
                self.sop_ref(ref, Role.COMMON_INSTANCE, study_uid=study_uid, series_uid=series_uid)
            for ref in series.items(REF_IMAGE_SEQ):
                self.sop_ref(ref, Role.IMAGE, study_uid=study_uid, series_uid=series_uid)

    # -- generic walk --------------------------------------------------------

    def walk(self, root: Node) -> None:
        """Every reference not claimed by a known path, in file order, depth-bounded."""
        truncated = [False]
        # (the items of one node's sequences, their depth, study and series there)
        stack: list[tuple[Iterator[Node], int, str, str]] = [
            (_children(root, 0, truncated), 1, "", "")
        ]
        while stack:
            children, depth, study_uid, series_uid = stack[-1]
            node = next(children, None)
            if node is None:
                stack.pop()
                continue
            elems = node.elems
            if STUDY_UID in elems:
                study_uid = node.uid(STUDY_UID) or study_uid
            if SERIES_UID in elems:
                own_series = node.uid(SERIES_UID)
                if not self.is_covered(node, SERIES_UID):
                    self._generic_series(node, study_uid)
                series_uid = own_series or series_uid
            if REF_SOP_UID in elems and not self.is_covered(node, REF_SOP_UID):
                self._generic_instance(node, study_uid, series_uid)
            for tag in FOR_TAGS:
                if tag in elems and not self.is_covered(node, tag):
                    self.frame_of_reference(node, tag)
            stack.append((_children(node, depth, truncated), depth + 1, study_uid, series_uid))
        if truncated[0]:
            self.flags.append("walk_truncated")

    def _generic_instance(self, node: Node, study_uid: str, series_uid: str) -> None:
        hint = node.uid(REF_CLASS_UID)
        if hint in STUDY_REFERENCE_CLASSES or node.tag in (RT_REF_STUDY_SEQ, REF_STUDY_SEQ):
            self.sop_ref(node, Role.STUDY, level=Level.STUDY)
        else:
            self.sop_ref(node, Role.GENERIC, study_uid=study_uid, series_uid=series_uid)

    def _generic_series(self, node: Node, study_uid: str) -> None:
        listed = any(
            REF_SOP_UID in item.elems
            for tag in sequence_tags(node.elems)
            for item in node.items(tag)
        )
        self.series(node, study_uid=study_uid, listed=listed)

    def fill_locations(self) -> None:
        """Give edges without study/series the location another edge states for the target."""
        where: dict[str, tuple[str, str]] = {}
        for edge in self.edges:
            if edge.level is Level.INSTANCE and edge.series_uid:
                where.setdefault(edge.target_uid, (edge.study_uid, edge.series_uid))
        if not where:
            return
        for i, edge in enumerate(self.edges):
            if edge.level is Level.INSTANCE and not edge.series_uid and edge.target_uid in where:
                study_uid, series_uid = where[edge.target_uid]
                self.edges[i] = replace(
                    edge, study_uid=edge.study_uid or study_uid, series_uid=series_uid
                )


def _children(node: Node, depth: int, truncated: list[bool]) -> Iterator[Node]:
    """The items of every sequence of ``node`` (at ``depth``), in file order, as read.

    Below MAX_WALK_DEPTH nothing is read further: a sequence with items there
    sets ``truncated[0]``.
    """
    for tag in sequence_tags(node.elems):
        if depth >= MAX_WALK_DEPTH:
            if node.has_items(tag):
                truncated[0] = True
            continue
        yield from node.items(tag)
