"""Known paths of RT Dose: the plan it was computed for, its structure set and records.

The plan edge carries which fraction group, beams and brachy setups the dose
covers and its summation type (dicom-references.md 2.3), the qualifiers the
plan package uses to tell plan, beam and fraction doses apart.
"""

from __future__ import annotations

from collections.abc import Iterable

from dicomfs.dicom.records import Role
from dicomfs.dicom.references.extractor import Extractor, qualifier
from dicomfs.dicom.references.node import Node
from dicomfs.dicom.references.structures import structure_set_edges
from dicomfs.dicom.references.tags import (
    DOSE_SUMMATION_TYPE,
    REF_BEAM_NUMBER,
    REF_BEAM_SEQ,
    REF_BRACHY_SETUP_NUMBER,
    REF_BRACHY_SETUP_SEQ,
    REF_FRACTION_GROUP_NUMBER,
    REF_FRACTION_GROUP_SEQ,
    REF_RT_PLAN_SEQ,
    REF_STRUCTURE_SET_SEQ,
    REF_TREATMENT_RECORD_SEQ,
)


def _joined(values: Iterable[str]) -> str:
    """Non-empty values comma-joined: one qualifier value for several items."""
    return ",".join(value for value in values if value)


def _numbers(node: Node, seq_tag: int, number_tag: int) -> str:
    """The numbers stated in each item of ``seq_tag``, read even where no edge can be."""
    return _joined(item.values(number_tag) for item in node.items(seq_tag, edges_only=False))


def dose_edges(x: Extractor, root: Node) -> None:
    """RT Dose: the plan with the parts it covers, structure set, records (2.3)."""
    summation = qualifier("dose_summation_type", root.text(DOSE_SUMMATION_TYPE))
    for plan in root.items(REF_RT_PLAN_SEQ):
        groups = plan.items(REF_FRACTION_GROUP_SEQ, edges_only=False)
        fraction_groups = _joined(g.values(REF_FRACTION_GROUP_NUMBER) for g in groups)
        beams = _joined(_numbers(g, REF_BEAM_SEQ, REF_BEAM_NUMBER) for g in groups)
        setups = _joined(_numbers(g, REF_BRACHY_SETUP_SEQ, REF_BRACHY_SETUP_NUMBER) for g in groups)
        q = (
            *qualifier("fraction_group", fraction_groups),
            *qualifier("beams", beams),
            *qualifier("brachy_setups", setups),
            *summation,
        )
        x.sop_ref(plan, Role.PLAN, q)
    x.sop_refs(root, REF_STRUCTURE_SET_SEQ, Role.STRUCTURE_SET)
    for record in root.items(REF_TREATMENT_RECORD_SEQ):
        beams = _numbers(record, REF_BEAM_SEQ, REF_BEAM_NUMBER)
        x.sop_ref(record, Role.TREATMENT_RECORD, qualifier("beams", beams))
    # Older editions allow Structure Set / ROI Contour modules in point doses.
    structure_set_edges(x, root)
