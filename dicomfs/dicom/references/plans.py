"""Known paths of RT Plan, RT Ion Plan, treatment records and second-generation RT.

What a plan names (its structure set, doses down to the control point,
reference and setup images, related plans), what a treatment record names
(the plan delivered, earlier records, verification images) and the
references of second-generation RT objects (dicom-references.md 2.1, 2.5, 2.11).
Qualifiers say where in the plan a reference sits: fraction group, beam,
control point, setup.
"""

from __future__ import annotations

from dicomfs.dicom.records import Role
from dicomfs.dicom.references.extractor import Extractor, qualifier
from dicomfs.dicom.references.node import Node
from dicomfs.dicom.references.tags import (
    APPLICATION_SETUP_NUMBER,
    APPLICATION_SETUP_SEQ,
    BEAM_NUMBER,
    BEAM_SEQ,
    CONTROL_POINT_INDEX,
    CONTROL_POINT_SEQ,
    DEFINITION_SOURCE_SEQ,
    DIRECT_SEGMENT_REFERENCE_SEQ,
    FRACTION_GROUP_NUMBER,
    FRACTION_GROUP_SEQ,
    ION_BEAM_SEQ,
    PATIENT_SETUP_NUMBER,
    PATIENT_SETUP_SEQ,
    PHYSICIAN_INTENT_PREDECESSOR_SEQ,
    PHYSICIAN_INTENT_SEQ,
    POSITION_SCOPE_SEQ,
    REF_BEAM_NUMBER,
    REF_BRACHY_SETUP_NUMBER,
    REF_DOSE_SEQ,
    REF_FRACTION_GROUP_NUMBER,
    REF_REFERENCE_IMAGE_SEQ,
    REF_RT_INSTANCE_SEQ,
    REF_RT_PLAN_SEQ,
    REF_RT_RADIATION_RECORD_SEQ,
    REF_RT_RADIATION_SEQ,
    REF_RT_RADIATION_SET_SEQ,
    REF_SETUP_IMAGE_SEQ,
    REF_SOP_SEQ,
    REF_STRUCTURE_SET_SEQ,
    REF_TREATMENT_RECORD_SEQ,
    REF_VERIFICATION_IMAGE_SEQ,
    RT_PLAN_RELATIONSHIP,
    RT_RADIATION_SEQ,
    SEGMENT_REFERENCE_SEQ,
    SESSION_BEAM_SEQ,
    SESSION_ION_BEAM_SEQ,
    SESSION_SETUP_SEQ,
)


def plan_edges(x: Extractor, root: Node) -> None:
    """RT Plan and RT Ion Plan: structure set, doses, images and related plans (2.1)."""
    x.sop_refs(root, REF_STRUCTURE_SET_SEQ, Role.STRUCTURE_SET)
    x.sop_refs(root, REF_DOSE_SEQ, Role.DOSE)
    for item in root.items(REF_RT_PLAN_SEQ):
        relationship = qualifier("relationship", item.text(RT_PLAN_RELATIONSHIP))
        x.sop_ref(item, Role.RELATED_PLAN, relationship)
    for group in root.items(FRACTION_GROUP_SEQ):
        q = qualifier("fraction_group", group.values(FRACTION_GROUP_NUMBER))
        x.sop_refs(group, REF_DOSE_SEQ, Role.DOSE, q)
        x.sop_refs(group, DEFINITION_SOURCE_SEQ, Role.DEFINITION_SOURCE, q)
    for beams in (BEAM_SEQ, ION_BEAM_SEQ):
        for beam in root.items(beams):
            q = qualifier("beam", beam.values(BEAM_NUMBER))
            x.sop_refs(beam, REF_DOSE_SEQ, Role.DOSE, q)
            x.sop_refs(beam, REF_REFERENCE_IMAGE_SEQ, Role.REFERENCE_IMAGE, q)
            x.sop_refs(beam, DEFINITION_SOURCE_SEQ, Role.DEFINITION_SOURCE, q)
            for point in beam.items(CONTROL_POINT_SEQ):
                cq = qualifier("control_point", point.values(CONTROL_POINT_INDEX))
                x.sop_refs(point, REF_DOSE_SEQ, Role.DOSE, q + cq)
    for setup in root.items(APPLICATION_SETUP_SEQ):
        q = qualifier("application_setup", setup.values(APPLICATION_SETUP_NUMBER))
        x.sop_refs(setup, REF_REFERENCE_IMAGE_SEQ, Role.REFERENCE_IMAGE, q)
    for setup in root.items(PATIENT_SETUP_SEQ):
        q = qualifier("patient_setup", setup.values(PATIENT_SETUP_NUMBER))
        x.sop_refs(setup, REF_SETUP_IMAGE_SEQ, Role.REFERENCE_IMAGE, q)


def treatment_record_edges(x: Extractor, root: Node) -> None:
    """Treatment records: the plan delivered, earlier records, verification images (2.5)."""
    fraction_group = qualifier("fraction_group", root.values(REF_FRACTION_GROUP_NUMBER))
    x.sop_refs(root, REF_RT_PLAN_SEQ, Role.PLAN, fraction_group)
    x.sop_refs(root, REF_TREATMENT_RECORD_SEQ, Role.TREATMENT_RECORD)
    sessions = (
        (SESSION_BEAM_SEQ, REF_BEAM_NUMBER, "beam"),
        (SESSION_ION_BEAM_SEQ, REF_BEAM_NUMBER, "beam"),
        (SESSION_SETUP_SEQ, REF_BRACHY_SETUP_NUMBER, "application_setup"),
    )
    for seq_tag, number_tag, name in sessions:
        for session in root.items(seq_tag):
            q = qualifier(name, session.values(number_tag))
            x.sop_refs(session, REF_VERIFICATION_IMAGE_SEQ, Role.VERIFICATION_IMAGE, q)
            x.sop_refs(session, DEFINITION_SOURCE_SEQ, Role.DEFINITION_SOURCE, q)


def second_generation_edges(x: Extractor, root: Node) -> None:
    """Second-generation RT: scopes, radiations, intents and segment references (2.11)."""
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
