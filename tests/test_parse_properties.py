"""Property tests of dicomfs.dicom.parse: any bytes end in an Instance or a Rejection.

Arbitrary bytes, bytes after a DICOM header and mutated real files
(hypothesis); tests/reliability/test_rel_fuzz.py does the same on the hostile
corpus.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from parse_helpers import (
    HIGHDICOM,
    MIM,
    MONACO,
    PINNACLE,
    file_header,
)
from pydicom.data import get_testdata_file
from pydicom.uid import (
    ExplicitVRLittleEndian,
)

from dicomfs.dicom.parse import parse_bytes
from dicomfs.dicom.records import Instance, Rejection

SMALL_REAL = [
    (MONACO / "TinyFS_StrctrSets.dcm").read_bytes(),
    (MONACO / "TinyFS_CT1_image00000.DCM").read_bytes(),
    (MIM / "rt.dcm").read_bytes(),
    (HIGHDICOM / "seg_image_ct_binary_single_frame.dcm").read_bytes(),
    sorted(PINNACLE.iterdir(), key=lambda p: p.stat().st_size)[0].read_bytes(),
    Path(get_testdata_file("rtplan.dcm")).read_bytes(),
]
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_end_in_a_record_or_rejection(data: bytes) -> None:
    assert isinstance(parse_bytes(data), Instance | Rejection)


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_after_a_dicom_header(data: bytes) -> None:
    assert isinstance(parse_bytes(b"\0" * 128 + b"DICM" + data), Instance | Rejection)
    assert isinstance(parse_bytes(file_header(ExplicitVRLittleEndian) + data), Instance | Rejection)


mutation = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "overwrite"]),
    st.floats(0, 1, exclude_max=True),
    st.binary(min_size=1, max_size=8),
)


@FUZZ
@given(st.sampled_from(range(len(SMALL_REAL))), st.lists(mutation, min_size=1, max_size=6))
def test_mutated_real_files_end_in_a_record_or_rejection(
    index: int, mutations: list[tuple[str, float, bytes]]
) -> None:
    data = bytearray(SMALL_REAL[index])
    for op, where, payload in mutations:
        at = int(where * len(data)) if data else 0
        if op == "flip" and data:
            data[at] ^= payload[0] or 0xFF
        elif op == "insert":
            data[at:at] = payload
        elif op == "delete":
            del data[at : at + len(payload)]
        else:
            data[at : at + len(payload)] = payload
    result = parse_bytes(bytes(data))
    assert isinstance(result, Instance | Rejection)
    if isinstance(result, Instance):
        assert result.sop_instance_uid
        assert all(e.target_uid for e in result.edges)
    # Whatever came out crosses from a parse worker unchanged (records.Record).
    assert pickle.loads(pickle.dumps(result)) == result
