"""One huge object: memory and edges per file are bounded whatever the file holds (D6).

An adversarial run indexed a valid 50 MB RT Structure Set naming 600,000
distinct images: 1.75 GB of memory, 133 MB of index. The file is written here
by the benchmark's own writer (``bench/big_object_bench.py``), in both length
encodings (defined lengths as pydicom and highdicom write, undefined as DCMTK
and most planning systems write), and indexed by the real scanner. The object
must be indexed, carry ``edges_capped`` with the reason, and keep exactly
``MAX_EDGES`` edges; parsing it must need memory of the order of a small
file's plus the file itself. The real exports and the demo data stay far
below every bound.
"""

from __future__ import annotations

import io
import re
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from parse_helpers import REAL_FILES, file_header, identity, nested_sequences, parse_ok, targets
from pydicom.uid import ExplicitVRLittleEndian

from dicomfs.dicom.parse import parse_bytes, parse_file
from dicomfs.dicom.records import Instance, Rejection, RejectKind, Role
from dicomfs.dicom.references import CAPPED_FLAG, MAX_EDGES, limits
from dicomfs.dicom.references.undefined import MAX_NESTING
from dicomfs.index import IndexReader, IndexWriter
from dicomfs.live.scan import reconcile

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from big_object_bench import image_uid, write_big_structure_set

ITEMS = 600_000
ENCODINGS = {"defined-length": False, "undefined-length": True}


def capped(flags: tuple[str, ...] | list[str]) -> list[str]:
    return [flag for flag in flags if flag.split(":", 1)[0] == CAPPED_FLAG]


@dataclass(frozen=True)
class BigFile:
    path: Path
    uid: str
    undefined_length: bool


@pytest.fixture(scope="module", params=list(ENCODINGS), ids=list(ENCODINGS))
def big_file(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> BigFile:
    path = tmp_path_factory.mktemp("big") / "src" / "rs.dcm"
    undefined = ENCODINGS[request.param]
    uid = write_big_structure_set(path, ITEMS, undefined_length=undefined)
    assert path.stat().st_size > 50_000_000
    return BigFile(path, uid, undefined)


@pytest.mark.slow
def test_the_600000_item_structure_set_is_indexed_with_its_edges_capped(
    big_file: BigFile, tmp_path: Path, open_reader: Callable[[Path], IndexReader]
) -> None:
    index = tmp_path / "index.sqlite"
    writer = IndexWriter(index)
    try:
        report = reconcile(writer, [big_file.path.parent], workers=1)
    finally:
        writer.close()
    assert (report.indexed, report.rejected) == (1, 0)

    reader = open_reader(index)
    uid = big_file.uid
    row = reader.instance(uid)
    assert row is not None, "a big object is indexed, never rejected for its size"
    assert row.sop_class == "1.2.840.10008.5.1.4.1.1.481.3"
    (flag,) = capped(row.flags)
    assert flag.startswith(f"{CAPPED_FLAG}:more than {MAX_EDGES} references"), flag
    assert "ContourImageSequence" in flag, "the reason names where the references were left out"

    stored = reader.forward_edges(uid)
    assert len(stored) == MAX_EDGES
    images = [e.edge.target_uid for e in stored if e.edge.role is Role.IMAGE]
    # The first references in file order are kept: frame, study, series, then images.
    assert images == [image_uid(n) for n in range(len(images))]
    assert len(images) == MAX_EDGES - 3


CHILD = """
import resource, sys
from dicomfs.dicom.parse import parse_file
from dicomfs.dicom.records import Instance
result = parse_file(sys.argv[1]).result
assert isinstance(result, Instance), result
print(len(result.edges), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def parse_in_child(path: Path) -> tuple[int, int]:
    """(edges, peak RSS in KiB) of parsing ``path`` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True
    )
    edges, peak_kb = done.stdout.split()
    return int(edges), int(peak_kb)


@pytest.mark.slow
def test_parsing_it_needs_memory_of_a_small_file_plus_a_constant(
    big_file: BigFile, tmp_path: Path
) -> None:
    small = tmp_path / "small.dcm"
    write_big_structure_set(small, 10, undefined_length=big_file.undefined_length)
    small_edges, small_kb = parse_in_child(small)
    big_edges, big_kb = parse_in_child(big_file.path)
    assert (small_edges, big_edges) == (13, MAX_EDGES)
    # Before the bound: 1,335 MB here (44x a small parse). Now the file's
    # sequences are held once as bytes and read one item at a time.
    limit_kb = 3 * small_kb + 64 * 1024
    assert big_kb < limit_kb, f"peak {big_kb // 1024} MB, small file {small_kb // 1024} MB"


def test_real_exports_are_far_below_every_bound() -> None:
    for path in REAL_FILES:
        instance = parse_ok(path)
        assert not capped(instance.flags), (path, instance.flags)
        assert len(instance.edges) < MAX_EDGES // 100


