"""dicomfs.dicom.references on sequences: the generic walk, its bound and the raw item reader.

The walk finds references no known path names (private tags, unknown
sequences) and stops at MAX_WALK_DEPTH; sequences are read alike whatever
their length encoding or size; the fast item reader agrees with pydicom on
every sequence it accepts and leaves the unusual ones to it.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pytest
from parse_helpers import (
    CT_IMAGE,
    HIGHDICOM,
    REAL_FILES,
    RT_DOSE,
    RT_PLAN,
    RT_STRUCT,
    dataset,
    encode,
    file_header,
    identity,
    item,
    nested_sequences,
    parse_ds,
    read,
    ref,
    targets,
)
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filereader import data_element_generator
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pydicom.values import convert_SQ

from dicomfs.dicom.parse import parse_bytes
from dicomfs.dicom.records import Instance, Level, Role
from dicomfs.dicom.references import MAX_WALK_DEPTH, SEQUENCE_TAGS, read_items


def test_5000_nested_defined_length_sequences_are_walked_to_a_bound() -> None:
    data = file_header(ExplicitVRLittleEndian) + identity()
    data += nested_sequences(5000, undefined=False)
    result = parse_bytes(data)
    assert isinstance(result, Instance), result
    assert "walk_truncated" in result.flags
    assert result.edges == []


def test_nesting_within_the_bound_is_walked_completely() -> None:
    data = file_header(ExplicitVRLittleEndian, sop_class=CT_IMAGE) + identity()
    data += nested_sequences(MAX_WALK_DEPTH, undefined=False)
    result = parse_bytes(data)
    assert isinstance(result, Instance), result
    assert "walk_truncated" not in result.flags
    (edge,) = result.edges
    assert edge.target_uid == "1.2.840.99.1"
    assert edge.path == ".".join(["ContentSequence[0]"] * MAX_WALK_DEPTH) + (
        ".ReferencedSOPInstanceUID"
    )


def test_generic_walk_finds_private_and_unknown_references() -> None:
    private_target, nested_study, series, frame = (generate_uid() for _ in range(4))
    ds = dataset(CT_IMAGE)
    block = ds.private_block(0x0011, "ACME 1.0", create=True)
    block.add_new(0x10, "SQ", Sequence([ref(RT_PLAN, private_target)]))
    ds.RequestAttributesSequence = Sequence(
        [
            item(
                ReferencedStudySequence=Sequence([ref("1.2.840.10008.3.1.2.3.1", nested_study)]),
            )
        ]
    )
    ds.RelatedSeriesSequence = Sequence(
        [item(StudyInstanceUID=ds.StudyInstanceUID, SeriesInstanceUID=series)]
    )
    ds.FiducialSetSequence = Sequence([item(FrameOfReferenceUID=frame)])
    for transfer_syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian):
        ct = parse_ds(ds, transfer_syntax)
        by_target = {e.target_uid: e for e in ct.edges}
        assert by_target[private_target].role is Role.GENERIC
        assert by_target[private_target].path == "(0011,1010)[0].ReferencedSOPInstanceUID"
        assert by_target[private_target].class_hint == RT_PLAN
        assert (by_target[nested_study].level, by_target[nested_study].role) == (
            Level.STUDY,
            Role.STUDY,
        )
        assert by_target[series].level is Level.SERIES
        assert by_target[series].study_uid == ds.StudyInstanceUID
        assert by_target[series].qualifier("instances_listed") == "no"
        assert by_target[frame].level is Level.FRAME_OF_REFERENCE
        assert len(ct.edges) == 4, transfer_syntax


def test_edges_skip_own_uid_and_empty_targets_and_mark_unsafe_targets() -> None:
    ds = dataset(CT_IMAGE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.ReferencedImageSequence = Sequence(
            [
                ref(CT_IMAGE, ds.SOPInstanceUID),
                ref(CT_IMAGE, ""),
                ref(CT_IMAGE, "../x"),
                ref(CT_IMAGE, "1.2.3", ReferencedFrameNumber=[1, 2]),
            ]
        )
    ct = parse_ds(ds)
    assert [(e.target_uid, e.qualifiers) for e in ct.edges] == [
        ("../x", (("unsafe_uid", "yes"),)),
        ("1.2.3", (("frame", "1,2"),)),
    ]
    assert ct.edges[0].path == "ReferencedImageSequence[2].ReferencedSOPInstanceUID"


def test_undefined_length_sequences_are_read_like_defined_ones() -> None:
    rs_uid = generate_uid()
    ds = dataset(RT_PLAN)
    ds.ReferencedStructureSetSequence = Sequence([ref(RT_STRUCT, rs_uid)])
    ds["ReferencedStructureSetSequence"].is_undefined_length = True
    ds.ReferencedStructureSetSequence[0].is_undefined_length_sequence_item = True
    assert targets(parse_ds(ds), Role.STRUCTURE_SET) == {rs_uid}


def test_large_sequences_beyond_the_defer_size_are_still_read() -> None:
    ds = dataset(RT_STRUCT)
    images = [ref(CT_IMAGE, generate_uid()) for _ in range(2000)]  # > 64 KB of items
    ds.ReferencedFrameOfReferenceSequence = Sequence(
        [
            item(
                FrameOfReferenceUID=generate_uid(),
                RTReferencedStudySequence=Sequence(
                    [
                        ref(
                            "1.2.840.10008.3.1.2.3.1",
                            ds.StudyInstanceUID,
                            RTReferencedSeriesSequence=Sequence(
                                [
                                    item(
                                        SeriesInstanceUID=generate_uid(),
                                        ContourImageSequence=Sequence(images),
                                    )
                                ]
                            ),
                        )
                    ]
                ),
            )
        ]
    )
    data = encode(ds)
    assert len(data) > 128 * 1024
    rs = parse_bytes(data)
    assert isinstance(rs, Instance)
    assert targets(rs, Role.IMAGE) == {i.ReferencedSOPInstanceUID for i in images}


def raw_sequences(elems: list[RawDataElement | DataElement]) -> list[RawDataElement]:
    """Raw sequence values in ``elems``, also inside sequences pydicom already parsed."""
    found = []
    for elem in elems:
        if isinstance(elem, DataElement):
            if elem.VR == "SQ":
                for item_ in elem.value:
                    found += raw_sequences(list(item_._dict.values()))
        elif elem.value and (elem.VR == "SQ" or (elem.VR is None and elem.tag in SEQUENCE_TAGS)):
            found.append(elem)
    return found


def comparable(elem: RawDataElement) -> tuple[int, str | None, int, bytes]:
    return (int(elem.tag), elem.VR, elem.length, elem.value or b"")


def compare_fast_reader(path: Path | str) -> int:
    """Check every nested sequence the fast reader accepts against pydicom; count them."""
    data = Path(path).read_bytes()
    ds = read(path)
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    implicit = syntax == ImplicitVRLittleEndian or (syntax is None and ds.is_implicit_VR)
    fp = io.BytesIO(data)
    if data[128:132] == b"DICM":
        fp.seek(132)
        pydicom.filereader._read_file_meta_info(fp)
    pending = raw_sequences(list(data_element_generator(fp, implicit, True)))
    compared = 0
    while pending:
        sequence = pending.pop()
        assert sequence.value is not None
        is_implicit = bool(sequence.is_implicit_VR)
        fast = read_items(sequence.value, is_implicit, True, 0)
        slow = convert_SQ(sequence.value, is_implicit, True, None, 0)
        assert len(fast) == len(slow)
        for fast_item, slow_item in zip(fast, slow, strict=True):
            slow_elems = list(slow_item._dict.values())
            assert [comparable(e) for e in fast_item.values()] == [
                comparable(e) for e in slow_elems
            ]
            pending.extend(raw_sequences(slow_elems))
        compared += 1
    return compared


PYDICOM_RT = [get_testdata_file(n) for n in ("rtplan.dcm", "rtdose.dcm", "rtstruct.dcm")]


@pytest.mark.parametrize("path", REAL_FILES + PYDICOM_RT, ids=lambda p: Path(p).name)
def test_fast_item_reader_agrees_with_pydicom(path: Path) -> None:
    compare_fast_reader(path)


def test_fast_item_reader_is_exercised_by_defined_length_files() -> None:
    # Most exporters here write undefined-length sequences, which pydicom
    # parses while reading; highdicom, dcm4che (Pinnacle) and pydicom do not.
    assert compare_fast_reader(HIGHDICOM / "seg_image_ct_binary_single_frame.dcm") > 10
    assert compare_fast_reader(get_testdata_file("rtplan.dcm")) > 10


def test_fast_item_reader_leaves_unusual_encodings_to_pydicom() -> None:
    ds = dataset(RT_PLAN)
    structure_set = ref(RT_STRUCT, generate_uid())
    structure_set.is_undefined_length_sequence_item = True  # inside a defined-length SQ
    ds.ReferencedStructureSetSequence = Sequence([structure_set])
    assert targets(parse_ds(ds), Role.STRUCTURE_SET) == {structure_set.ReferencedSOPInstanceUID}


def test_large_implicit_vr_sequences_beyond_the_defer_size_are_still_read() -> None:
    ds = dataset(RT_PLAN)
    doses = [ref(RT_DOSE, generate_uid()) for _ in range(1500)]
    ds.ReferencedDoseSequence = Sequence(doses)
    data = encode(ds, ImplicitVRLittleEndian)
    assert len(data) > 96 * 1024
    plan = parse_bytes(data)
    assert isinstance(plan, Instance)
    assert targets(plan, Role.DOSE) == {d.ReferencedSOPInstanceUID for d in doses}
