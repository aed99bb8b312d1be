"""Demo data, apart from the product: synthetic RT patients and hostile files.

Writes DICOM with pydicom for tests, benchmarks and ``dicomfs demo-data``.
May import only ``dicom`` (records, rejection kinds); only ``commands``
imports it. The entry points are re-exported here, so callers need not know
which module of the package writes what:

- ``patients``: ``write_demo``, the coherent RT patients (their objects are
  written by ``images``, ``structures``, ``rt_plan``, ``delivery`` and
  ``registration`` from one ``scenario``, with shared ``builders`` and the
  ``phantom`` geometry); ``images``: ``write_ct_series``, ``ct_bytes``.
- ``hostile``: the demo tree's hostile files; ``hostile_corpus`` and
  ``hostile_tree``: the reliability suite's hostile files and filesystem
  objects (sharing ``hostile_parts``).
"""

from dicomfs.demo.builders import (
    BIG_ENDIAN,
    DEFLATED,
    EXPLICIT_LE,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION,
    IMPLICIT_NO_PREAMBLE,
    demo_uid,
)
from dicomfs.demo.hostile import HostileFiles, write_hostile
from dicomfs.demo.hostile_corpus import HostileCorpus, write_hostile_corpus
from dicomfs.demo.hostile_parts import (
    BENIGN_DUPLICATE,
    CONFLICT,
    INSTANCE,
    NON_UTF8_NAME,
    UNSAFE_UID,
)
from dicomfs.demo.hostile_tree import HostileTree, remove_hostile_tree, write_hostile_tree
from dicomfs.demo.images import ct_bytes, write_ct_series
from dicomfs.demo.patients import DemoPatient, DemoSet, demo_data_command, write_demo

__all__ = [
    "BENIGN_DUPLICATE",
    "BIG_ENDIAN",
    "CONFLICT",
    "DEFLATED",
    "EXPLICIT_LE",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION",
    "IMPLICIT_NO_PREAMBLE",
    "INSTANCE",
    "NON_UTF8_NAME",
    "UNSAFE_UID",
    "DemoPatient",
    "DemoSet",
    "HostileCorpus",
    "HostileFiles",
    "HostileTree",
    "ct_bytes",
    "demo_data_command",
    "demo_uid",
    "remove_hostile_tree",
    "write_ct_series",
    "write_demo",
    "write_hostile",
    "write_hostile_corpus",
    "write_hostile_tree",
]