def test_demo_data_in_the_index_is_never_capped(demo_reader: IndexReader) -> None:
    rows = demo_reader.all_instances()
    assert rows
    for row in rows:
        assert not capped(row.flags), (row.sop_uid, row.flags)
        assert len(demo_reader.forward_edges(row.sop_uid)) < MAX_EDGES // 100


def test_items_naming_one_image_over_and_over_stop_at_the_read_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Duplicates add no edge, so only the read budget bounds the time such a file takes."""
    path = tmp_path / "same.dcm"
    write_big_structure_set(path, 3000)
    every_image = re.compile(re.escape(image_uid(0)[:-7].encode()) + rb"1[0-9]{6}")
    path.write_bytes(every_image.sub(image_uid(0).encode(), path.read_bytes()))
    monkeypatch.setattr(limits, "MAX_READ_STEPS", 2000)
    result = parse_file(str(path))
    assert result is not None and isinstance(result.result, Instance)
    (flag,) = capped(result.result.flags)
    assert flag.startswith(f"{CAPPED_FLAG}:more than 2000 read steps"), flag
    assert targets(result.result, Role.IMAGE) == {image_uid(0)}


@pytest.mark.parametrize("undefined", [False, True], ids=["defined", "undefined"])
def test_the_cap_holds_in_both_length_encodings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, undefined: bool
) -> None:
    path = tmp_path / "rs.dcm"
    write_big_structure_set(path, 500, undefined_length=undefined)
    monkeypatch.setattr(limits, "MAX_EDGES", 100)
    instance = parse_ok(path)
    (flag,) = capped(instance.flags)
    assert "ContourImageSequence[97].ReferencedSOPInstanceUID" in flag, flag
    assert len(instance.edges) == 100


def implicit_items_file(count: int, *, undefined: bool) -> bytes:
    """A CT naming ``count`` images in items written in implicit VR inside an explicit file.

    Some writers switch to implicit VR inside sequences; only pydicom's reader
    reads that, at about 90 MB per MiB of small items, so its share is bounded.
    """
    items = b""
    for n in range(count):
        uid = image_uid(n).encode() + b"\0"
        body = struct.pack("<HHL", 0x0008, 0x1155, len(uid)) + uid
        if undefined:
            items += b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + body + b"\xfe\xff\x0d\xe0\0\0\0\0"
        else:
            items += b"\xfe\xff\x00\xe0" + struct.pack("<L", len(body)) + body
    head = struct.pack("<HH2sHL", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFFF if undefined else len(items))
    tail = b"\xfe\xff\xdd\xe0\0\0\0\0" if undefined else b""
    return file_header(ExplicitVRLittleEndian) + identity() + head + items + tail


@pytest.mark.parametrize("undefined", [False, True], ids=["defined", "undefined"])
def test_sequences_only_pydicom_reads_are_read_within_a_bound(
    monkeypatch: pytest.MonkeyPatch, undefined: bool
) -> None:
    data = implicit_items_file(50, undefined=undefined)
    read = parse_bytes(data)
    assert isinstance(read, Instance), read
    assert targets(read) == {image_uid(n) for n in range(50)}
    assert not capped(read.flags)

    monkeypatch.setattr(limits, "MAX_PYDICOM_BYTES", 1000)
    monkeypatch.setattr("dicomfs.dicom.reading.MAX_PYDICOM_BYTES", 1000)
    bounded = parse_bytes(data)
    assert isinstance(bounded, Instance), bounded
    (flag,) = capped(bounded.flags)
    assert "pydicom's reader needed from ReferencedImageSequence[0] on" in flag, flag
    assert bounded.edges == []


def undefined_everywhere(path: Path) -> bytes:
    ds = pydicom.dcmread(path, force=True)
    for elem in ds.iterall():
        if elem.VR == "SQ":
            elem.is_undefined_length = True
            for item_ in elem.value:
                item_.is_undefined_length_sequence_item = True
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_undefined_length_sequences_give_the_same_edges_as_written(path: Path) -> None:
    """Undefined-length sequences are kept raw and read by the streaming reader, not pydicom."""
    as_written = parse_ok(path)
    rewritten = parse_bytes(undefined_everywhere(path))
    assert isinstance(rewritten, Instance), rewritten
    assert rewritten.edges == as_written.edges
    assert not capped(rewritten.flags)


def test_a_top_level_sequence_only_pydicom_can_end_is_read_within_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nesting beyond what the stepping reader follows goes to pydicom, with a bounded window.

    Its end is found by pydicom alone, so beyond the window nothing after it
    can be read: the file is too large, said with the element and offset.
    """
    data = file_header(ExplicitVRLittleEndian) + identity()
    data += nested_sequences(MAX_NESTING + 1, undefined=True)
    read = parse_bytes(data)
    assert isinstance(read, Instance), read
    assert "walk_truncated" in read.flags

    monkeypatch.setattr("dicomfs.dicom.reading.MAX_PYDICOM_BYTES", 1000)
    refused = parse_bytes(data)
    assert isinstance(refused, Rejection), refused
    assert refused.kind is RejectKind.TOO_LARGE
    assert "ContentSequence at offset" in refused.reason and "beyond 1000 bytes" in refused.reason
