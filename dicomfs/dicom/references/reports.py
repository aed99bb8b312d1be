"""Known paths of structured reports and key object selections: evidence and content items.

The evidence sequences are hierarchical (study > series > instance), so they
give each edge its location; content items are followed down the content
tree to :data:`MAX_WALK_DEPTH`, deeper trees flagged "walk_truncated"
(dicom-references.md 2.8).
"""

from __future__ import annotations

from collections.abc import Iterator

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
    # Depth first on a stack of item iterators: one item per level is held.
    stack: list[tuple[Iterator[Node], int]] = []
    content = _content(x, root, 0)
    if content is not None:
        stack.append((content, 1))
    while stack:
        items, depth = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
            continue
        content = _content(x, item, depth)
        if content is not None:
            stack.append((content, depth + 1))


def _content(x: Extractor, node: Node, depth: int) -> Iterator[Node] | None:
    """Edges of the content items of ``node``, then those items again to descend into.

    None when there is nothing to descend into, or the tree is too deep.
    """
    if depth >= MAX_WALK_DEPTH:
        if node.has_items(CONTENT_SEQ):
            x.flags.append("walk_truncated")
        return None
    for item in node.items(CONTENT_SEQ):
        for ref in item.items(REF_SOP_SEQ):
            x.sop_ref(ref, Role.EVIDENCE)
            x.sop_refs(ref, REF_SOP_SEQ, Role.EVIDENCE)  # presentation state of an image
    return iter(node.items(CONTENT_SEQ))
