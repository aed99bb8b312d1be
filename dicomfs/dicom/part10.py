"""The PS3.10 file header: preamble, ``DICM`` and a File Meta group, made from known values.

Two places need one: objects received over the network arrive as bare
datasets and are stored as PS3.10 files (``net.store``), and the view's
``part10`` setting serves files written without a header (Monaco and other
TPS exports) with one in front (``view.tree``), because pydicom 3 based tools
(rt-utils) and strict importers refuse a file that does not begin with it.
One encoder keeps the two the same.

The header is encoded here, not by pydicom: pydicom would validate (and
warn about) an untrusted UID on every write, and the view must make the
same bytes every time from the index row alone, without reading the file.

What the parser detected is kept as a flag, ``dataset_only:<transfer syntax
UID>``: the file is the dataset from its first byte (no preamble, no File
Meta), in that encoding. Only such files get a whole header; a file with a
File Meta group but no preamble (``no_preamble``) gets the 132 bytes of
preamble and ``DICM`` only. Everything else is served as it is.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable

from dicomfs import __version__

# A name-based UID (PS3.5 B.2) identifying dicomfs as the writer of a File
# Meta group (PS3.10 7.1, Implementation Class UID). Its seed names the module
# that first wrote it: objects received again must encode byte for byte as
# before, or the store would take an identical copy for a conflict.
IMPLEMENTATION_CLASS_UID = f"2.25.{uuid.uuid5(uuid.NAMESPACE_DNS, 'dicomfs.net.store').int}"
IMPLEMENTATION_VERSION = f"DICOMFS_{__version__}"[:16]

PREAMBLE = bytes(128) + b"DICM"
DATASET_ONLY = "dataset_only"
NO_PREAMBLE = "no_preamble"

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"

_UID_CHARACTERS = frozenset("0123456789.")


def detected_syntax(implicit: bool, little: bool) -> str | None:
    """The transfer syntax of a dataset read as ``implicit``/``little``; None for none."""
    if implicit:
        return IMPLICIT_VR_LITTLE_ENDIAN if little else None  # implicit big endian: no syntax
    return EXPLICIT_VR_LITTLE_ENDIAN if little else EXPLICIT_VR_BIG_ENDIAN


def dataset_only_flag(implicit: bool, little: bool) -> str | None:
    """The flag of a file that is a bare dataset in this encoding (None: no syntax names it)."""
    syntax = detected_syntax(implicit, little)
    return None if syntax is None else f"{DATASET_ONLY}:{syntax}"


def _meta_element(group_element: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian File Meta element (PS3.10 7.1, PS3.5 7.1.2)."""
    tag = struct.pack("<HH", group_element >> 16, group_element & 0xFFFF)
    if vr == b"OB":
        return tag + vr + b"\x00\x00" + struct.pack("<I", len(value)) + value
    return tag + vr + struct.pack("<H", len(value)) + value


def _padded(text: str, pad: bytes, limit: int) -> bytes:
    raw = text.encode("ascii", "replace")[:limit]
    return raw + pad if len(raw) % 2 else raw


def encode_file_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, calling_ae: str = ""
) -> bytes:
    """Preamble, ``DICM`` and the File Meta group; values copied, capped at their VR's length."""
    elements = [
        _meta_element(0x00020001, b"OB", b"\x00\x01"),
        _meta_element(0x00020002, b"UI", _padded(sop_class_uid, b"\x00", 64)),
        _meta_element(0x00020003, b"UI", _padded(sop_instance_uid, b"\x00", 64)),
        _meta_element(0x00020010, b"UI", _padded(transfer_syntax, b"\x00", 64)),
        _meta_element(0x00020012, b"UI", _padded(IMPLEMENTATION_CLASS_UID, b"\x00", 64)),
        _meta_element(0x00020013, b"SH", _padded(IMPLEMENTATION_VERSION, b" ", 16)),
    ]
    title = calling_ae.strip()
    if title:
        elements.append(_meta_element(0x00020016, b"AE", _padded(title, b" ", 16)))
    body = b"".join(elements)
    length = _meta_element(0x00020000, b"UL", struct.pack("<I", len(body)))
    return PREAMBLE + length + body


def _is_uid_value(value: str) -> bool:
    """A value a UI element can hold as it is: 1-64 digits and dots."""
    return 0 < len(value) <= 64 and set(value) <= _UID_CHARACTERS


def prefix(sop_class_uid: str, sop_instance_uid: str, flags: Iterable[str]) -> bytes:
    """What goes in front of an indexed file to make it a PS3.10 file; b"" for nothing.

    ``flags`` are the parser's flags of the file. A file whose SOP UIDs
    cannot be copied into a File Meta group unchanged (an untrusted value
    that is no UID) gets nothing: a header that disagrees with its dataset
    would be worse than none.
    """
    syntax = None
    for flag in flags:
        if flag == NO_PREAMBLE:
            return PREAMBLE
        name, _, value = flag.partition(":")
        if name == DATASET_ONLY:
            syntax = value
    if syntax is None or not all(map(_is_uid_value, (sop_class_uid, sop_instance_uid, syntax))):
        return b""
    return encode_file_meta(sop_class_uid, sop_instance_uid, syntax)
