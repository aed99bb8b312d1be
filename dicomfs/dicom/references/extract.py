"""All edges of one dataset: the known paths of its SOP class, then what any IOD may carry.

The order matters for roles: the known paths of the instance's IOD family run
first and claim what they read, then the references any IOD may hold (the
General Reference and Common Instance Reference modules, study management,
predecessor documents; dicom-references.md 2.0), then the generic walk picks
up the rest as GENERIC, and finally edges learn the study and series another
edge states for the same target.
"""

from __future__ import annotations

from dicomfs.dicom.records import Edge, Level, Role
from dicomfs.dicom.references.doses import dose_edges
from dicomfs.dicom.references.extractor import Extractor
from dicomfs.dicom.references.images import registration_edges, rt_image_edges, segmentation_edges
from dicomfs.dicom.references.node import Node
from dicomfs.dicom.references.plans import (
    plan_edges,
    second_generation_edges,
    treatment_record_edges,
)
from dicomfs.dicom.references.reports import structured_report_edges
from dicomfs.dicom.references.structures import structure_set_edges
from dicomfs.dicom.references.tags import (
    PREDECESSOR_DOCUMENTS_SEQ,
    REF_IMAGE_SEQ,
    REF_INSTANCE_SEQ,
    REF_SPATIAL_REGISTRATION_SEQ,
    REF_STUDY_SEQ,
    REGISTRATIONS,
    RT_DOSE,
    RT_IMAGE,
    RT_ION_PLAN,
    RT_PLAN,
    RT_PREFIX,
    RT_STRUCTURE_SET,
    SEGMENTATIONS,
    SOURCE_IMAGE_SEQ,
    SOURCE_INSTANCE_SEQ,
    SR_PREFIX,
    STUDIES_CONTAINING_SEQ,
    STUDY_UID,
    TREATMENT_RECORDS,
)


def general_edges(x: Extractor, root: Node, own_study_uid: str) -> None:
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
    x = Extractor(sop_instance_uid, root.reading)
    if sop_class_uid in (RT_PLAN, RT_ION_PLAN):
        plan_edges(x, root)
    elif sop_class_uid == RT_STRUCTURE_SET:
        structure_set_edges(x, root)
    elif sop_class_uid == RT_DOSE:
        dose_edges(x, root)
    elif sop_class_uid == RT_IMAGE:
        rt_image_edges(x, root)
    elif sop_class_uid in TREATMENT_RECORDS:
        treatment_record_edges(x, root)
    elif sop_class_uid.startswith(RT_PREFIX):
        second_generation_edges(x, root)
    elif sop_class_uid in REGISTRATIONS:
        registration_edges(x, root)
    elif sop_class_uid in SEGMENTATIONS:
        segmentation_edges(x, root)
    elif sop_class_uid.startswith(SR_PREFIX):
        structured_report_edges(x, root)
    general_edges(x, root, root.uid(STUDY_UID))
    x.walk(root)
    x.fill_locations()
    return x.edges
