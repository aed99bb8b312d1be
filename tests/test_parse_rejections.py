"""dicomfs.dicom.parse on files that are not instances: each ends in a typed rejection.

Not DICOM, no identity, truncated anywhere (reliability.md B1), deflate
bombs (D2) and nesting too deep for pydicom's recursive reader. Problems
reach users as rejections and flags, never as pydicom's warnings (I2).
"""

from __future__ import annotations

import io
import os
import random
import re
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import pydicom
import pytest
from parse_helpers import (
    DCMQI,
    MIM,
    RT_PLAN,
    RT_STRUCT,
    dataset,
    element,
    encode,
    file_header,
    identity,
    item,
    nested_sequences,
    read,
    ref,
    run_with_deadline,
    targets,
)
from pydicom.data import get_testdata_file
from pydicom.filereader import data_element_generator
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from dicomfs.dicom.parse import parse_bytes, parse_file
from dicomfs.dicom.reading import MAX_INFLATED_BYTES
from dicomfs.dicom.records import Instance, Rejection, RejectKind, Role


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"patient list\nname;id\nDoe;1234\n" * 40,
        random.Random(7).randbytes(20_000),
        b"\x00" * 3000,
    ],
    ids=["empty", "text", "random", "zeros"],
)
def test_non_dicom_files(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "image.dcm"
    path.write_bytes(data)
    result = parse_file(str(path))
    assert result is not None
    assert isinstance(result.result, Rejection)
    assert result.result.kind is RejectKind.NOT_DICOM


def test_zero_filled_files_end_quickly() -> None:
    zeros = bytes(8 * 1024 * 1024)  # a million 8-byte "elements"
    for data in (zeros, file_header(ExplicitVRLittleEndian) + identity() + zeros):
        result = run_with_deadline(lambda data=data: parse_bytes(data), 20)
        assert isinstance(result, Rejection)
        assert result.kind in (RejectKind.NOT_DICOM, RejectKind.TOO_LARGE)


def test_dicom_header_without_identity() -> None:
    data = file_header(ExplicitVRLittleEndian) + element(0x00100020, b"LO", b"P1")
    result = parse_bytes(data)
    assert isinstance(result, Rejection)
    assert result.kind is RejectKind.NO_IDENTITY


def test_forced_file_needs_a_grammatical_sop_class() -> None:
    good = identity() + element(0x00100020, b"LO", b"P1")
    assert isinstance(parse_bytes(good), Instance)
    bad = identity(sop_class="CT image") + element(0x00100020, b"LO", b"P1")
    result = parse_bytes(bad)
    assert isinstance(result, Rejection)
    assert result.kind is RejectKind.NOT_DICOM


def top_level_ends(data: bytes) -> set[int]:
    """Offsets where a top-level element ends: a cut there is undetectable."""
    fp = io.BytesIO(data)
    ds = pydicom.dcmread(fp, stop_before_pixels=True)
    fp.seek(0)
    pydicom.filereader.read_preamble(fp, False)
    pydicom.filereader._read_file_meta_info(fp)
    implicit = ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    ends = {fp.tell()}
    for _elem in data_element_generator(fp, implicit, True):
        ends.add(fp.tell())
    return ends


@pytest.mark.parametrize(
    "path", [MIM / "rt.dcm", DCMQI / "01.dcm", DCMQI / "liver.dcm"], ids=lambda p: p.name
)
def test_truncated_files_are_never_instances(path: Path) -> None:
    data = path.read_bytes()
    ends = top_level_ends(data)
    rng = random.Random(path.name)
    cuts = {1, 60, 131, 140, 300, len(data) // 2, len(data) - 1, len(data) - 3}
    cuts |= {rng.randrange(1, len(data)) for _ in range(150)}
    for cut in sorted(cuts - ends):
        result = parse_bytes(data[:cut])
        assert isinstance(result, Rejection), f"cut at {cut} parsed as an instance"
        assert result.kind in (RejectKind.TRUNCATED, RejectKind.NOT_DICOM), (cut, result)


def test_truncated_in_header_and_in_pixel_data_say_where(tmp_path: Path) -> None:
    data = (DCMQI / "01.dcm").read_bytes()
    ds = read(DCMQI / "01.dcm")
    pixel_offset = len(data) - len(ds.PixelData)
    for cut, words in ((pixel_offset + 1000, "PixelData"), (len(data) - 1, "PixelData")):
        path = tmp_path / "cut.dcm"
        path.write_bytes(data[:cut])
        result = parse_file(str(path))
        assert result is not None
        assert isinstance(result.result, Rejection)
        assert result.result.kind is RejectKind.TRUNCATED
        assert words in result.result.reason
        assert str(cut) in result.result.reason
    middle = (pixel_offset + 400) // 2  # somewhere in the header
    result = parse_bytes(data[: middle - middle % 2 + 1])
    assert isinstance(result, Rejection)
    assert result.kind is RejectKind.TRUNCATED


def test_unterminated_undefined_length_sequence_is_truncated() -> None:
    ds = dataset(RT_STRUCT)
    ds.ReferencedFrameOfReferenceSequence = Sequence([item(FrameOfReferenceUID=generate_uid())])
    ds["ReferencedFrameOfReferenceSequence"].is_undefined_length = True
    data = encode(ds)
    assert data.endswith(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    assert isinstance(parse_bytes(data), Instance)
    for cut in (1, 4, 8, 9):
        result = parse_bytes(data[:-cut])
        assert isinstance(result, Rejection), cut
        assert result.kind is RejectKind.TRUNCATED


def test_unterminated_encapsulated_pixel_data_is_truncated() -> None:
    path = get_testdata_file("JPEG2000.dcm")
    data = Path(path).read_bytes()
    assert isinstance(parse_bytes(data), Instance)
    for cut in (2, 8, 100, 2000):
        result = parse_bytes(data[:-cut])
        assert isinstance(result, Rejection), cut
        assert result.kind is RejectKind.TRUNCATED


def test_declared_length_beyond_the_file_is_truncated() -> None:
    data = file_header(ExplicitVRLittleEndian) + identity()
    data += struct.pack("<HH", 0x0009, 0x1010) + b"OB\0\0" + struct.pack("<I", 0xFFFFFFF0)
    result = parse_bytes(data + b"\0" * 100)
    assert isinstance(result, Rejection)
    assert result.kind is RejectKind.TRUNCATED


# -- deflate -----------------------------------------------------------------


def test_small_deflated_file_is_parsed() -> None:
    ds = dataset(RT_PLAN, RTPlanLabel="DEFL")
    ds.ReferencedStructureSetSequence = Sequence([ref(RT_STRUCT, generate_uid())])
    data = encode(ds, DeflatedExplicitVRLittleEndian)
    plan = parse_bytes(data)
    assert isinstance(plan, Instance), plan
    assert plan.transfer_syntax == DeflatedExplicitVRLittleEndian
    assert plan.label == "DEFL"
    structure_set = ds.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID
    assert targets(plan, Role.STRUCTURE_SET) == {structure_set}
    assert isinstance(parse_file(get_testdata_file("image_dfl.dcm")).result, Instance)  # type: ignore[union-attr]


def test_truncated_deflated_file_is_truncated() -> None:
    ds = dataset(RT_PLAN, RTPlanLabel="x" * 16, PlanIntent="CURATIVE")
    data = encode(ds, DeflatedExplicitVRLittleEndian)
    result = parse_bytes(data[:-10])
    assert isinstance(result, Rejection)
    assert result.kind is RejectKind.TRUNCATED


@pytest.fixture(scope="module")
def deflate_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 200 KB that inflates to 200 MB of zeros inside an OB element."""
    inflated = 200 * 1024 * 1024
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    header = identity() + struct.pack("<HH", 0x0042, 0x0011) + b"OB\0\0"
    parts = [compressor.compress(header + struct.pack("<I", inflated))]
    zeros = bytes(1024 * 1024)
    for _ in range(inflated // len(zeros)):
        parts.append(compressor.compress(zeros))
    parts.append(compressor.flush())
    path = tmp_path_factory.mktemp("bomb") / "bomb.dcm"
    path.write_bytes(file_header(DeflatedExplicitVRLittleEndian) + b"".join(parts))
    return path


def test_deflate_bomb_is_too_large_with_bounded_memory(deflate_bomb: Path) -> None:
    assert deflate_bomb.stat().st_size < 400 * 1024
    tracemalloc.start()
    try:
        result = parse_file(str(deflate_bomb))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result is not None
    assert isinstance(result.result, Rejection)
    assert result.result.kind is RejectKind.TOO_LARGE
    assert peak < 50 * 1024 * 1024
    assert MAX_INFLATED_BYTES < 200 * 1024 * 1024


# -- nesting -----------------------------------------------------------------


def test_5000_nested_undefined_length_sequences_are_too_deep() -> None:
    data = file_header(ExplicitVRLittleEndian) + identity()
    data += nested_sequences(5000, undefined=True)
    result = parse_bytes(data)
    assert isinstance(result, Rejection)
    assert result.kind is RejectKind.TOO_DEEP


# -- warnings ----------------------------------------------------------------


def test_warnings_of_the_reading_layer_are_never_shown() -> None:
    """pydicom's warnings quote values read from files, which may be patient data (I2).

    Checked in a fresh interpreter: pytest restores the warning filters after
    collecting, so the filter parse sets at import is not in force in a test.
    """
    modules = [
        "pydicom.charset",
        "dicomfs.dicom.parse",
        "dicomfs.dicom.reading",
        "dicomfs.dicom.references.node",
        "dicomfs.index.writer",  # outside the reading layer: shown
    ]
    script = (
        "import sys, warnings\n"
        "import dicomfs.dicom.parse\n"
        "for module in sys.argv[1:]:\n"
        "    text = f'DOE^JOHN via {module}'\n"
        "    warnings.warn_explicit(text, UserWarning, 'x.py', 1, module=module)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    command = [sys.executable, "-c", script, *modules]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    assert re.findall(r"DOE\^JOHN via ([\w.]+)", out.stderr) == ["dicomfs.index.writer"]
