"""Reference edges of one parsed DICOM dataset (dicom-references.md sections 2 and 3.1).

Part of the parser layer: only ``dicomfs.dicom.parse`` imports this module. It works
on pydicom's raw elements instead of ``Dataset.__getitem__`` because that path
runs conversion hooks, validation and VR correction for every access, while an
edge needs a few ASCII strings. Sequences are converted on demand, once, and
only when their raw bytes contain a tag that can carry a reference: this keeps
a CT slice (many sequences, almost no references) nearly free.

Two passes, as the catalogue recommends: known paths per SOP class give typed
edges with roles and qualifiers; a bounded generic walk then picks up every
other referenced SOP instance, series and frame of reference.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import replace
from itertools import compress
from operator import attrgetter
from typing import cast

from pydicom._dicom_dict import DicomDictionary  # the dictionary datadict re-exports
from pydicom.charset import convert_encodings, decode_bytes, default_encoding
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR
from pydicom.values import convert_SQ

from dicomfs.dicom.records import Edge, Level, Role, clean_uid, is_safe_uid

# Nesting depth the walkers follow. Real data stays below ~15 (SR content
# trees); anything deeper is cut and flagged "walk_truncated", never recursed.
MAX_WALK_DEPTH = 64

_UNDEFINED_LENGTH = 0xFFFFFFFF

# Retired study-management classes used as the "class" of a study reference
# (RTReferencedStudySequence, ReferencedStudySequence; dicom-references.md §4.15).
STUDY_REFERENCE_CLASSES = frozenset({"1.2.840.10008.3.1.2.3.1", "1.2.840.10008.3.1.2.3.2"})

Elements = Mapping[int, RawDataElement | DataElement]
Qualifiers = tuple[tuple[str, str], ...]


def _t(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:  # a typo here must fail at import, not skip edges silently
        raise LookupError(keyword)
    return tag


SOP_CLASS_UID = _t("SOPClassUID")
SOP_INSTANCE_UID = _t("SOPInstanceUID")
STUDY_UID = _t("StudyInstanceUID")
SERIES_UID = _t("SeriesInstanceUID")
FOR_UID = _t("FrameOfReferenceUID")
SPECIFIC_CHARACTER_SET = _t("SpecificCharacterSet")
REF_SOP_UID = _t("ReferencedSOPInstanceUID")
REF_CLASS_UID = _t("ReferencedSOPClassUID")
REF_FRAME_NUMBER = _t("ReferencedFrameNumber")
REF_SEGMENT_NUMBER = _t("ReferencedSegmentNumber")
REF_FOR_UID = _t("ReferencedFrameOfReferenceUID")
SOURCE_FOR_UID = _t("SourceFrameOfReferenceUID")
RELATED_FOR_UID = _t("RelatedFrameOfReferenceUID")
FOR_TAGS = (FOR_UID, REF_FOR_UID, SOURCE_FOR_UID, RELATED_FOR_UID)

# Sequences and qualifiers of the known paths (dicom-references.md section 2).
REF_SERIES_SEQ = _t("ReferencedSeriesSequence")
REF_SOP_SEQ = _t("ReferencedSOPSequence")
REF_INSTANCE_SEQ = _t("ReferencedInstanceSequence")
REF_IMAGE_SEQ = _t("ReferencedImageSequence")
REF_STUDY_SEQ = _t("ReferencedStudySequence")
SOURCE_IMAGE_SEQ = _t("SourceImageSequence")
SOURCE_INSTANCE_SEQ = _t("SourceInstanceSequence")
STUDIES_CONTAINING_SEQ = _t("StudiesContainingOtherReferencedInstancesSequence")
REF_SPATIAL_REGISTRATION_SEQ = _t("ReferencedSpatialRegistrationSequence")
PREDECESSOR_DOCUMENTS_SEQ = _t("PredecessorDocumentsSequence")
DEFINITION_SOURCE_SEQ = _t("DefinitionSourceSequence")
# RT Plan / RT Ion Plan
REF_STRUCTURE_SET_SEQ = _t("ReferencedStructureSetSequence")
REF_DOSE_SEQ = _t("ReferencedDoseSequence")
REF_RT_PLAN_SEQ = _t("ReferencedRTPlanSequence")
RT_PLAN_RELATIONSHIP = _t("RTPlanRelationship")
FRACTION_GROUP_SEQ = _t("FractionGroupSequence")
FRACTION_GROUP_NUMBER = _t("FractionGroupNumber")
BEAM_SEQ = _t("BeamSequence")
ION_BEAM_SEQ = _t("IonBeamSequence")
BEAM_NUMBER = _t("BeamNumber")
CONTROL_POINT_SEQ = _t("ControlPointSequence")
CONTROL_POINT_INDEX = _t("ControlPointIndex")
REF_REFERENCE_IMAGE_SEQ = _t("ReferencedReferenceImageSequence")
APPLICATION_SETUP_SEQ = _t("ApplicationSetupSequence")
APPLICATION_SETUP_NUMBER = _t("ApplicationSetupNumber")
PATIENT_SETUP_SEQ = _t("PatientSetupSequence")
PATIENT_SETUP_NUMBER = _t("PatientSetupNumber")
REF_SETUP_IMAGE_SEQ = _t("ReferencedSetupImageSequence")
# RT Structure Set
REF_FOR_SEQ = _t("ReferencedFrameOfReferenceSequence")
RT_REF_STUDY_SEQ = _t("RTReferencedStudySequence")
RT_REF_SERIES_SEQ = _t("RTReferencedSeriesSequence")
CONTOUR_IMAGE_SEQ = _t("ContourImageSequence")
ROI_CONTOUR_SEQ = _t("ROIContourSequence")
CONTOUR_SEQ = _t("ContourSequence")
SOURCE_SERIES_SEQ = _t("SourceSeriesSequence")
SOURCE_SERIES_INFORMATION_SEQ = _t("SourceSeriesInformationSequence")
STRUCTURE_SET_ROI_SEQ = _t("StructureSetROISequence")
ROI_NUMBER = _t("ROINumber")
PREDECESSOR_STRUCTURE_SET_SEQ = _t("PredecessorStructureSetSequence")
FOR_RELATIONSHIP_SEQ = _t("FrameOfReferenceRelationshipSequence")
# RT Dose, RT Image, treatment records
DOSE_SUMMATION_TYPE = _t("DoseSummationType")
REF_FRACTION_GROUP_SEQ = _t("ReferencedFractionGroupSequence")
REF_FRACTION_GROUP_NUMBER = _t("ReferencedFractionGroupNumber")
REF_BEAM_SEQ = _t("ReferencedBeamSequence")
REF_BEAM_NUMBER = _t("ReferencedBeamNumber")
REF_BRACHY_SETUP_SEQ = _t("ReferencedBrachyApplicationSetupSequence")
REF_BRACHY_SETUP_NUMBER = _t("ReferencedBrachyApplicationSetupNumber")
REF_TREATMENT_RECORD_SEQ = _t("ReferencedTreatmentRecordSequence")
IMAGE_TYPE = _t("ImageType")
SESSION_BEAM_SEQ = _t("TreatmentSessionBeamSequence")
SESSION_ION_BEAM_SEQ = _t("TreatmentSessionIonBeamSequence")
SESSION_SETUP_SEQ = _t("TreatmentSessionApplicationSetupSequence")
REF_VERIFICATION_IMAGE_SEQ = _t("ReferencedVerificationImageSequence")
# second-generation RT
POSITION_SCOPE_SEQ = _t("RTPatientPositionScopeSequence")
RT_RADIATION_SEQ = _t("RTRadiationSequence")
REF_RT_RADIATION_SEQ = _t("ReferencedRTRadiationSequence")
REF_RT_RADIATION_SET_SEQ = _t("ReferencedRTRadiationSetSequence")
REF_RT_RADIATION_RECORD_SEQ = _t("ReferencedRTRadiationRecordSequence")
REF_RT_INSTANCE_SEQ = _t("ReferencedRTInstanceSequence")
PHYSICIAN_INTENT_SEQ = _t("RTPhysicianIntentSequence")
PHYSICIAN_INTENT_PREDECESSOR_SEQ = _t("RTPhysicianIntentPredecessorSequence")
SEGMENT_REFERENCE_SEQ = _t("SegmentReferenceSequence")
DIRECT_SEGMENT_REFERENCE_SEQ = _t("DirectSegmentReferenceSequence")
# registration, segmentation, SR
REGISTRATION_SEQ = _t("RegistrationSequence")
DEFORMABLE_REGISTRATION_SEQ = _t("DeformableRegistrationSequence")
USED_FIDUCIALS_SEQ = _t("UsedFiducialsSequence")
USED_SEGMENTS_SEQ = _t("UsedSegmentsSequence")
SHARED_GROUPS_SEQ = _t("SharedFunctionalGroupsSequence")
PER_FRAME_GROUPS_SEQ = _t("PerFrameFunctionalGroupsSequence")
DERIVATION_IMAGE_SEQ = _t("DerivationImageSequence")
SEGMENT_SEQ = _t("SegmentSequence")
SEGMENT_NUMBER = _t("SegmentNumber")
REF_SURFACE_SEQ = _t("ReferencedSurfaceSequence")
SURFACE_SOURCE_SEQ = _t("SegmentSurfaceSourceInstanceSequence")
CURRENT_EVIDENCE_SEQ = _t("CurrentRequestedProcedureEvidenceSequence")
PERTINENT_EVIDENCE_SEQ = _t("PertinentOtherEvidenceSequence")
CONTENT_SEQ = _t("ContentSequence")

# Any element that can become an edge. A raw sequence whose bytes contain none
# of these tags cannot hold an edge at any depth, so it is never converted.
_EDGE_TAGS = (REF_SOP_UID, SERIES_UID, *FOR_TAGS)
_EDGE_TAG_BYTES_LE = tuple(struct.pack("<HH", t >> 16, t & 0xFFFF) for t in _EDGE_TAGS)
_EDGE_TAG_BYTES_BE = tuple(struct.pack(">HH", t >> 16, t & 0xFFFF) for t in _EDGE_TAGS)
_ITEM_TAG_LE = b"\xfe\xff\x00\xe0"

SEQUENCE_TAGS = frozenset(tag for tag, entry in DicomDictionary.items() if entry[0] == "SQ")
_BINARY_INT_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l"}


def keyword(tag: int) -> str:
    """Keyword for paths; private and unknown tags print as (gggg,eeee)."""
    entry = DicomDictionary.get(tag)
    return entry[4] if entry and entry[4] else f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _raw_sequence_encoding(tag: int, elem: RawDataElement) -> bool | None:
    """Whether a raw element holds a sequence: None if not, else its implicit-VR flag.

    UN-encoded sequences are implicit VR little endian (PS3.5 6.2.2). Private
    tags have no dictionary VR; a value that starts with an item tag is tried
    as a sequence (a wrong guess costs a flagged parse error, never an edge).
    """
    vr = elem.VR
    if vr == "SQ":
        return elem.is_implicit_VR
    if vr is None or vr == "UN":
        if tag in SEQUENCE_TAGS:
            return True
        value = elem.value
        if tag >> 16 & 1 and value is not None and value[:4] == _ITEM_TAG_LE:
            return True
    return None


def is_sequence(tag: int, elem: RawDataElement | DataElement) -> bool:
    if isinstance(elem, RawDataElement):
        return _raw_sequence_encoding(tag, elem) is not None
    return elem.VR == "SQ"


_GET_VR = attrgetter("VR")
_IS_SQ = frozenset({"SQ"}).__contains__
_PRIVATE_GROUP_BIT = 0x10000


def sequence_tags(elems: Elements) -> list[int]:
    """Tags of the sequences in ``elems``, in file order.

    Runs on every element of every CT slice, so the common cases use C-level
    iteration: explicit "SQ" VRs, then dictionary and private tags for
    implicit VR and UN.
    """
    vrs = list(map(_GET_VR, elems.values()))
    found = list(compress(elems, map(_IS_SQ, vrs)))
    if None in vrs or "UN" in vrs:
        known = set(found)
        candidates = {
            *SEQUENCE_TAGS.intersection(elems),
            *filter(_PRIVATE_GROUP_BIT.__and__, elems),
        }
        found += (t for t in candidates if t not in known and is_sequence(t, elems[t]))
        found.sort()
    return found


def _has_edge_tags(value: bytes, little_endian: bool) -> bool:
    patterns = _EDGE_TAG_BYTES_LE if little_endian else _EDGE_TAG_BYTES_BE
    return any(pattern in value for pattern in patterns)


class _Unusual(Exception):
    """An encoding the fast item reader leaves to pydicom."""


_ITEM = 0xFFFEE000
_VR_NAMES = {vr.value.encode("ascii"): vr.value for vr in VR}
_LONG_VRS = frozenset(vr.value.encode("ascii") for vr in EXPLICIT_VR_LENGTH_32)
_HEADERS = {
    little: (
        struct.Struct("<HHL" if little else ">HHL"),
        struct.Struct("<HH2sH" if little else ">HH2sH"),
        struct.Struct("<L" if little else ">L"),
    )
    for little in (True, False)
}


def read_items(value: bytes, implicit: bool, little: bool, offset: int) -> list[Elements]:
    """Raw elements of each item of a defined-length sequence value.

    pydicom's reader builds a Dataset and a generator per item, which costs
    more than a CT slice's whole identity; this reader slices the value
    directly. It only handles defined-length items and elements in one
    encoding and raises _Unusual for everything else (undefined lengths,
    an implicit VR switch, unknown VRs, lengths that do not add up).
    """
    item_head, explicit_head, long_length = _HEADERS[little]
    items: list[Elements] = []
    pos, end = 0, len(value)
    while pos < end:
        if pos + 8 > end:
            raise _Unusual
        group, element, length = item_head.unpack_from(value, pos)
        if (group << 16 | element) != _ITEM or length == _UNDEFINED_LENGTH:
            raise _Unusual
        pos += 8
        stop = pos + length
        if stop > end:
            raise _Unusual
        elems: dict[int, RawDataElement | DataElement] = {}
        while pos < stop:
            if pos + 8 > stop:
                raise _Unusual
            if implicit:
                group, element, length = item_head.unpack_from(value, pos)
                vr = None
                pos += 8
            else:
                group, element, raw_vr, length = explicit_head.unpack_from(value, pos)
                vr = _VR_NAMES.get(raw_vr)
                if vr is None:
                    raise _Unusual
                if raw_vr in _LONG_VRS:
                    if pos + 12 > stop:
                        raise _Unusual
                    length = long_length.unpack_from(value, pos + 8)[0]
                    pos += 12
                else:
                    pos += 8
            value_end = pos + length
            if group == 0xFFFE or value_end > stop:  # delimiters, undefined lengths
                raise _Unusual
            tag = group << 16 | element  # plain int keys: BaseTag.__eq__ is slow Python
            elems[tag] = RawDataElement(
                BaseTag(tag), vr, length, value[pos:value_end], offset + pos, implicit, little
            )
            pos = value_end
        items.append(elems)
    return items


class Node:
    """One dataset (top level or sequence item) read through its raw elements."""

    __slots__ = ("_encodings", "_sequences", "elems", "flags", "index", "parent", "tag")

    def __init__(
        self,
        elems: Elements,
        flags: list[str],
        parent: Node | None = None,
        tag: int = 0,
        index: int = 0,
    ) -> None:
        self.elems = elems
        self.flags = flags  # shared with the whole tree: parse problems inside sequences
        self.parent = parent
        self.tag = tag  # the sequence this item belongs to (0 for the top level)
        self.index = index
        self._encodings: list[str] | None = None
        self._sequences: dict[int, list[Node]] = {}

    # -- paths ---------------------------------------------------------------

    @property
    def path(self) -> str:
        parts: list[str] = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            parts.append(f"{keyword(node.tag)}[{node.index}]")
            node = node.parent
        return ".".join(reversed(parts))

    def element_path(self, tag: int) -> str:
        prefix = self.path
        return f"{prefix}.{keyword(tag)}" if prefix else keyword(tag)

    # -- values --------------------------------------------------------------

    @property
    def encodings(self) -> list[str]:
        if self._encodings is None:
            if SPECIFIC_CHARACTER_SET in self.elems:
                terms = [t.strip() for t in self._decode_ascii(SPECIFIC_CHARACTER_SET).split("\\")]
                try:
                    self._encodings = convert_encodings(terms or [""])
                except (LookupError, ValueError):  # garbage names (codecs.lookup)
                    self._encodings = [default_encoding]
            elif self.parent is not None:
                self._encodings = self.parent.encodings
            else:
                self._encodings = [default_encoding]
        return self._encodings

    def _decode_ascii(self, tag: int) -> str:
        elem = self.elems[tag]
        value = elem.value
        if isinstance(value, bytes):
            return value.decode("ascii", "replace")
        return "" if value is None else str(value)

    def raw_text(self, tag: int) -> str:
        """The value as written, multi-values joined by a backslash; "" if absent."""
        elem = self.elems.get(tag)
        if elem is None:
            return ""
        value = elem.value
        if isinstance(value, bytes):
            if elem.__class__ is RawDataElement:
                vr = elem.VR or _dictionary_vr(tag)
                fmt = _BINARY_INT_FORMATS.get(vr)
                if fmt is not None:
                    return _unpack_ints(value, fmt, elem.is_little_endian)
            if value.isascii():
                return value.decode("ascii")
            try:
                return decode_bytes(value, self.encodings, set())
            except (LookupError, UnicodeError, ValueError):
                return value.decode("latin-1")
        if value is None:
            return ""
        if isinstance(value, list | tuple):
            return "\\".join(str(v) for v in value)
        return str(value)

    def text(self, tag: int) -> str:
        return self.raw_text(tag).strip(" \x00")

    def uid(self, tag: int) -> str:
        return clean_uid(self.raw_text(tag))

    def values(self, tag: int) -> str:
        """A qualifier value: multi-values comma-joined, blanks dropped."""
        parts = (part.strip(" \x00") for part in self.raw_text(tag).split("\\"))
        return ",".join(part for part in parts if part)

    # -- sequences -----------------------------------------------------------

    def items(self, tag: int, *, edges_only: bool = True) -> list[Node]:
        """The items of sequence ``tag`` (converted once and cached).

        With ``edges_only`` a raw sequence that cannot contain an edge is not
        converted and yields no items; pass False to read qualifiers.
        """
        elem = self.elems.get(tag)
        if elem is None:
            return []
        cached = self._sequences.get(tag)
        if cached is not None:
            return cached
        item_elems: list[Elements]
        if isinstance(elem, RawDataElement):
            value = elem.value
            implicit = _raw_sequence_encoding(tag, elem)
            if not value or implicit is None:
                return []
            # UN-encoded sequences are implicit VR little endian in any syntax.
            little = bool(elem.is_little_endian) or elem.VR == "UN"
            if edges_only and not _has_edge_tags(value, little):
                return []
            try:
                item_elems = read_items(value, implicit, little, elem.value_tell)
            except _Unusual:
                item_elems = self._read_with_pydicom(tag, value, implicit, little, elem.value_tell)
        elif elem.VR == "SQ" and elem.value is not None:
            item_elems = [cast(Elements, ds._dict) for ds in elem.value]
        else:
            return []
        nodes = [Node(elems, self.flags, self, tag, i) for i, elems in enumerate(item_elems)]
        self._sequences[tag] = nodes
        return nodes

    def _read_with_pydicom(
        self, tag: int, value: bytes, implicit: bool, little: bool, offset: int
    ) -> list[Elements]:
        try:
            datasets: Iterable[Dataset] = convert_SQ(value, implicit, little, None, offset)
        except (RecursionError, MemoryError):
            raise
        except Exception:  # one broken sequence must not lose the instance
            self.flags.append(f"malformed_sequence:{keyword(tag)}")
            return []
        return [cast(Elements, ds._dict) for ds in datasets]


def _dictionary_vr(tag: int) -> str:
    entry = DicomDictionary.get(tag)
    return entry[0] if entry is not None else "UN"


def _unpack_ints(value: bytes, fmt: str, little_endian: bool | None) -> str:
    size = struct.calcsize(fmt)
    count = len(value) // size
    numbers = struct.unpack(("<" if little_endian else ">") + fmt * count, value[: count * size])
    return "\\".join(str(n) for n in numbers)


def _q(name: str, value: str) -> Qualifiers:
    return ((name, value),) if value else ()


class Extractor:
    """Collects edges for one instance: dedupe, own-UID filter, coverage."""

    def __init__(self, own_sop_uid: str, flags: list[str]) -> None:
        self.own_sop_uid = own_sop_uid
        self.flags = flags
        self.edges: list[Edge] = []
        self._seen: set[tuple[str, Level, Role, Qualifiers]] = set()
        # (id(node), tag) handled by a known path, emitted or not: the generic
        # walk must not report them again as GENERIC.
        self._covered: set[tuple[int, int]] = set()

    def cover(self, node: Node, tag: int) -> bool:
        """Mark ``tag`` of ``node`` handled; False if it already was."""
        key = (id(node), tag)
        if key in self._covered:
            return False
        self._covered.add(key)
        return True

    def is_covered(self, node: Node, tag: int) -> bool:
        return (id(node), tag) in self._covered

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
        if not target or target == self.own_sop_uid:
            return
        if not is_safe_uid(target):
            qualifiers = (*qualifiers, ("unsafe_uid", "yes"))
        key = (target, level, role, qualifiers)
        if key in self._seen:
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
                *_q("frame", item.values(REF_FRAME_NUMBER)),
                *_q("segment", item.values(REF_SEGMENT_NUMBER)),
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
        stack: list[tuple[Node, int, str, str]] = [(root, 0, "", "")]
        truncated = False
        while stack:
            node, depth, study_uid, series_uid = stack.pop()
            elems = node.elems
            if depth:
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
            children: list[tuple[Node, int, str, str]] = []
            for tag in sequence_tags(elems):
                items = node.items(tag)
                if items and depth >= MAX_WALK_DEPTH:
                    truncated = True
                    continue
                children.extend((item, depth + 1, study_uid, series_uid) for item in items)
            stack.extend(reversed(children))
        if truncated:
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


# -- known paths per IOD (dicom-references.md section 2) ----------------------

_RT = "1.2.840.10008.5.1.4.1.1.481."
RT_IMAGE, RT_DOSE, RT_STRUCTURE_SET = _RT + "1", _RT + "2", _RT + "3"
RT_PLAN, RT_ION_PLAN = _RT + "5", _RT + "8"
TREATMENT_RECORDS = frozenset({_RT + "4", _RT + "6", _RT + "7", _RT + "9"})
REGISTRATIONS = frozenset({"1.2.840.10008.5.1.4.1.1.66.1", "1.2.840.10008.5.1.4.1.1.66.3"})
SEGMENTATIONS = frozenset(f"1.2.840.10008.5.1.4.1.1.66.{n}" for n in (4, 5, 7, 8))
_SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


def _plan(x: Extractor, root: Node) -> None:
    x.sop_refs(root, REF_STRUCTURE_SET_SEQ, Role.STRUCTURE_SET)
    x.sop_refs(root, REF_DOSE_SEQ, Role.DOSE)
    for item in root.items(REF_RT_PLAN_SEQ):
        x.sop_ref(item, Role.RELATED_PLAN, _q("relationship", item.text(RT_PLAN_RELATIONSHIP)))
    for group in root.items(FRACTION_GROUP_SEQ):
        q = _q("fraction_group", group.values(FRACTION_GROUP_NUMBER))
        x.sop_refs(group, REF_DOSE_SEQ, Role.DOSE, q)
        x.sop_refs(group, DEFINITION_SOURCE_SEQ, Role.DEFINITION_SOURCE, q)
    for beams in (BEAM_SEQ, ION_BEAM_SEQ):
        for beam in root.items(beams):
            q = _q("beam", beam.values(BEAM_NUMBER))
            x.sop_refs(beam, REF_DOSE_SEQ, Role.DOSE, q)
            x.sop_refs(beam, REF_REFERENCE_IMAGE_SEQ, Role.REFERENCE_IMAGE, q)
            x.sop_refs(beam, DEFINITION_SOURCE_SEQ, Role.DEFINITION_SOURCE, q)
            for point in beam.items(CONTROL_POINT_SEQ):
                cq = _q("control_point", point.values(CONTROL_POINT_INDEX))
                x.sop_refs(point, REF_DOSE_SEQ, Role.DOSE, q + cq)
    for setup in root.items(APPLICATION_SETUP_SEQ):
        q = _q("application_setup", setup.values(APPLICATION_SETUP_NUMBER))
        x.sop_refs(setup, REF_REFERENCE_IMAGE_SEQ, Role.REFERENCE_IMAGE, q)
    for setup in root.items(PATIENT_SETUP_SEQ):
        q = _q("patient_setup", setup.values(PATIENT_SETUP_NUMBER))
        x.sop_refs(setup, REF_SETUP_IMAGE_SEQ, Role.REFERENCE_IMAGE, q)


def _structure_set(x: Extractor, root: Node) -> None:
    for frame in root.items(REF_FOR_SEQ):
        x.frame_of_reference(frame, FOR_UID)
        for related in frame.items(FOR_RELATIONSHIP_SEQ):
            x.frame_of_reference(related, RELATED_FOR_UID)
        for study in frame.items(RT_REF_STUDY_SEQ):
            # A study, written with SOP-reference syntax (§4 item 15): never an instance.
            x.sop_ref(study, Role.STUDY, level=Level.STUDY)
            study_uid = study.uid(REF_SOP_UID)
            for series in study.items(RT_REF_SERIES_SEQ):
                images = series.items(CONTOUR_IMAGE_SEQ)
                x.series(series, study_uid=study_uid, listed=bool(images))
                series_uid = series.uid(SERIES_UID)
                for image in images:
                    x.sop_ref(image, Role.IMAGE, study_uid=study_uid, series_uid=series_uid)
    for roi in root.items(ROI_CONTOUR_SEQ):
        for contour in roi.items(CONTOUR_SEQ):
            x.sop_refs(contour, CONTOUR_IMAGE_SEQ, Role.IMAGE)
        for series in roi.items(SOURCE_SERIES_SEQ):
            x.series(series)
    for series in root.items(SOURCE_SERIES_INFORMATION_SEQ):
        x.series(series)
    for roi in root.items(STRUCTURE_SET_ROI_SEQ):
        x.frame_of_reference(roi, REF_FOR_UID)
        q = _q("roi", roi.values(ROI_NUMBER))
        x.sop_refs(roi, DEFINITION_SOURCE_SEQ, Role.DEFINITION_SOURCE, q)
    x.sop_refs(root, PREDECESSOR_STRUCTURE_SET_SEQ, Role.PREDECESSOR)


def _joined(values: Iterable[str]) -> str:
    return ",".join(value for value in values if value)


def _numbers(node: Node, seq_tag: int, number_tag: int) -> str:
    return _joined(item.values(number_tag) for item in node.items(seq_tag, edges_only=False))


def _dose(x: Extractor, root: Node) -> None:
    summation = _q("dose_summation_type", root.text(DOSE_SUMMATION_TYPE))
    for plan in root.items(REF_RT_PLAN_SEQ):
        groups = plan.items(REF_FRACTION_GROUP_SEQ, edges_only=False)
        fraction_groups = _joined(g.values(REF_FRACTION_GROUP_NUMBER) for g in groups)
        beams = _joined(_numbers(g, REF_BEAM_SEQ, REF_BEAM_NUMBER) for g in groups)
        setups = _joined(_numbers(g, REF_BRACHY_SETUP_SEQ, REF_BRACHY_SETUP_NUMBER) for g in groups)
        q = (
            *_q("fraction_group", fraction_groups),
            *_q("beams", beams),
            *_q("brachy_setups", setups),
            *summation,
        )
        x.sop_ref(plan, Role.PLAN, q)
    x.sop_refs(root, REF_STRUCTURE_SET_SEQ, Role.STRUCTURE_SET)
    for record in root.items(REF_TREATMENT_RECORD_SEQ):
        beams = _numbers(record, REF_BEAM_SEQ, REF_BEAM_NUMBER)
        x.sop_ref(record, Role.TREATMENT_RECORD, _q("beams", beams))
    # Older editions allow Structure Set / ROI Contour modules in point doses.
    _structure_set(x, root)


def _rt_image(x: Extractor, root: Node) -> None:
    image_type = root.raw_text(IMAGE_TYPE).split("\\")
    q = (
        *_q("beam", root.values(REF_BEAM_NUMBER)),
        *_q("fraction_group", root.values(REF_FRACTION_GROUP_NUMBER)),
        *_q("image_type", image_type[2].strip() if len(image_type) > 2 else ""),
    )
    x.sop_refs(root, REF_RT_PLAN_SEQ, Role.PLAN, q)


def _treatment_record(x: Extractor, root: Node) -> None:
    fraction_group = _q("fraction_group", root.values(REF_FRACTION_GROUP_NUMBER))
    x.sop_refs(root, REF_RT_PLAN_SEQ, Role.PLAN, fraction_group)
    x.sop_refs(root, REF_TREATMENT_RECORD_SEQ, Role.TREATMENT_RECORD)
    sessions = (
        (SESSION_BEAM_SEQ, REF_BEAM_NUMBER, "beam"),
        (SESSION_ION_BEAM_SEQ, REF_BEAM_NUMBER, "beam"),
        (SESSION_SETUP_SEQ, REF_BRACHY_SETUP_NUMBER, "application_setup"),
    )
    for seq_tag, number_tag, name in sessions:
        for session in root.items(seq_tag):
            q = _q(name, session.values(number_tag))
            x.sop_refs(session, REF_VERIFICATION_IMAGE_SEQ, Role.VERIFICATION_IMAGE, q)
            x.sop_refs(session, DEFINITION_SOURCE_SEQ, Role.DEFINITION_SOURCE, q)


def _second_generation(x: Extractor, root: Node) -> None:
    for scope in root.items(POSITION_SCOPE_SEQ):
        x.sop_refs(scope, REF_RT_PLAN_SEQ, Role.PLAN)  # legacy support: a 1st-gen plan
        x.sop_refs(scope, REF_RT_RADIATION_SEQ, Role.GENERIC)
        for radiation_set in scope.items(REF_RT_RADIATION_SET_SEQ):
            x.sop_ref(radiation_set, Role.GENERIC)
            x.sop_refs(radiation_set, REF_RT_RADIATION_SEQ, Role.GENERIC)
    for seq_tag in (
        RT_RADIATION_SEQ,
        REF_RT_RADIATION_SET_SEQ,
        REF_RT_RADIATION_RECORD_SEQ,
        REF_RT_INSTANCE_SEQ,
    ):
        x.sop_refs(root, seq_tag, Role.GENERIC)
    for intent in root.items(PHYSICIAN_INTENT_SEQ):
        x.sop_refs(intent, PHYSICIAN_INTENT_PREDECESSOR_SEQ, Role.PREDECESSOR)
    for segment in root.items(SEGMENT_REFERENCE_SEQ):
        for direct in segment.items(DIRECT_SEGMENT_REFERENCE_SEQ):
            x.sop_refs(direct, REF_SOP_SEQ, Role.DEFINITION_SOURCE)


def _registration(x: Extractor, root: Node) -> None:
    # The instance FoR is the registered (target) system; items map sources into it.
    x.frame_of_reference(root, FOR_UID, (("registration", "target"),))
    source = (("registration", "source"),)
    for seq_tag, for_tag in (
        (REGISTRATION_SEQ, FOR_UID),
        (DEFORMABLE_REGISTRATION_SEQ, SOURCE_FOR_UID),
    ):
        for item in root.items(seq_tag):
            x.frame_of_reference(item, for_tag, source)
            x.sop_refs(item, REF_IMAGE_SEQ, Role.IMAGE, source)
            x.sop_refs(item, USED_FIDUCIALS_SEQ, Role.DEFINITION_SOURCE, source)
            x.sop_refs(item, USED_SEGMENTS_SEQ, Role.DEFINITION_SOURCE, source)


def _segmentation(x: Extractor, root: Node) -> None:
    for groups in (SHARED_GROUPS_SEQ, PER_FRAME_GROUPS_SEQ):
        for frame in root.items(groups):
            for derivation in frame.items(DERIVATION_IMAGE_SEQ):
                for source in derivation.items(SOURCE_IMAGE_SEQ):
                    # One edge per source image, not one per segmentation frame.
                    x.sop_ref(source, Role.SOURCE_IMAGE, sub_object=False)
    for segment in root.items(SEGMENT_SEQ):
        q = _q("segment", segment.values(SEGMENT_NUMBER))
        x.sop_refs(segment, DEFINITION_SOURCE_SEQ, Role.DEFINITION_SOURCE, q)
        for surface in segment.items(REF_SURFACE_SEQ):
            for source in surface.items(SURFACE_SOURCE_SEQ):
                x.sop_ref(source, Role.SOURCE_IMAGE, sub_object=False)


def _structured_report(x: Extractor, root: Node) -> None:
    x.hierarchical(root, CURRENT_EVIDENCE_SEQ, Role.EVIDENCE)
    x.hierarchical(root, PERTINENT_EVIDENCE_SEQ, Role.EVIDENCE)
    stack = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        items = node.items(CONTENT_SEQ)
        if items and depth >= MAX_WALK_DEPTH:
            x.flags.append("walk_truncated")
            continue
        for item in items:
            for ref in item.items(REF_SOP_SEQ):
                x.sop_ref(ref, Role.EVIDENCE)
                x.sop_refs(ref, REF_SOP_SEQ, Role.EVIDENCE)  # presentation state of an image
        stack.extend((item, depth + 1) for item in reversed(items))


def _general(x: Extractor, root: Node, own_study_uid: str) -> None:
    """General Reference, Common Instance Reference and study references of any IOD."""
    x.sop_refs(root, REF_IMAGE_SEQ, Role.GENERIC)
    x.sop_refs(root, SOURCE_IMAGE_SEQ, Role.SOURCE_IMAGE)
    x.sop_refs(root, REF_INSTANCE_SEQ, Role.SOURCE_INSTANCE)
    x.sop_refs(root, SOURCE_INSTANCE_SEQ, Role.SOURCE_INSTANCE)
    for item in root.items(REF_SPATIAL_REGISTRATION_SEQ):
        x.sop_ref(item, Role.REGISTRATION)  # flat in RT Dose, hierarchical in blending PS
    x.hierarchical(root, REF_SPATIAL_REGISTRATION_SEQ, Role.REGISTRATION)
    for study in root.items(REF_STUDY_SEQ):
        x.sop_ref(study, Role.STUDY, level=Level.STUDY)  # study management, never an instance
    x.common_instances(root, own_study_uid)
    for study in root.items(STUDIES_CONTAINING_SEQ):
        x.cover(study, STUDY_UID)
        x.common_instances(study, study.uid(STUDY_UID))
    x.hierarchical(root, PREDECESSOR_DOCUMENTS_SEQ, Role.PREDECESSOR)


def extract_edges(root: Node, sop_class_uid: str, sop_instance_uid: str) -> list[Edge]:
    """All edges of the dataset ``root``; problems are appended to ``root.flags``."""
    x = Extractor(sop_instance_uid, root.flags)
    if sop_class_uid in (RT_PLAN, RT_ION_PLAN):
        _plan(x, root)
    elif sop_class_uid == RT_STRUCTURE_SET:
        _structure_set(x, root)
    elif sop_class_uid == RT_DOSE:
        _dose(x, root)
    elif sop_class_uid == RT_IMAGE:
        _rt_image(x, root)
    elif sop_class_uid in TREATMENT_RECORDS:
        _treatment_record(x, root)
    elif sop_class_uid.startswith(_RT):
        _second_generation(x, root)
    elif sop_class_uid in REGISTRATIONS:
        _registration(x, root)
    elif sop_class_uid in SEGMENTATIONS:
        _segmentation(x, root)
    elif sop_class_uid.startswith(_SR_PREFIX):
        _structured_report(x, root)
    _general(x, root, root.uid(STUDY_UID))
    x.walk(root)
    x.fill_locations()
    return x.edges
