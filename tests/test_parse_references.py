"""dicomfs.dicom.references: the known paths of each IOD family, built in code.

One dataset per family (plan, ion plan, dose, RT image, treatment record,
second-generation RT, registration, structured report), with the role, path
and qualifiers each reference must come out with (dicom-references.md 2).
"""

from __future__ import annotations

from parse_helpers import (
    COMPREHENSIVE_SR,
    CT_IMAGE,
    DEFORMABLE_REG,
    RT_BEAMS_RECORD,
    RT_DOSE,
    RT_IMAGE,
    RT_PLAN,
    RT_STRUCT,
    SPATIAL_REG,
    dataset,
    edges,
    item,
    parse_ds,
    ref,
)
from pydicom.sequence import Sequence
from pydicom.uid import (
    ImplicitVRLittleEndian,
    generate_uid,
)

from dicomfs.dicom.records import Level, Role


def test_plan_paths_roles_and_qualifiers() -> None:
    rs, plan_dose, group_dose, beam_dose, cp_dose = (generate_uid() for _ in range(5))
    drr, setup_photo, brachy_image, prior_plan, radiation = (generate_uid() for _ in range(5))
    ds = dataset(RT_PLAN, RTPlanLabel="P", PlanIntent="CURATIVE")
    ds.ReferencedStructureSetSequence = Sequence([ref(RT_STRUCT, rs)])
    ds.ReferencedDoseSequence = Sequence([ref(RT_DOSE, plan_dose)])
    ds.ReferencedRTPlanSequence = Sequence(
        [ref(RT_PLAN, prior_plan, RTPlanRelationship="PREDECESSOR")]
    )
    ds.FractionGroupSequence = Sequence(
        [item(FractionGroupNumber=1, ReferencedDoseSequence=Sequence([ref(RT_DOSE, group_dose)]))]
    )
    control_points = [item(ControlPointIndex=i) for i in range(3)]
    control_points[2].ReferencedDoseSequence = Sequence([ref(RT_DOSE, cp_dose)])
    ds.BeamSequence = Sequence(
        [
            item(BeamNumber=1),
            item(
                BeamNumber=2,
                ReferencedDoseSequence=Sequence([ref(RT_DOSE, beam_dose)]),
                ReferencedReferenceImageSequence=Sequence([ref(RT_IMAGE, drr)]),
                DefinitionSourceSequence=Sequence(
                    [ref("1.2.840.10008.5.1.4.1.1.481.13", radiation)]
                ),
                ControlPointSequence=Sequence(control_points),
            ),
        ]
    )
    ds.ApplicationSetupSequence = Sequence(
        [
            item(
                ApplicationSetupNumber=4,
                ReferencedReferenceImageSequence=Sequence([ref(RT_IMAGE, brachy_image)]),
            )
        ]
    )
    ds.PatientSetupSequence = Sequence(
        [
            item(
                PatientSetupNumber=1,
                ReferencedSetupImageSequence=Sequence([ref(RT_IMAGE, setup_photo)]),
            )
        ]
    )
    plan = parse_ds(ds)
    by_target = {e.target_uid: e for e in plan.edges}
    assert by_target[rs].role is Role.STRUCTURE_SET
    assert by_target[plan_dose].role is Role.DOSE
    assert by_target[plan_dose].path == "ReferencedDoseSequence[0].ReferencedSOPInstanceUID"
    assert by_target[group_dose].qualifiers == (("fraction_group", "1"),)
    assert by_target[group_dose].path == (
        "FractionGroupSequence[0].ReferencedDoseSequence[0].ReferencedSOPInstanceUID"
    )
    assert by_target[beam_dose].qualifiers == (("beam", "2"),)
    assert by_target[beam_dose].path == (
        "BeamSequence[1].ReferencedDoseSequence[0].ReferencedSOPInstanceUID"
    )
    assert by_target[cp_dose].role is Role.DOSE
    assert by_target[cp_dose].qualifiers == (("beam", "2"), ("control_point", "2"))
    assert by_target[drr].role is Role.REFERENCE_IMAGE
    assert by_target[drr].qualifier("beam") == "2"
    assert by_target[brachy_image].role is Role.REFERENCE_IMAGE
    assert by_target[setup_photo].role is Role.REFERENCE_IMAGE
    assert by_target[prior_plan].role is Role.RELATED_PLAN
    assert by_target[prior_plan].qualifier("relationship") == "PREDECESSOR"
    assert by_target[radiation].role is Role.DEFINITION_SOURCE
    assert by_target[rs].class_hint == RT_STRUCT
    assert len(plan.edges) == 10
    assert plan.plan_intent == "CURATIVE"


