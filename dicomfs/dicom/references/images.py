"""Known paths of images that point back at what made them: RT Image, registration, SEG.

An RT Image names its plan with beam, fraction group and image type (a DRR
or a portal image); a spatial or deformable registration names the frames of
reference it maps between and the images it used; a segmentation names its
source images, once per image rather than once per frame
(dicom-references.md 2.4, 2.6, 2.7).
"""

from __future__ import annotations

from dicomfs.dicom.records import Role
from dicomfs.dicom.references.extractor import Extractor, qualifier
from dicomfs.dicom.references.node import Node
from dicomfs.dicom.references.tags import (
    DEFINITION_SOURCE_SEQ,
    DEFORMABLE_REGISTRATION_SEQ,
    DERIVATION_IMAGE_SEQ,
    FOR_UID,
    IMAGE_TYPE,
    PER_FRAME_GROUPS_SEQ,
    REF_BEAM_NUMBER,
    REF_FRACTION_GROUP_NUMBER,
    REF_IMAGE_SEQ,
    REF_RT_PLAN_SEQ,
    REF_SURFACE_SEQ,
    REGISTRATION_SEQ,
    SEGMENT_NUMBER,
    SEGMENT_SEQ,
    SHARED_GROUPS_SEQ,
    SOURCE_FOR_UID,
    SOURCE_IMAGE_SEQ,
    SURFACE_SOURCE_SEQ,
    USED_FIDUCIALS_SEQ,
    USED_SEGMENTS_SEQ,
)


def rt_image_edges(x: Extractor, root: Node) -> None:
    """RT Image: its plan, with beam, fraction group and image type (DRR, PORTAL) (2.4)."""
    image_type = root.raw_text(IMAGE_TYPE).split("\\")
    q = (
        *qualifier("beam", root.values(REF_BEAM_NUMBER)),
        *qualifier("fraction_group", root.values(REF_FRACTION_GROUP_NUMBER)),
        *qualifier("image_type", image_type[2].strip() if len(image_type) > 2 else ""),
    )
    x.sop_refs(root, REF_RT_PLAN_SEQ, Role.PLAN, q)


def registration_edges(x: Extractor, root: Node) -> None:
    """Spatial and deformable registration: target and source frames, used images (2.6)."""
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


def segmentation_edges(x: Extractor, root: Node) -> None:
    """Segmentation: its source images and each segment's definition sources (2.7)."""
    for groups in (SHARED_GROUPS_SEQ, PER_FRAME_GROUPS_SEQ):
        for frame in root.items(groups):
            for derivation in frame.items(DERIVATION_IMAGE_SEQ):
                for source in derivation.items(SOURCE_IMAGE_SEQ):
                    # One edge per source image, not one per segmentation frame.
                    x.sop_ref(source, Role.SOURCE_IMAGE, sub_object=False)
    for segment in root.items(SEGMENT_SEQ):
        q = qualifier("segment", segment.values(SEGMENT_NUMBER))
        x.sop_refs(segment, DEFINITION_SOURCE_SEQ, Role.DEFINITION_SOURCE, q)
        for surface in segment.items(REF_SURFACE_SEQ):
            for source in surface.items(SURFACE_SOURCE_SEQ):
                x.sop_ref(source, Role.SOURCE_IMAGE, sub_object=False)
