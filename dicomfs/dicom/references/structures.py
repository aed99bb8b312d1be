"""Known paths of the RT Structure Set: its images, series, study and frames of reference.

The frame of reference, study, series and contour image hierarchy
(dicom-references.md 2.2) gives the image edges their study and series, so a
missing slice can be retrieved by series; the referenced study is written with
SOP-reference syntax but is a study edge, never a missing instance. Also read
from point doses, whose older editions carry the same modules.
"""

from __future__ import annotations

from dicomfs.dicom.records import Level, Role
from dicomfs.dicom.references.extractor import Extractor, qualifier
from dicomfs.dicom.references.node import Node
from dicomfs.dicom.references.tags import (
    CONTOUR_IMAGE_SEQ,
    CONTOUR_SEQ,
    DEFINITION_SOURCE_SEQ,
    FOR_RELATIONSHIP_SEQ,
    FOR_UID,
    PREDECESSOR_STRUCTURE_SET_SEQ,
    REF_FOR_SEQ,
    REF_FOR_UID,
    REF_SOP_UID,
    RELATED_FOR_UID,
    ROI_CONTOUR_SEQ,
    ROI_NUMBER,
    RT_REF_SERIES_SEQ,
    RT_REF_STUDY_SEQ,
    SERIES_UID,
    SOURCE_SERIES_INFORMATION_SEQ,
    SOURCE_SERIES_SEQ,
    STRUCTURE_SET_ROI_SEQ,
)


def structure_set_edges(x: Extractor, root: Node) -> None:
    """RT Structure Set: frames of reference, study > series > images, ROI sources (2.2)."""
    for frame in root.items(REF_FOR_SEQ):
        x.frame_of_reference(frame, FOR_UID)
        for related in frame.items(FOR_RELATIONSHIP_SEQ):
            x.frame_of_reference(related, RELATED_FOR_UID)
        for study in frame.items(RT_REF_STUDY_SEQ):
            # A study, written with SOP-reference syntax (§4 item 15): never an instance.
            x.sop_ref(study, Role.STUDY, level=Level.STUDY)
            study_uid = study.uid(REF_SOP_UID)
            for series in study.items(RT_REF_SERIES_SEQ):
                listed = series.has_items(CONTOUR_IMAGE_SEQ)
                x.series(series, study_uid=study_uid, listed=listed)
                series_uid = series.uid(SERIES_UID)
                for image in series.items(CONTOUR_IMAGE_SEQ):
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
        q = qualifier("roi", roi.values(ROI_NUMBER))
        x.sop_refs(roi, DEFINITION_SOURCE_SEQ, Role.DEFINITION_SOURCE, q)
    x.sop_refs(root, PREDECESSOR_STRUCTURE_SET_SEQ, Role.PREDECESSOR)