def test_ion_plan_uses_the_plan_paths() -> None:
    dose = generate_uid()
    ds = dataset("1.2.840.10008.5.1.4.1.1.481.8")
    ds.IonBeamSequence = Sequence(
        [item(BeamNumber=3, ReferencedDoseSequence=Sequence([ref(RT_DOSE, dose)]))]
    )
    (edge,) = parse_ds(ds).edges
    assert (edge.target_uid, edge.role, edge.qualifiers) == (dose, Role.DOSE, (("beam", "3"),))


def test_dose_paths_and_qualifiers() -> None:
    plan, rs, record, registration, source = (generate_uid() for _ in range(5))
    ds = dataset(RT_DOSE, DoseSummationType="BEAM")
    group = item(
        ReferencedFractionGroupNumber=1,
        ReferencedBeamSequence=Sequence(
            [item(ReferencedBeamNumber=1), item(ReferencedBeamNumber=3)]
        ),
    )
    ds.ReferencedRTPlanSequence = Sequence(
        [ref(RT_PLAN, plan, ReferencedFractionGroupSequence=Sequence([group]))]
    )
    ds.ReferencedStructureSetSequence = Sequence([ref(RT_STRUCT, rs)])
    ds.ReferencedTreatmentRecordSequence = Sequence([ref(RT_BEAMS_RECORD, record)])
    ds.ReferencedSpatialRegistrationSequence = Sequence([ref(SPATIAL_REG, registration)])
    ds.ReferencedInstanceSequence = Sequence([ref(RT_DOSE, source)])
    dose = parse_ds(ds, ImplicitVRLittleEndian)
    by_target = {e.target_uid: e for e in dose.edges}
    assert by_target[plan].role is Role.PLAN
    assert by_target[plan].qualifiers == (
        ("fraction_group", "1"),
        ("beams", "1,3"),
        ("dose_summation_type", "BEAM"),
    )
    assert by_target[rs].role is Role.STRUCTURE_SET
    assert by_target[record].role is Role.TREATMENT_RECORD
    assert by_target[registration].role is Role.REGISTRATION
    assert by_target[source].role is Role.SOURCE_INSTANCE
    assert dose.dose_summation_type == "BEAM"


def test_rt_image_plan_reference_with_beam_and_image_type() -> None:
    plan = generate_uid()
    ds = dataset(RT_IMAGE, ReferencedBeamNumber=2, ReferencedFractionGroupNumber=1)
    ds.ImageType = ["DERIVED", "SECONDARY", "DRR"]
    ds.RTImageLabel = "DRR beam 2"
    ds.ReferencedRTPlanSequence = Sequence([ref(RT_PLAN, plan)])
    image = parse_ds(ds)
    (edge,) = image.edges
    assert edge.role is Role.PLAN
    assert edge.qualifiers == (("beam", "2"), ("fraction_group", "1"), ("image_type", "DRR"))
    assert image.label == "DRR beam 2"


def test_treatment_record_paths() -> None:
    plan, earlier, portal = (generate_uid() for _ in range(3))
    ds = dataset(RT_BEAMS_RECORD)
    ds.ReferencedRTPlanSequence = Sequence([ref(RT_PLAN, plan)])
    ds.ReferencedTreatmentRecordSequence = Sequence([ref(RT_BEAMS_RECORD, earlier)])
    ds.TreatmentSessionBeamSequence = Sequence(
        [
            item(
                ReferencedBeamNumber=5,
                ReferencedVerificationImageSequence=Sequence([ref(RT_IMAGE, portal)]),
            )
        ]
    )
    by_target = {e.target_uid: e for e in parse_ds(ds).edges}
    assert by_target[plan].role is Role.PLAN
    assert by_target[earlier].role is Role.TREATMENT_RECORD
    assert by_target[portal].role is Role.VERIFICATION_IMAGE
    assert by_target[portal].qualifiers == (("beam", "5"),)


