"""Checking exported media with the tools media importers use: dcmtk's dcmmkdir and dciodvfy.

``dcmmkdir -Pgp`` builds a DICOMDIR for the General Purpose CD-R profile
(STD-GEN-CD) and refuses files it does not allow; ``dciodvfy`` (dicom3tools)
checks each file against its IOD. Both come from Debian (dcmtk, dicom3tools:
scripts/setup.sh --test); a missing tool skips locally and fails in CI.

``decoded`` reads a dataset's values with pydicom for comparison across
encodings, with binary values (pixel data included) turned into numbers in
the file's own byte order by this module, not by the code under test.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

PIXEL_DATA = 0x7FE00010
# struct format per VR of the binary values pydicom leaves as bytes
_BINARY = {"OW": "H", "OF": "f", "OL": "L", "OD": "d", "OV": "Q"}
_CELLS = {(8, 0): "B", (8, 1): "b", (16, 0): "H", (16, 1): "h", (32, 0): "L", (32, 1): "l"}
_STRICT_ERROR = re.compile(
    r"^E: required attribute (?P<keyword>\w+) \([0-9a-f,]+\) (?:missing|empty) in file: "
    r"(?P<file>\S+)$"
)


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        package = "dicom3tools" if tool == "dciodvfy" else "dcmtk"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} ({package}) must be installed in CI (scripts/setup.sh --test)")
        pytest.skip(f"{tool} ({package}) is not installed")
    assert path is not None
    return path


def run(args: Iterable[str | Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=300, check=False
    )


def dcmmkdir_gp(
    dest: Path, file_ids: list[str], scratch: Path, *, invent: bool
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``dcmmkdir -Pgp`` over ``file_ids`` of ``dest`` into ``scratch``: (run, its E: lines)."""
    args: list[str | Path] = [need("dcmmkdir"), "-Pgp", "+id", dest, "+D", scratch, "-nb"]
    if invent:
        args.append("+I")
    done = run([*args, *file_ids])
    output = done.stdout + done.stderr
    return done, [line for line in output.splitlines() if line.startswith("E:")]


def strict_complaints(errors: list[str]) -> list[tuple[str, str]]:
    """(file ID, keyword) of each "required attribute missing/empty" line; other lines fail."""
    found = []
    for line in errors:
        match = _STRICT_ERROR.match(line)
        assert match, f"dcmmkdir -Pgp refused the media for another reason: {line}"
        found.append((match["file"], match["keyword"]))
    return found


def listed_instances(dicomdir: Path) -> list[str]:
    """Referenced SOP Instance UIDs of a DICOMDIR's records."""
    ds = dcmread(dicomdir)
    return [
        str(r.ReferencedSOPInstanceUIDInFile)
        for r in ds.DirectoryRecordSequence
        if "ReferencedSOPInstanceUIDInFile" in r
    ]


def dciodvfy_errors(path: Path) -> set[str]:
    done = run([need("dciodvfy"), path])
    lines = (done.stdout + done.stderr).splitlines()
    return {line.strip() for line in lines if line.startswith("Error")}


def decoded(ds: Dataset, little_endian: bool) -> dict[int, Any]:
    """Tag -> value for every element (recursively), binary values as numbers."""
    out: dict[int, Any] = {}
    order = "<" if little_endian else ">"
    for element in ds:
        tag = int(element.tag)
        if tag & 0xFFFF == 0:
            continue  # group lengths describe an encoding, not the instance
        if element.VR == "SQ":
            out[tag] = [decoded(item, little_endian) for item in element.value]
        elif tag == PIXEL_DATA:
            out[tag] = pixel_values(ds, order)
        elif element.VR in _BINARY and element.value:
            code = _BINARY[str(element.VR)]
            count = len(element.value) // struct.calcsize(code)
            out[tag] = struct.unpack(f"{order}{count}{code}", element.value)
        else:
            out[tag] = element.value
    return out


def pixel_values(ds: Dataset, order: str) -> tuple[int, ...] | bytes:
    """The pixel cells as numbers (bit-packed 1-bit data as its bytes)."""
    data = bytes(ds.PixelData)
    bits = int(ds.BitsAllocated)
    if bits == 1:
        return data
    code = _CELLS[(bits, int(ds.PixelRepresentation))]
    count = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
    count *= int(ds.get("NumberOfFrames", 1) or 1)
    return struct.unpack_from(f"{order}{count}{code}", data)


def assert_same_values(source: Path, exported: Path) -> None:
    """The exported file holds the source's dataset, read by pydicom from each encoding."""
    before = dcmread(source, force=True)
    after = dcmread(exported)
    little = before.original_encoding[1]
    assert little is not None
    assert after.original_encoding == (False, True)
    assert decoded(after, True) == decoded(before, little), exported
