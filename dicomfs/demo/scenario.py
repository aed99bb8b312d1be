"""One demo patient fixed up front: every UID, the geometry, the ROIs and where files go.

The object writers (images, structures, plans, delivery, registration) each
build their part of a patient from this record, so the references between
objects agree by construction: a plan names the structure set UID that the
structure-set writer also uses. All randomness comes from one generator
seeded by the demo seed and patient number, drawn here in a fixed order, so
output stays deterministic however the writers are arranged.
"""

from __future__ import annotations

import datetime as _dt
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from dicomfs.demo.builders import EXPLICIT_LE, Study, common, demo_uid, save
from dicomfs.demo.phantom import CT_THICKNESS, Shape, body, z_positions

__all__ = ["FileLog", "PatientScenario", "Roi"]

_BASE_DATE = _dt.date(2024, 1, 8)


@dataclass(frozen=True)
class Roi:
    """A region of interest: structure-set numbering, its outline and the slices it covers."""

    number: int
    name: str
    kind: str
    color: tuple[int, int, int]
    shape: Shape
    slices: tuple[int, ...]
    points: int


@dataclass
class FileLog:
    """Collects files and encodings while a patient's objects are written."""

    root: Path
    files: dict[str, str] = field(default_factory=dict)
    encodings: dict[str, str] = field(default_factory=dict)

    def write(self, ds: Dataset, relative: str, encoding: str = EXPLICIT_LE) -> str:
        """Save ``ds`` under the root and note its path and encoding by SOP Instance UID."""
        uid = str(ds.SOPInstanceUID)
        save(ds, self.root / relative, encoding)
        self.files[uid] = relative
        self.encodings[uid] = encoding
        return uid


class PatientScenario:
    """One coherent RT patient's identities and geometry; UIDs are fixed up front."""

    def __init__(
        self, root: Path, seed: int, number: int, ct_slices: int, mr_slices: int, rows: int
    ):
        self.seed = seed
        self.number = number
        self.ct_slices = ct_slices
        self.mr_slices = mr_slices
        self.rows = rows
        self.rng = random.Random(f"dicomfs-demo/{seed}/{number}")
        self.writer = FileLog(root)
        pid = f"DEMO-{seed}-{number:03d}"
        self.pid = pid
        date = (_BASE_DATE + _dt.timedelta(days=7 * (number - 1))).strftime("%Y%m%d")
        self.study = Study(
            pid, f"Demo^Patient{number}", self.uid("study"), date, f"ACC{seed}{number:04d}"
        )
        self.ct_series = self.uid("ct-series")
        self.mr_series = self.uid("mr-series")
        self.ct_for = self.uid("ct-for")
        self.mr_for = self.uid("mr-for")
        self.phantom_for = self.uid("phantom-for")
        self.ct_uids = tuple(self.uid("ct", k) for k in range(ct_slices))
        self.mr_uids = tuple(self.uid("mr", k) for k in range(mr_slices))
        self.rs_uids = tuple(self.uid("rs", k) for k in range(3))
        self.plan = self.uid("plan")
        self.plan_dose = self.uid("plan-dose")
        self.beam_doses = tuple(self.uid("beam-dose", b) for b in (1, 2))
        self.drr = self.uid("drr")
        self.record = self.uid("record")
        self.portal = self.uid("portal")
        self.verification_plan = self.uid("verification-plan")
        self.registration = self.uid("registration")
        self.seg = self.uid("seg")
        self.missing_plan = self.uid("missing-rs-plan")
        self.missing_rs = self.uid("missing-rs")
        self.z = z_positions(ct_slices, CT_THICKNESS)
        quarter = ct_slices // 4
        target_slices = tuple(range(quarter, ct_slices - quarter)) or tuple(range(ct_slices))
        self.ptv = Shape(
            20.0 + self.rng.uniform(-5, 5), -10.0 + self.rng.uniform(-5, 5), 25.0, 25.0, 1
        )
        every = tuple(range(ct_slices))
        self.rois = (
            Roi(1, "BODY", "EXTERNAL", (0, 255, 0), body(0.0), every, 32),
            Roi(2, "PTV", "PTV", (255, 0, 0), self.ptv, target_slices, 24),
            Roi(3, "SpinalCanal", "ORGAN", (255, 255, 0), Shape(0, 50, 8, 8, 1), every, 16),
        )
        self.gantry = (self.rng.choice((0, 10, 20)), self.rng.choice((180, 190, 200)))
        # Patient 1 carries the odd encodings, so every other patient is a
        # plain control case.
        self.quirky = number == 1

    def uid(self, *parts: object) -> str:
        """This patient's UID for a name."""
        # The sizes are part of the name: a demo of another shape has other
        # content, so it must not reuse UIDs (that would be a conflict).
        shape = (self.ct_slices, self.mr_slices, self.rows)
        return demo_uid(self.seed, "patient", self.number, *shape, *parts)

    def common(self, **kwargs: Any) -> Dataset:
        """The General modules of one of this patient's objects (see ``builders.common``)."""
        return common(self.study, **kwargs)

    def tps(self, prefix: str, uid: str) -> str:
        """Where the planning system's export puts an object: ``RP.<uid>.dcm`` and so on."""
        return f"export-tps/{self.pid}/{prefix}.{uid}.dcm"
