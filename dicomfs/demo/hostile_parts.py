"""What the hostile generators share: outcomes, the ledger of them, and hand-built bytes.

Every hostile file is written together with the outcome the parser and
index must give it, so tests read expectations from the generator rather
than from a list that drifts. Files pydicom would refuse to write (a deflate
bomb, 5,000 nested sequences, a bare identity) are assembled as bytes here,
for the demo tree's hostile folder and the reliability corpus alike.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from dicomfs.demo.builders import CT_CLASS, ct_identity, file_meta, write_bytes

__all__ = [
    "BENIGN_DUPLICATE",
    "CONFLICT",
    "INSTANCE",
    "ITEM",
    "NON_UTF8_NAME",
    "UNSAFE_UID",
    "Outcomes",
    "deep_nesting_file",
    "deflate_bomb_file",
    "identity_file",
    "meta_bytes",
]

# Outcomes besides the RejectKind values.
UNSAFE_UID = "unsafe_uid"  # indexed, flagged, its UID never a name
NON_UTF8_NAME = "non_utf8_name"  # indexed, merely an awkward file name
INSTANCE = "instance"  # indexed, its UIDs may be names
BENIGN_DUPLICATE = "benign_duplicate"  # indexed, same bytes as the copy that serves
CONFLICT = "conflict"  # indexed, different bytes: never served, recorded as a conflict

ITEM = b"\xfe\xff\x00\xe0"
_ITEM_END = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
_SEQUENCE_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_UNDEFINED = b"\xff\xff\xff\xff"
_BOMB_CHUNK = 1 << 20
_BOMB_CHUNKS = 200  # 200 MiB inflated from about 200 KB (reliability.md D2)
_NESTING = 5000  # far beyond Python's default recursion limit (reliability.md D3)


@dataclass
class Outcomes:
    """Files written under ``root``, the outcome each must have and the UID each carries."""

    root: Path
    expected: dict[str, str] = field(default_factory=dict)
    uids: dict[str, str] = field(default_factory=dict)

    def put(self, relative: str, data: bytes, outcome: str, uid: str | None = None) -> None:
        """Write ``data`` to ``root/relative`` and record what must become of it."""
        write_bytes(self.root, relative, data)
        self.expected[relative] = outcome
        if uid is not None:
            self.uids[relative] = uid


def meta_bytes(sop_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, ``DICM`` and a CT File Meta group, for datasets assembled by hand."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    meta = file_meta(CT_CLASS, sop_uid, transfer_syntax)
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return b"\x00" * 128 + b"DICM" + buffer.getvalue()


def _identity_bytes(sop_uid: str, study_uid: str, series_uid: str) -> bytes:
    """The few leading elements that make a hand-built file look like a CT."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_dataset(buffer, ct_identity(sop_uid, study_uid, series_uid))
    return buffer.getvalue()


def identity_file(sop_uid: str, study_uid: str, series_uid: str) -> bytes:
    """A file of nothing but a CT's identity (explicit VR little endian), to append to."""
    return meta_bytes(sop_uid, ExplicitVRLittleEndian) + _identity_bytes(
        sop_uid, study_uid, series_uid
    )


def _deflate_bomb(header: bytes) -> bytes:
    """A deflated dataset whose PixelData inflates to 200 MiB of zeros.

    After Z_FULL_FLUSH the compressor state is reset, so one compressed
    megabyte can be repeated instead of compressing 200 MB every run.
    """
    pixel_header = b"\xe0\x7f\x10\x00OB\x00\x00" + struct.pack("<I", _BOMB_CHUNK * _BOMB_CHUNKS)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = compressor.compress(header + pixel_header) + compressor.flush(zlib.Z_FULL_FLUSH)
    chunk = compressor.compress(bytes(_BOMB_CHUNK)) + compressor.flush(zlib.Z_FULL_FLUSH)
    body = head + chunk * _BOMB_CHUNKS + compressor.flush(zlib.Z_FINISH)
    return body + (b"\x00" if len(body) % 2 else b"")


def deflate_bomb_file(sop_uid: str, study_uid: str, series_uid: str) -> bytes:
    """A deflated CT file whose dataset inflates to 200 MiB (reliability.md D2)."""
    identity = _identity_bytes(sop_uid, study_uid, series_uid)
    return meta_bytes(sop_uid, DeflatedExplicitVRLittleEndian) + _deflate_bomb(identity)


def _nested_sequences(depth: int) -> bytes:
    """ContentSequence items nested ``depth`` deep, all of undefined length."""
    opening = b"\x40\x00\x30\xa7SQ\x00\x00" + _UNDEFINED + ITEM + _UNDEFINED
    return opening * depth + (_ITEM_END + _SEQUENCE_END) * depth


def deep_nesting_file(sop_uid: str, study_uid: str, series_uid: str) -> bytes:
    """A CT identity followed by 5,000 nested sequences (reliability.md D3)."""
    return identity_file(sop_uid, study_uid, series_uid) + _nested_sequences(_NESTING)
