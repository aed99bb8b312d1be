"""Synthetic, coherent RT patients for tests, demos and benchmarks: ``write_demo``.

Real patient data cannot live in a repository, and hand-made fixtures drift
from what the code under test expects. So every test computes its
expectations from the :class:`DemoPatient` records returned here, never from
hard-coded UIDs. The data imitates what a clinic's folders actually hold:
files foldered by whoever exported them, several structure sets per CT
series, doses that name the plan and a plan that names only one of them,
wrong ReferencedSOPClassUID hints, files without preamble (Monaco-style),
big-endian and deflated files, and (``hostile``) files that must be
rejected or flagged.

This module runs the patient scenario: each object kind has its own writer
module (images, structures, rt_plan, delivery, registration) working from
one :class:`~dicomfs.demo.scenario.PatientScenario`. Output is deterministic
for a given seed: UIDs are name-based (``2.25.<uuid5>``, PS3.5 B.2), dates
are fixed and no clock or global random state is used, so two runs are
byte-identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dicomfs.demo.builders import EXPLICIT_LE, demo_uid
from dicomfs.demo.delivery import write_record, write_rt_images
from dicomfs.demo.hostile import write_hostile
from dicomfs.demo.images import write_ct, write_mr
from dicomfs.demo.registration import write_registration
from dicomfs.demo.rt_plan import write_doses, write_plans
from dicomfs.demo.scenario import PatientScenario
from dicomfs.demo.structures import write_seg, write_structure_sets

__all__ = ["DemoPatient", "DemoSet", "demo_data_command", "write_demo"]


@dataclass(frozen=True)
class DemoPatient:
    """Everything a test needs to compute its expectations for one patient.

    ``structure_set_uids[0]`` is the structure set the plan names; the others
    reference the same CT series and must stay out of the plan package.
    ``missing_structure_set_uid`` is named by ``missing_structure_set_plan_uid``
    and deliberately not written. The DRR names the plan (with a wrong RT Ion
    Plan class hint); the portal image does not, so only the record leads to
    it. The verification plan sits on its own phantom frame of reference
    (``verification_plan_for_uid``). ``files`` and ``encodings`` cover every
    instance written for the patient.
    """

    patient_id: str
    study_uid: str
    ct_series_uid: str
    ct_uids: tuple[str, ...]
    mr_series_uid: str
    mr_uids: tuple[str, ...]
    ct_for_uid: str
    mr_for_uid: str
    structure_set_uids: tuple[str, ...]
    plan_uid: str
    plan_structure_set_uid: str
    plan_dose_uid: str
    beam_dose_uids: tuple[str, ...]
    rt_image_uid: str
    record_uid: str
    verification_image_uid: str
    verification_plan_uid: str
    registration_uid: str
    seg_uid: str
    missing_structure_set_plan_uid: str
    missing_structure_set_uid: str
    files: dict[str, str]
    encodings: dict[str, str]
    beam_numbers: tuple[int, ...] = (1, 2)
    verification_plan_for_uid: str = ""


@dataclass(frozen=True)
class DemoSet:
    """What ``write_demo`` wrote.

    ``hostile`` maps a relative path to the RejectKind value it must be
    rejected with, or to a tag for files that are indexed but flagged
    (``unsafe_uid``) or merely awkward (``non_utf8_name``). ``hostile_uids``
    gives the SOP Instance UID written into each hostile file that has one
    (raw, possibly unsafe). ``duplicates`` maps a description to
    ``(original, copy)`` relative paths. Non-UTF-8 paths are ``os.fsdecode``
    strings (surrogateescape).
    """

    root: Path
    patients: tuple[DemoPatient, ...]
    hostile: dict[str, str]
    duplicates: dict[str, tuple[str, ...]]
    hostile_uids: dict[str, str] = field(default_factory=dict)


def _write_patient(p: PatientScenario) -> DemoPatient:
    """Write every object of one patient, in a fixed order, and say what was written."""
    write_ct(p)
    write_mr(p)
    write_structure_sets(p)
    write_plans(p)
    write_doses(p)
    write_rt_images(p)
    write_record(p)
    write_registration(p)
    write_seg(p)
    return DemoPatient(
        patient_id=p.pid,
        study_uid=p.study.study_uid,
        ct_series_uid=p.ct_series,
        ct_uids=p.ct_uids,
        mr_series_uid=p.mr_series,
        mr_uids=p.mr_uids,
        ct_for_uid=p.ct_for,
        mr_for_uid=p.mr_for,
        structure_set_uids=p.rs_uids,
        plan_uid=p.plan,
        plan_structure_set_uid=p.rs_uids[0],
        plan_dose_uid=p.plan_dose,
        beam_dose_uids=p.beam_doses,
        rt_image_uid=p.drr,
        record_uid=p.record,
        verification_image_uid=p.portal,
        verification_plan_uid=p.verification_plan,
        registration_uid=p.registration,
        seg_uid=p.seg,
        missing_structure_set_plan_uid=p.missing_plan,
        missing_structure_set_uid=p.missing_rs,
        files=dict(p.writer.files),
        encodings=dict(p.writer.encodings),
        verification_plan_for_uid=p.phantom_for,
    )


def write_demo(
    root: Path,
    *,
    patients: int = 2,
    ct_slices: int = 8,
    mr_slices: int = 4,
    hostile: bool = True,
    seed: int = 0,
    ct_rows: int = 64,
) -> DemoSet:
    """Write ``patients`` coherent RT patients (and hostile files) under ``root``.

    Patient 1 carries the awkward encodings (plan and clinical RS without
    preamble or file meta, a deflated RS, a big-endian CT slice); the others
    are plain explicit VR little endian, so a failure points at either the
    encoding or the graph.
    """
    if patients < 1 or ct_slices < 1 or mr_slices < 1 or ct_rows < 8:
        raise ValueError("patients, ct_slices and mr_slices must be >= 1 and ct_rows >= 8")
    root.mkdir(parents=True, exist_ok=True)
    built = tuple(
        _write_patient(PatientScenario(root, seed, number, ct_slices, mr_slices, ct_rows))
        for number in range(1, patients + 1)
    )
    if not hostile:
        return DemoSet(root=root, patients=built, hostile={}, duplicates={})
    first = built[0]
    plain_ct = [first.files[uid] for uid in first.ct_uids if first.encodings[uid] == EXPLICIT_LE]
    result = write_hostile(
        root,
        seed=seed,
        ct_paths=plain_ct,
        make_uid=lambda name: demo_uid(seed, "hostile", ct_slices, mr_slices, ct_rows, name),
    )
    return DemoSet(
        root=root,
        patients=built,
        hostile=result.hostile,
        duplicates=result.duplicates,
        hostile_uids=result.uids,
    )


def demo_data_command(dest: Path, patients: int, ct_slices: int) -> DemoSet:
    """Entry point for ``dicomfs demo-data``: the default demo with hostile files."""
    return write_demo(dest, patients=patients, ct_slices=ct_slices)
