"""What reading one object's references may spend, and the flag that says a bound was hit.

A single file can name hundreds of thousands of objects: a valid 50 MB
structure set with 600,000 contour image items took 1.75 GB to index
(reliability.md D6). Each object therefore gets a :class:`Reading`, shared by
every node of its tree: it counts the sequence items read, the edges kept and
the bytes handed to pydicom's reader, and when one runs out it records
``edges_capped:<reason>`` in the object's flags and stops all further
reading. The object itself is still indexed, with its identity and the
edges found before the bound; the flag says its list is incomplete.

The bounds sit far above real data: the real exports and the demo data stay
well below them (``tests/reliability/test_rel_big_object.py``).
"""

from __future__ import annotations

from dicomfs.dicom.records import EDGES_CAPPED

# Distinct edges one object may contribute. A structure set names each image
# of its series once (a few hundred, rarely a few thousand); a SEG or a
# registration names its source images; 20,000 matches graph.MAX_MEMBERS.
MAX_EDGES = 20_000
# Sequence items read per object, plus one per SCAN_STEPS_PER_ITEM element
# headers stepped over to find where an undefined-length value ends: a time
# bound (about 10 us an item) for files whose items never add an edge, such
# as 600,000 items naming one image. A structure set of 200 ROIs x 1,000
# contours reads about 800,000; a SEG of 50,000 frames about 300,000.
MAX_READ_STEPS = 1_000_000
SCAN_STEPS_PER_ITEM = 8
# Bytes of sequences in an encoding only pydicom reads (implicit VR inside an
# explicit dataset, unknown VRs), per object: pydicom builds a Dataset per
# item, about 90 MB per MiB of empty items. The real exports, the demo data
# and pydicom's test files need at most 18 bytes.
MAX_PYDICOM_BYTES = 1024 * 1024

CAPPED_FLAG = EDGES_CAPPED  # the flag name lives with the records: the index counts it
_REASON_MAX = 200


class BudgetSpent(Exception):
    """Raised inside a reader when the object's read steps ran out."""


class Reading:
    """The budgets of one object's reading, shared by all its nodes and its extractor.

    The bounds are read from this module when the object's reading starts,
    so a test may lower them with monkeypatch.
    """

    __slots__ = (
        "cached_items",
        "edges_max",
        "ends",
        "flags",
        "pydicom_left",
        "pydicom_max",
        "steps_left",
        "steps_max",
        "stopped",
    )

    def __init__(self, flags: list[str]) -> None:
        self.flags = flags
        # File offset of a long undefined-length value -> offset of its
        # delimiter, as found by the first pass that stepped over it.
        self.ends: dict[int, int] = {}
        self.edges_max = MAX_EDGES
        self.steps_max = self.steps_left = MAX_READ_STEPS
        self.pydicom_max = self.pydicom_left = MAX_PYDICOM_BYTES
        self.cached_items = 0
        self.stopped = False

    def spend(self, steps: int) -> None:
        """Count ``steps`` read steps; BudgetSpent when the object has none left."""
        self.steps_left -= steps
        if self.steps_left < 0:
            raise BudgetSpent

    def too_many_edges(self, first_left_out: str) -> None:
        self.cap(f"more than {self.edges_max} references, first left out: {first_left_out}")

    def out_of_steps(self, where: str) -> None:
        self.cap(f"more than {self.steps_max} read steps, stopped in {where}")

    def pydicom_refused(self, where: str) -> None:
        self.cap(f"pydicom's reader needed from {where} on, over {self.pydicom_max} bytes")

    def cap(self, reason: str) -> None:
        """Stop reading this object's references, and say why in its flags (once)."""
        if not self.stopped:
            self.stopped = True
            if len(reason) > _REASON_MAX:  # a path 60 sequences deep says no more cut
                reason = reason[: _REASON_MAX - 3] + "..."
            self.flags.append(f"{CAPPED_FLAG}:{reason}")
