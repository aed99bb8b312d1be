"""Hostile and awkward files for the demo tree (reliability.md B, C, D): ``write_hostile``.

Each file reproduces a failure seen in the wild or in our own trials: files
that pydicom happily turns into garbage (text, random bytes with
``force=True``), files it reads partially without complaint (truncated),
files that exhaust memory or the stack (deflate bomb, deep nesting), UIDs
that would escape a folder if used as names, and duplicate SOP Instance
UIDs. They are built from a real CT slice of the demo so that everything
except the one defect is valid; anything that pydicom would refuse to
write (the bomb, the nesting) is assembled as bytes (``hostile_parts``).

This is what ``dicomfs demo-data`` adds to the demo tree, and its bytes
must not change. The reliability suite has two more generators:
``hostile_corpus`` (hostile files, each with its outcome) and
``hostile_tree`` (hostile filesystem objects).
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import config
from pydicom.dataset import Dataset
from pydicom.filereader import dcmread
from pydicom.fileset import FileSet
from pydicom.uid import UID

from dicomfs.demo.builders import dataset_bytes, write_bytes
from dicomfs.demo.hostile_parts import (
    NON_UTF8_NAME,
    UNSAFE_UID,
    Outcomes,
    deep_nesting_file,
    deflate_bomb_file,
)
from dicomfs.dicom.records import RejectKind

__all__ = ["HostileFiles", "write_hostile"]


@dataclass(frozen=True)
class HostileFiles:
    """Relative path -> expected outcome, duplicates, and UIDs written."""

    hostile: dict[str, str]
    duplicates: dict[str, tuple[str, ...]]
    uids: dict[str, str]


def _cut_inside(data: bytes, tag: bytes, into_value: int) -> bytes:
    """Cut ``data`` a few bytes into the value of the first element ``tag``."""
    offset = data.find(tag, 132)
    if offset < 0:
        raise ValueError("template CT slice lacks the expected element")
    return data[: offset + 8 + into_value]


def write_hostile(
    root: Path, *, seed: int, ct_paths: Sequence[str], make_uid: Callable[[str], str]
) -> HostileFiles:
    """Write every hostile case under ``root/hostile/``.

    ``ct_paths`` are relative paths of plain (explicit VR little endian,
    with preamble) CT slices of the first demo patient, used as templates
    and as the originals of the duplicates. ``make_uid(name)`` returns a
    deterministic UID for a name.
    """
    if not ct_paths:
        raise ValueError("at least one plain CT slice is needed as a template")
    out = Outcomes(root)
    template_path = ct_paths[0]
    template = (root / template_path).read_bytes()
    template_uid = str(dcmread(root / template_path, stop_before_pixels=True).SOPInstanceUID)
    study_uid = make_uid("study")
    series_uid = make_uid("series")

    out.put("hostile/empty.dcm", b"", RejectKind.NOT_DICOM.value)
    notes = "Patient called, will bring the CD on Monday.\nDICM\n" * 20
    out.put("hostile/notes.dcm", notes.encode("ascii"), RejectKind.NOT_DICOM.value)
    noise = random.Random(f"dicomfs-demo/{seed}/random").randbytes(4096)
    out.put("hostile/random.dcm", noise, RejectKind.NOT_DICOM.value)

    # Cut inside ImagePositionPatient (header) and inside the pixel data.
    head_cut = _cut_inside(template, b"\x20\x00\x32\x00DS", 3)
    out.put("hostile/truncated-header.dcm", head_cut, RejectKind.TRUNCATED.value, template_uid)
    pixel_offset = template.rfind(b"\xe0\x7f\x10\x00")
    pixel_cut = template[: pixel_offset + 12 + (len(template) - pixel_offset - 12) // 2]
    out.put("hostile/truncated-pixels.dcm", pixel_cut, RejectKind.TRUNCATED.value, template_uid)

    def variant(sop_uid: str, series: str, description: str) -> Dataset:
        ds = dcmread(root / template_path)
        ds.PatientID = "HOSTILE"
        ds.PatientName = "Hostile^Files"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series
        ds.SeriesDescription = description
        ds.FrameOfReferenceUID = make_uid(f"for/{series}")
        ds.SOPInstanceUID = sop_uid
        ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
        return ds

    long_base = make_uid("long-uid")
    unsafe = {
        "hostile/unsafe/passwd.dcm": "../../../etc/passwd",
        "hostile/unsafe/long-uid.dcm": f"{long_base}.{'9' * (79 - len(long_base))}",
        "hostile/unsafe/slash-uid.dcm": f"{make_uid('slash')[:20]}/{make_uid('slash')[20:40]}",
    }
    for relative, sop_uid in unsafe.items():
        # The unsafe values must reach the file unchanged, so pydicom's value
        # checks (process-wide settings) are off for these writes only.
        with config.disable_value_validation():
            data = dataset_bytes(variant(sop_uid, series_uid, "Unsafe UIDs"))
        out.put(relative, data, UNSAFE_UID, sop_uid)

    # A valid slice of its own series under a Latin-1 name (reliability.md G8).
    odd_uid = make_uid("non-utf8")
    odd = variant(odd_uid, make_uid("non-utf8-series"), "Latin-1 file name")
    out.put(os.fsdecode(b"hostile/caf\xe9.dcm"), dataset_bytes(odd), NON_UTF8_NAME, odd_uid)

    # A real media directory; only DICOMDIR itself is kept, so the instance
    # copies FileSet writes next to it never enter the tree as duplicates.
    fileset = FileSet()
    fileset.ID = "DEMOCD"
    fileset.UID = UID(make_uid("fileset"))
    fileset.add(odd)
    with tempfile.TemporaryDirectory() as scratch:
        fileset.write(scratch)
        dicomdir = Path(scratch, "DICOMDIR").read_bytes()
    out.put("hostile/DICOMDIR", dicomdir, RejectKind.DICOMDIR.value)

    bomb_uid = make_uid("bomb")
    bomb = deflate_bomb_file(bomb_uid, study_uid, series_uid)
    out.put("hostile/bomb.dcm", bomb, RejectKind.TOO_LARGE.value, bomb_uid)
    deep_uid = make_uid("deep")
    deep = deep_nesting_file(deep_uid, study_uid, series_uid)
    out.put("hostile/nested.dcm", deep, RejectKind.TOO_DEEP.value, deep_uid)

    benign_original = ct_paths[1 % len(ct_paths)]
    benign_copy = f"hostile/usb-copy/{Path(benign_original).name}"
    write_bytes(root, benign_copy, (root / benign_original).read_bytes())

    conflict_original = ct_paths[2 % len(ct_paths)]
    conflict_copy = f"hostile/edited/{Path(conflict_original).name}"
    edited = dcmread(root / conflict_original)
    edited.SeriesDescription = "CT planning 3mm (edited)"
    edited.SeriesInstanceUID = make_uid("conflict-series")
    write_bytes(root, conflict_copy, dataset_bytes(edited))

    duplicates: dict[str, tuple[str, ...]] = {
        "benign identical copy": (benign_original, benign_copy),
        "conflicting copy": (conflict_original, conflict_copy),
    }
    return HostileFiles(hostile=out.expected, duplicates=duplicates, uids=out.uids)
