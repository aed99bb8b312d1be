"""The reliability corpus: hostile files, each with the outcome it must have.

``write_hostile_corpus`` writes a self-contained set of hostile *files*
(docs/reliability.md): truncated at many offsets, a deflate bomb, 5,000-level
nesting, huge declared lengths, wrong VRs, invalid and path-like UIDs, NUL
and non-UTF-8 text, and duplicate UIDs with different content and relational
mismatches. Elements are built by hand where pydicom would check or fix the
value, so any bytes can go in.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomfs.demo.builders import CT_CLASS, RT_PLAN_CLASS, corpus_uid, ct_identity
from dicomfs.demo.hostile_parts import (
    BENIGN_DUPLICATE,
    CONFLICT,
    INSTANCE,
    ITEM,
    UNSAFE_UID,
    Outcomes,
    deep_nesting_file,
    deflate_bomb_file,
    identity_file,
    meta_bytes,
)
from dicomfs.demo.images import ct_bytes
from dicomfs.dicom.records import RejectKind

__all__ = ["HostileCorpus", "write_hostile_corpus"]

_LONG_VRS = (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT")


@dataclass(frozen=True)
class HostileCorpus:
    """What ``write_hostile_corpus`` wrote under ``root``.

    ``expected`` maps a relative path to its outcome: a RejectKind value,
    ``INSTANCE``, ``UNSAFE_UID`` (indexed, flagged, never a name),
    ``BENIGN_DUPLICATE`` or ``CONFLICT`` (indexed copies of a UID another
    file serves). ``uids`` gives the SOP Instance UID in each file that has
    one (raw, as written); ``duplicates`` maps the file that must serve a
    UID to the later copies of it; ``flags`` lists flags a file must carry.
    """

    root: Path
    expected: dict[str, str]
    uids: dict[str, str]
    duplicates: dict[str, tuple[str, ...]]
    flags: dict[str, tuple[str, ...]] = field(default_factory=dict)
    study_uid: str = ""
    series_uid: str = ""

    def paths(self, outcome: str) -> list[str]:
        """The relative paths expected to have ``outcome``, sorted."""
        return sorted(rel for rel, found in self.expected.items() if found == outcome)


# -- elements built by hand -------------------------------------------------------


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element, built by hand: any bytes may go in."""
    if len(value) % 2:
        value += b"\x00" if vr in (b"UI", b"OB", b"UN") else b" "
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    if vr in _LONG_VRS:
        return head + struct.pack("<HI", 0, len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def _raw_file(
    meta_uid: str,
    sop_uid: bytes,
    *,
    sop_class: bytes = CT_CLASS.encode(),
    study: bytes,
    series: bytes,
    patient_id: bytes = b"HOSTILE",
    patient_name: bytes = b"Hostile^Files",
    modality: bytes = b"CT",
    charset: bytes = b"",
    extra: Sequence[tuple[int, bytes, bytes]] = (),
) -> bytes:
    """A file with a minimal dataset (no image) whose values are taken as raw bytes.

    The file meta names ``meta_uid``, so the dataset's own SOP Instance UID
    may be anything, even empty.
    """
    elements = [
        (0x00080016, b"UI", sop_class),
        (0x00080018, b"UI", sop_uid),
        (0x00080060, b"CS", modality),
        (0x00100010, b"PN", patient_name),
        (0x00100020, b"LO", patient_id),
        (0x0020000D, b"UI", study),
        (0x0020000E, b"UI", series),
        *extra,
    ]
    if charset:
        elements.append((0x00080005, b"CS", charset))
    body = b"".join(_element(t, vr, v) for t, vr, v in sorted(elements))
    return meta_bytes(meta_uid, ExplicitVRLittleEndian) + body


def _element_spans(data: bytes) -> list[tuple[int, int, int]]:
    """(start, value offset, end) of every element after the preamble.

    Only for files written by ``ct_bytes``: explicit VR little endian from
    the file meta on, no sequences.
    """
    spans = []
    offset = 132
    while offset + 8 <= len(data):
        vr = data[offset + 4 : offset + 6]
        if vr in _LONG_VRS:
            length = struct.unpack_from("<I", data, offset + 8)[0]
            value = offset + 12
        else:
            length = struct.unpack_from("<H", data, offset + 6)[0]
            value = offset + 8
        spans.append((offset, value, value + length))
        offset = value + length
    return spans


# -- the cases ----------------------------------------------------------------------


@dataclass
class _Corpus:
    """The corpus being written: its ledger, flags, and the study and series most files share."""

    seed: int
    out: Outcomes
    study: str
    series: str
    flags: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def uid(self, name: str) -> str:
        return corpus_uid(self.seed, name)

    def raw(self, uid: str, *, extra: Sequence[tuple[int, bytes, bytes]] = ()) -> bytes:
        """A raw-identity file whose meta and SOP Instance UID are ``uid``, in the common series."""
        study, series = self.study.encode(), self.series.encode()
        return _raw_file(uid, uid.encode(), study=study, series=series, extra=extra)


def _truncations(c: _Corpus) -> None:
    """B1: a valid template, then cuts inside every element (header and value) and the preamble."""
    template_uid = c.uid("template")
    template = ct_bytes(template_uid, study_uid=c.study, series_uid=c.series)
    c.out.put("valid/template.dcm", template, INSTANCE, template_uid)
    cuts = set(range(0, 132, 11)) | {132, 133, len(template) - 1}
    for start, value, end in _element_spans(template):
        cuts.add(start + 2)
        if end - value > 1:
            cuts.add(value + (end - value) // 2)
    for cut in sorted(cuts):
        outcome = RejectKind.NOT_DICOM.value if cut < 132 else RejectKind.TRUNCATED.value
        if cut == 132:  # the DICM prefix and nothing else: no file meta, no dataset
            outcome = RejectKind.NO_IDENTITY.value
        c.out.put(f"truncated/at-{cut:05d}.dcm", template[:cut], outcome, template_uid)


def _resource_exhaustion(c: _Corpus) -> None:
    """D2, D3: the deflate bomb and 5,000 nested sequences; declared lengths beyond the file."""
    bomb_uid = c.uid("bomb")
    bomb = deflate_bomb_file(bomb_uid, c.study, c.series)
    c.out.put("bomb/deflate-bomb.dcm", bomb, RejectKind.TOO_LARGE.value, bomb_uid)
    deep_uid = c.uid("deep")
    deep = deep_nesting_file(deep_uid, c.study, c.series)
    c.out.put("nesting/5000-levels.dcm", deep, RejectKind.TOO_DEEP.value, deep_uid)

    huge_uid = c.uid("huge")
    head = identity_file(huge_uid, c.study, c.series)
    huge_ob = b"\x09\x00\x10\x10OB\x00\x00" + struct.pack("<I", 0xFFFFFFF0)
    c.out.put("lengths/huge-element.dcm", head + huge_ob + bytes(64), RejectKind.TRUNCATED.value)
    huge_sq = b"\x40\x00\x30\xa7SQ\x00\x00" + struct.pack("<I", 0x7FFFFFF0)
    item = ITEM + struct.pack("<I", 8) + b"\x08\x00\x50\x11UI\x02\x001\x00"
    c.out.put("lengths/huge-sequence.dcm", head + huge_sq + item, RejectKind.TRUNCATED.value)
    huge_item = ITEM + struct.pack("<I", 0x7FFFFFF0) + b"\x08\x00\x55\x11UI\x02\x001\x00"
    sequence = b"\x40\x00\x30\xa7SQ\x00\x00" + struct.pack("<I", len(huge_item)) + huge_item
    # Inside a sequence of correct length: read up to the sequence's end, leniently.
    c.out.put("lengths/huge-item.dcm", head + sequence, INSTANCE, huge_uid)
    huge_text = b"\x10\x00\x10\x00PN" + struct.pack("<H", 0xFFFF) + b"A" * 40
    c.out.put("lengths/huge-short-length.dcm", head + huge_text, RejectKind.TRUNCATED.value)


def _wrong_vrs(c: _Corpus) -> None:
    """Wrong VRs: values are read as text whatever the VR says."""
    for name, vr_edit in (
        ("patient-id-as-UI", (0x00100020, b"UI", b"HOSTILE")),
        ("series-description-as-US", (0x0008103E, b"US", b"\x01\x00")),
        ("label-as-SQ", (0x00700080, b"SQ", b"")),
    ):
        uid = c.uid(name)
        c.out.put(f"vr/{name}.dcm", c.raw(uid, extra=[vr_edit]), INSTANCE, uid)
    uid = c.uid("sop-uid-as-LO")
    data = c.raw(uid).replace(b"\x08\x00\x18\x00UI", b"\x08\x00\x18\x00LO", 1)
    c.out.put("vr/sop-uid-as-LO.dcm", data, INSTANCE, uid)
    uid = c.uid("unknown-vr")
    unknown = b"\x09\x00\x10\x10ZZ\x04\x00abcd"
    # Read as a 2-byte length, skipped.
    c.out.put("vr/unknown-vr.dcm", c.raw(uid) + unknown, INSTANCE, uid)
    uid = c.uid("implicit-labelled-explicit")
    implicit = DicomBytesIO()
    implicit.is_little_endian, implicit.is_implicit_VR = True, True
    write_dataset(implicit, ct_identity(uid, c.study, c.series))
    data = meta_bytes(uid, ExplicitVRLittleEndian) + implicit.getvalue()
    c.out.put("vr/implicit-labelled-explicit.dcm", data, INSTANCE, uid)
    c.flags["vr/implicit-labelled-explicit.dcm"] = ("vr_mismatch",)


def _bad_uids(c: _Corpus) -> None:
    """C1: UIDs that are not UIDs. Kept, flagged, never a name."""
    unsafe: dict[str, bytes] = {
        "dotdot": b"..",
        "dot": b".",
        "passwd": b"../../../etc/passwd",
        "slash": b"1.2/3.4",
        "leading-zero": b"1.2.03.4",
        "too-long": b"1." + b"2" * 63,
        "inner-nul": b"1.2\x00.3",
        "newline": b"1.2.3\n",
        "non-ascii": b"1.2.\xff\xfe",
        "empty-component": b"1..2",
    }
    study, series = c.study.encode(), c.series.encode()
    meta_uid = c.uid("unsafe-meta")
    for name, raw in unsafe.items():
        data = _raw_file(meta_uid, raw, study=study, series=series)
        # Recorded as the parser reads it: no character set means ISO 646/Latin-1.
        c.out.put(f"uids/{name}.dcm", data, UNSAFE_UID, raw.decode("latin-1"))
        c.flags[f"uids/{name}.dcm"] = ("unsafe_sop_uid",)
    padded = c.uid("padded")
    data = _raw_file(padded, padded.encode() + b"\x00", study=study, series=series)
    c.out.put("uids/trailing-nul-padding.dcm", data, INSTANCE, padded)
    uid = c.uid("path-like-study")
    data = _raw_file(uid, uid.encode(), study=b"..", series=b"../../tmp")
    c.out.put("uids/path-like-study-and-series.dcm", data, INSTANCE, uid)
    c.flags["uids/path-like-study-and-series.dcm"] = (
        "unsafe_uid:StudyInstanceUID",
        "unsafe_uid:SeriesInstanceUID",
    )
    data = _raw_file(c.uid("no-sop-uid"), b"", study=study, series=series)
    c.out.put("uids/empty-sop-uid.dcm", data, RejectKind.NO_IDENTITY.value)


def _odd_text(c: _Corpus) -> None:
    """NUL and non-UTF-8 text: decoded leniently, never a name."""
    uid = c.uid("nul-text")
    data = _raw_file(
        uid,
        uid.encode(),
        study=c.study.encode(),
        series=c.series.encode(),
        patient_name=b"Caf\xe9\x00^N\xffl",
        patient_id=b"ID\x00/../\xff",
        charset=b"ISO_IR 192",
        extra=[(0x0008103E, b"LO", b"a/b\x00c\xc3\x28")],
    )
    c.out.put("text/nul-and-invalid-utf8.dcm", data, INSTANCE, uid)
    uid = c.uid("plan-label")
    data = _raw_file(
        uid,
        uid.encode(),
        sop_class=RT_PLAN_CLASS.encode(),
        study=c.study.encode(),
        series=c.uid("plan-series").encode(),
        modality=b"RTPLAN",
        extra=[(0x300A0002, b"SH", b"../x/\x00\xff")],
    )
    c.out.put("text/plan-label-path-like.dcm", data, INSTANCE, uid)


def _duplicates(c: _Corpus) -> dict[str, tuple[str, ...]]:
    """C2, C3: one SOP Instance UID in several files, the original the oldest.

    A fresh scan (oldest first) then serves the original, as a watcher would.
    """
    dup_uid = c.uid("duplicate")
    variants = {
        "dup/original.dcm": ({}, INSTANCE),
        "dup/identical-copy.dcm": ({}, BENIGN_DUPLICATE),
        "dup/different-content.dcm": ({"series_description": "edited"}, CONFLICT),
        "dup/other-series.dcm": ({"series_uid": c.uid("other-series")}, CONFLICT),
        "dup/other-study.dcm": ({"study_uid": c.uid("other-study")}, CONFLICT),
        "dup/other-patient.dcm": ({"patient_id": "OTHER-PATIENT"}, CONFLICT),
    }
    base_time = 1_600_000_000_000_000_000
    for number, (relative, (changes, outcome)) in enumerate(variants.items()):
        options: dict[str, str] = {"study_uid": c.study, "series_uid": c.series, **changes}
        c.out.put(relative, ct_bytes(dup_uid, **options), outcome, dup_uid)  # type: ignore[arg-type]
        when = base_time + number * 1_000_000_000
        os.utime(os.fsencode(c.out.root) + b"/" + relative.encode(), ns=(when, when))
    return {"dup/original.dcm": tuple(list(variants)[1:])}


def write_hostile_corpus(root: Path, *, seed: int = 0) -> HostileCorpus:
    """Write hostile files under ``root`` (created), each with its required outcome.

    Deterministic for a seed, except the modification times of the
    duplicates, which are set so that the original is the oldest copy.
    """
    root.mkdir(parents=True, exist_ok=True)
    c = _Corpus(seed, Outcomes(root), corpus_uid(seed, "study"), corpus_uid(seed, "series"))
    _truncations(c)
    _resource_exhaustion(c)
    _wrong_vrs(c)
    _bad_uids(c)
    _odd_text(c)
    duplicates = _duplicates(c)
    return HostileCorpus(
        root=root,
        expected=c.out.expected,
        uids=c.out.uids,
        duplicates=duplicates,
        flags=c.flags,
        study_uid=c.study,
        series_uid=c.series,
    )
