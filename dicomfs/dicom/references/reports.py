"""Known paths of structured reports and key object selections: evidence and content items.

The evidence sequences are hierarchical (study > series > instance), so they
give each edge its location; content items are followed down the content
tree to :data:`MAX_WALK_DEPTH`, deeper trees flagged "walk_truncated"
(dicom-references.md 2.8).
"""

from __future__ import annotations

from dicomfs.dicom.records import Role
from dicomfs.dicom.references.extractor import MAX_WALK_DEPTH, Extractor
from dicomfs.dicom.references.node import Node
from dicomfs.dicom.references.tags import (
    CONTENT_SEQ,
    CURRENT_EVIDENCE_SEQ,
    PERTINENT_EVIDENCE_SEQ,
    REF_SOP_SEQ,
)


def structured_report_edges(x: Extractor, root: Node) -> None:
    """SR and KOS: evidence sequences and image references in the content tree (2.8)."""
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