def test_second_generation_scope_references_a_legacy_plan() -> None:
    plan = generate_uid()
    ds = dataset("1.2.840.10008.5.1.4.1.1.481.22")
    ds.RTPatientPositionScopeSequence = Sequence(
        [item(ReferencedRTPlanSequence=Sequence([ref(RT_PLAN, plan)]))]
    )
    (edge,) = parse_ds(ds).edges
    assert (edge.target_uid, edge.role) == (plan, Role.PLAN)


def test_spatial_registration_frames_and_images() -> None:
    target_for, source_for, image, series = (generate_uid() for _ in range(4))
    ds = dataset(SPATIAL_REG, FrameOfReferenceUID=target_for)
    ds.RegistrationSequence = Sequence(
        [
            item(FrameOfReferenceUID=target_for),  # the usual identity item
            item(
                FrameOfReferenceUID=source_for,
                ReferencedImageSequence=Sequence([ref("1.2.840.10008.5.1.4.1.1.4", image)]),
            ),
        ]
    )
    ds.ReferencedSeriesSequence = Sequence(
        [
            item(
                SeriesInstanceUID=series,
                ReferencedInstanceSequence=Sequence([ref("1.2.840.10008.5.1.4.1.1.4", image)]),
            )
        ]
    )
    reg = parse_ds(ds)
    frames = {
        (e.target_uid, e.qualifier("registration")) for e in edges(reg, Role.FRAME_OF_REFERENCE)
    }
    assert frames == {(target_for, "target"), (target_for, "source"), (source_for, "source")}
    (image_edge,) = edges(reg, Role.IMAGE)
    assert image_edge.target_uid == image
    assert image_edge.qualifier("registration") == "source"
    # location learned from the Common Instance Reference
    assert (image_edge.study_uid, image_edge.series_uid) == (ds.StudyInstanceUID, series)


def test_deformable_registration_source_frame() -> None:
    target_for, source_for = generate_uid(), generate_uid()
    ds = dataset(DEFORMABLE_REG, FrameOfReferenceUID=target_for)
    ds.DeformableRegistrationSequence = Sequence([item(SourceFrameOfReferenceUID=source_for)])
    reg = parse_ds(ds)
    frames = {(e.target_uid, e.qualifier("registration")) for e in reg.edges}
    assert frames == {(target_for, "target"), (source_for, "source")}


def test_structured_report_evidence_content_and_predecessor() -> None:
    study, series, evidence, cited, state, earlier = (generate_uid() for _ in range(6))
    ds = dataset(COMPREHENSIVE_SR)
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence(
        [
            item(
                StudyInstanceUID=study,
                ReferencedSeriesSequence=Sequence(
                    [
                        item(
                            SeriesInstanceUID=series,
                            ReferencedSOPSequence=Sequence([ref(CT_IMAGE, evidence)]),
                        )
                    ]
                ),
            )
        ]
    )
    image_item = item(ValueType="IMAGE")
    image_item.ReferencedSOPSequence = Sequence(
        [
            ref(
                CT_IMAGE,
                cited,
                ReferencedSOPSequence=Sequence([ref("1.2.840.10008.5.1.4.1.1.11.1", state)]),
            )
        ]
    )
    ds.ContentSequence = Sequence(
        [item(ValueType="CONTAINER", ContentSequence=Sequence([image_item]))]
    )
    ds.PredecessorDocumentsSequence = Sequence(
        [
            item(
                StudyInstanceUID=study,
                ReferencedSeriesSequence=Sequence(
                    [
                        item(
                            SeriesInstanceUID=series,
                            ReferencedSOPSequence=Sequence([ref(COMPREHENSIVE_SR, earlier)]),
                        )
                    ]
                ),
            )
        ]
    )
    report = parse_ds(ds)
    by_target = {e.target_uid: e for e in report.edges}
    assert by_target[evidence].role is Role.EVIDENCE
    assert (by_target[evidence].study_uid, by_target[evidence].series_uid) == (study, series)
    assert by_target[cited].role is Role.EVIDENCE
    assert by_target[cited].path == (
        "ContentSequence[0].ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID"
    )
    assert by_target[state].role is Role.EVIDENCE
    assert by_target[earlier].role is Role.PREDECESSOR
    assert not edges(report, level=Level.SERIES)  # hierarchical series are locations, not edges
