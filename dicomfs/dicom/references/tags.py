"""The catalogue's vocabulary: the tags and SOP classes the reference paths name.

Tags are looked up by keyword in pydicom's dictionary at import, so a typo
fails loudly instead of silently skipping edges; the SOP class UIDs pick the
known paths of an IOD (dicom-references.md section 2). Kept in one module
because most tags serve several IOD families (a plan reference is read from
doses, RT images, treatment records and second-generation objects alike).
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword

# Retired study-management classes used as the "class" of a study reference
# (RTReferencedStudySequence, ReferencedStudySequence; dicom-references.md §4.15).
STUDY_REFERENCE_CLASSES = frozenset({"1.2.840.10008.3.1.2.3.1", "1.2.840.10008.3.1.2.3.2"})


def _t(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:  # a typo here must fail at import, not skip edges silently
        raise LookupError(keyword)
    return tag


SOP_CLASS_UID = _t("SOPClassUID")
SOP_INSTANCE_UID = _t("SOPInstanceUID")
STUDY_UID = _t("StudyInstanceUID")
SERIES_UID = _t("SeriesInstanceUID")
FOR_UID = _t("FrameOfReferenceUID")
SPECIFIC_CHARACTER_SET = _t("SpecificCharacterSet")
REF_SOP_UID = _t("ReferencedSOPInstanceUID")
REF_CLASS_UID = _t("ReferencedSOPClassUID")
REF_FRAME_NUMBER = _t("ReferencedFrameNumber")
REF_SEGMENT_NUMBER = _t("ReferencedSegmentNumber")
REF_FOR_UID = _t("ReferencedFrameOfReferenceUID")
SOURCE_FOR_UID = _t("SourceFrameOfReferenceUID")
RELATED_FOR_UID = _t("RelatedFrameOfReferenceUID")
FOR_TAGS = (FOR_UID, REF_FOR_UID, SOURCE_FOR_UID, RELATED_FOR_UID)

# Sequences and qualifiers of the known paths (dicom-references.md section 2).
REF_SERIES_SEQ = _t("ReferencedSeriesSequence")
REF_SOP_SEQ = _t("ReferencedSOPSequence")
REF_INSTANCE_SEQ = _t("ReferencedInstanceSequence")
REF_IMAGE_SEQ = _t("ReferencedImageSequence")
REF_STUDY_SEQ = _t("ReferencedStudySequence")
SOURCE_IMAGE_SEQ = _t("SourceImageSequence")
SOURCE_INSTANCE_SEQ = _t("SourceInstanceSequence")
STUDIES_CONTAINING_SEQ = _t("StudiesContainingOtherReferencedInstancesSequence")
REF_SPATIAL_REGISTRATION_SEQ = _t("ReferencedSpatialRegistrationSequence")
PREDECESSOR_DOCUMENTS_SEQ = _t("PredecessorDocumentsSequence")
DEFINITION_SOURCE_SEQ = _t("DefinitionSourceSequence")
# RT Plan / RT Ion Plan
REF_STRUCTURE_SET_SEQ = _t("ReferencedStructureSetSequence")
REF_DOSE_SEQ = _t("ReferencedDoseSequence")
REF_RT_PLAN_SEQ = _t("ReferencedRTPlanSequence")
RT_PLAN_RELATIONSHIP = _t("RTPlanRelationship")
FRACTION_GROUP_SEQ = _t("FractionGroupSequence")
FRACTION_GROUP_NUMBER = _t("FractionGroupNumber")
BEAM_SEQ = _t("BeamSequence")
ION_BEAM_SEQ = _t("IonBeamSequence")
BEAM_NUMBER = _t("BeamNumber")
CONTROL_POINT_SEQ = _t("ControlPointSequence")
CONTROL_POINT_INDEX = _t("ControlPointIndex")
REF_REFERENCE_IMAGE_SEQ = _t("ReferencedReferenceImageSequence")
APPLICATION_SETUP_SEQ = _t("ApplicationSetupSequence")
APPLICATION_SETUP_NUMBER = _t("ApplicationSetupNumber")
PATIENT_SETUP_SEQ = _t("PatientSetupSequence")
PATIENT_SETUP_NUMBER = _t("PatientSetupNumber")
REF_SETUP_IMAGE_SEQ = _t("ReferencedSetupImageSequence")
# RT Structure Set
REF_FOR_SEQ = _t("ReferencedFrameOfReferenceSequence")
RT_REF_STUDY_SEQ = _t("RTReferencedStudySequence")
RT_REF_SERIES_SEQ = _t("RTReferencedSeriesSequence")
CONTOUR_IMAGE_SEQ = _t("ContourImageSequence")
ROI_CONTOUR_SEQ = _t("ROIContourSequence")
CONTOUR_SEQ = _t("ContourSequence")
SOURCE_SERIES_SEQ = _t("SourceSeriesSequence")
SOURCE_SERIES_INFORMATION_SEQ = _t("SourceSeriesInformationSequence")
STRUCTURE_SET_ROI_SEQ = _t("StructureSetROISequence")
ROI_NUMBER = _t("ROINumber")
PREDECESSOR_STRUCTURE_SET_SEQ = _t("PredecessorStructureSetSequence")
FOR_RELATIONSHIP_SEQ = _t("FrameOfReferenceRelationshipSequence")
# RT Dose, RT Image, treatment records
DOSE_SUMMATION_TYPE = _t("DoseSummationType")
REF_FRACTION_GROUP_SEQ = _t("ReferencedFractionGroupSequence")
REF_FRACTION_GROUP_NUMBER = _t("ReferencedFractionGroupNumber")
REF_BEAM_SEQ = _t("ReferencedBeamSequence")
REF_BEAM_NUMBER = _t("ReferencedBeamNumber")
REF_BRACHY_SETUP_SEQ = _t("ReferencedBrachyApplicationSetupSequence")
REF_BRACHY_SETUP_NUMBER = _t("ReferencedBrachyApplicationSetupNumber")
REF_TREATMENT_RECORD_SEQ = _t("ReferencedTreatmentRecordSequence")
IMAGE_TYPE = _t("ImageType")
SESSION_BEAM_SEQ = _t("TreatmentSessionBeamSequence")
SESSION_ION_BEAM_SEQ = _t("TreatmentSessionIonBeamSequence")
SESSION_SETUP_SEQ = _t("TreatmentSessionApplicationSetupSequence")
REF_VERIFICATION_IMAGE_SEQ = _t("ReferencedVerificationImageSequence")
# second-generation RT
POSITION_SCOPE_SEQ = _t("RTPatientPositionScopeSequence")
RT_RADIATION_SEQ = _t("RTRadiationSequence")
REF_RT_RADIATION_SEQ = _t("ReferencedRTRadiationSequence")
REF_RT_RADIATION_SET_SEQ = _t("ReferencedRTRadiationSetSequence")
REF_RT_RADIATION_RECORD_SEQ = _t("ReferencedRTRadiationRecordSequence")
REF_RT_INSTANCE_SEQ = _t("ReferencedRTInstanceSequence")
PHYSICIAN_INTENT_SEQ = _t("RTPhysicianIntentSequence")
PHYSICIAN_INTENT_PREDECESSOR_SEQ = _t("RTPhysicianIntentPredecessorSequence")
SEGMENT_REFERENCE_SEQ = _t("SegmentReferenceSequence")
DIRECT_SEGMENT_REFERENCE_SEQ = _t("DirectSegmentReferenceSequence")
# registration, segmentation, SR
REGISTRATION_SEQ = _t("RegistrationSequence")
DEFORMABLE_REGISTRATION_SEQ = _t("DeformableRegistrationSequence")
USED_FIDUCIALS_SEQ = _t("UsedFiducialsSequence")
USED_SEGMENTS_SEQ = _t("UsedSegmentsSequence")
SHARED_GROUPS_SEQ = _t("SharedFunctionalGroupsSequence")
PER_FRAME_GROUPS_SEQ = _t("PerFrameFunctionalGroupsSequence")
DERIVATION_IMAGE_SEQ = _t("DerivationImageSequence")
SEGMENT_SEQ = _t("SegmentSequence")
SEGMENT_NUMBER = _t("SegmentNumber")
REF_SURFACE_SEQ = _t("ReferencedSurfaceSequence")
SURFACE_SOURCE_SEQ = _t("SegmentSurfaceSourceInstanceSequence")
CURRENT_EVIDENCE_SEQ = _t("CurrentRequestedProcedureEvidenceSequence")
PERTINENT_EVIDENCE_SEQ = _t("PertinentOtherEvidenceSequence")
CONTENT_SEQ = _t("ContentSequence")

# SOP classes with known paths (dicom-references.md section 2).
RT_PREFIX = "1.2.840.10008.5.1.4.1.1.481."  # every RT class, 1st and 2nd generation
RT_IMAGE, RT_DOSE, RT_STRUCTURE_SET = RT_PREFIX + "1", RT_PREFIX + "2", RT_PREFIX + "3"
RT_PLAN, RT_ION_PLAN = RT_PREFIX + "5", RT_PREFIX + "8"
TREATMENT_RECORDS = frozenset({RT_PREFIX + "4", RT_PREFIX + "6", RT_PREFIX + "7", RT_PREFIX + "9"})
REGISTRATIONS = frozenset({"1.2.840.10008.5.1.4.1.1.66.1", "1.2.840.10008.5.1.4.1.1.66.3"})
SEGMENTATIONS = frozenset(f"1.2.840.10008.5.1.4.1.1.66.{n}" for n in (4, 5, 7, 8))
SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
