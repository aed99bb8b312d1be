"""Raw sequences: recognising them among pydicom's raw elements and slicing their items.

The parser reads the top level with ``defer_size`` and leaves sequences as raw
bytes. Converting every sequence of every CT slice through pydicom would cost
more than the slice's whole identity, so this module decides cheaply which raw
elements are sequences, whether their bytes can hold an edge at all, and
reads the items of ordinarily encoded sequences directly, one at a time, so
a sequence of any length costs one item's objects at a time (reliability.md
D6); anything unusual is signalled with :class:`UnusualEncoding` and left to
pydicom.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Mapping
from itertools import compress
from operator import attrgetter
from typing import cast

from pydicom._dicom_dict import DicomDictionary  # the dictionary datadict re-exports
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.tag import BaseTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

from dicomfs.dicom.references.limits import Reading
from dicomfs.dicom.references.tags import FOR_TAGS, REF_SOP_UID, SERIES_UID
from dicomfs.dicom.references.undefined import (
    UNDEFINED_LENGTH,
    MemoryWindow,
    value_end,
)
from dicomfs.dicom.references.undefined import (
    UnusualEncoding as UnusualEncoding,  # raised by iter_items, re-exported
)

Elements = Mapping[int, RawDataElement | DataElement]
# A raw value: the bytes read from the file, or a view into a longer value.
Value = bytes | memoryview

# Any element that can become an edge. A raw sequence whose bytes contain none
# of these tags cannot hold an edge at any depth, so it is never converted.
_EDGE_TAGS = (REF_SOP_UID, SERIES_UID, *FOR_TAGS)
_EDGE_TAG_BYTES_LE = tuple(struct.pack("<HH", t >> 16, t & 0xFFFF) for t in _EDGE_TAGS)
_EDGE_TAG_BYTES_BE = tuple(struct.pack(">HH", t >> 16, t & 0xFFFF) for t in _EDGE_TAGS)
# memoryview has no substring search; a regular expression searches any buffer.
_EDGE_TAG_SEARCH = {
    little: re.compile(b"|".join(re.escape(p) for p in patterns)).search
    for little, patterns in ((True, _EDGE_TAG_BYTES_LE), (False, _EDGE_TAG_BYTES_BE))
}
_ITEM_TAG_LE = b"\xfe\xff\x00\xe0"

SEQUENCE_TAGS = frozenset(tag for tag, entry in DicomDictionary.items() if entry[0] == "SQ")


def keyword(tag: int) -> str:
    """Keyword for paths; private and unknown tags print as (gggg,eeee)."""
    entry = DicomDictionary.get(tag)
    return entry[4] if entry and entry[4] else f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def raw_sequence_encoding(tag: int, elem: RawDataElement) -> bool | None:
    """Whether a raw element holds a sequence: None if not, else its implicit-VR flag.

    UN-encoded sequences are implicit VR little endian (PS3.5 6.2.2). Private
    tags have no dictionary VR; a value that starts with an item tag is tried
    as a sequence (a wrong guess costs a flagged parse error, never an edge).
    """
    vr = elem.VR
    if vr == "SQ":
        return elem.is_implicit_VR
    if vr is None or vr == "UN":
        if tag in SEQUENCE_TAGS:
            return True
        value = elem.value
        if tag >> 16 & 1 and value is not None and value[:4] == _ITEM_TAG_LE:
            return True
    return None


def is_sequence(tag: int, elem: RawDataElement | DataElement) -> bool:
    """Whether ``elem`` holds a sequence, raw (by its VR or tag) or already converted."""
    if isinstance(elem, RawDataElement):
        return raw_sequence_encoding(tag, elem) is not None
    return elem.VR == "SQ"


_GET_VR = attrgetter("VR")
_IS_SQ = frozenset({"SQ"}).__contains__
_PRIVATE_GROUP_BIT = 0x10000


def sequence_tags(elems: Elements) -> list[int]:
    """Tags of the sequences in ``elems``, in file order.

    Runs on every element of every CT slice, so the common cases use C-level
    iteration: explicit "SQ" VRs, then dictionary and private tags for
    implicit VR and UN.
    """
    vrs = list(map(_GET_VR, elems.values()))
    found = list(compress(elems, map(_IS_SQ, vrs)))
    if None in vrs or "UN" in vrs:
        known = set(found)
        candidates = {
            *SEQUENCE_TAGS.intersection(elems),
            *filter(_PRIVATE_GROUP_BIT.__and__, elems),
        }
        found += (t for t in candidates if t not in known and is_sequence(t, elems[t]))
        found.sort()
    return found


def has_edge_tags(value: Value, little_endian: bool) -> bool:
    """Whether the raw bytes contain a tag that can become an edge, at any depth.

    A byte search, so it may say yes by accident, never no wrongly: a
    sequence it rules out is never converted (most sequences of a CT slice).
    """
    if isinstance(value, memoryview):
        return _EDGE_TAG_SEARCH[little_endian](value) is not None
    patterns = _EDGE_TAG_BYTES_LE if little_endian else _EDGE_TAG_BYTES_BE
    return any(pattern in value for pattern in patterns)


_ITEM = 0xFFFEE000
_ITEM_END_ELEMENT = 0xE00D
_VR_NAMES = {vr.value.encode("ascii"): vr.value for vr in VR}
_LONG_VRS = frozenset(vr.value.encode("ascii") for vr in EXPLICIT_VR_LENGTH_32)
_HEADERS = {
    little: (
        struct.Struct("<HHL" if little else ">HHL"),
        struct.Struct("<HH2sH" if little else ">HH2sH"),
        struct.Struct("<L" if little else ">L"),
    )
    for little in (True, False)
}
# Values at least this long are kept as views into the sequence instead of
# copies: a sequence nested n deep would otherwise be copied n times.
_VIEW_MIN = 1024


def read_items(value: Value, implicit: bool, little: bool, offset: int) -> list[Elements]:
    """Raw elements of every item of a sequence value, as a list (see :func:`iter_items`)."""
    return list(iter_items(value, implicit, little, offset))


def iter_items(
    value: Value, implicit: bool, little: bool, offset: int, reading: Reading | None = None
) -> Iterator[Elements]:
    """Raw elements of each item of a sequence value, one item at a time.

    pydicom's reader builds a Dataset and a generator per item, which costs
    more than a CT slice's whole identity, and builds every item before the
    first is used; this reader slices the value directly and yields each item
    as it is read, so a sequence of 600,000 items never exists as objects.
    Items and nested values may have defined or undefined lengths; an
    implicit VR switch, an unknown VR, a stray delimiter or lengths that do
    not add up raise UnusualEncoding (after the items already yielded) and
    are left to pydicom. Long values are views into ``value``, not copies.
    """
    item_head, explicit_head, long_length = _HEADERS[little]
    ends = reading.ends if reading is not None else None
    view = value if isinstance(value, memoryview) else None
    copy_small = view is not None
    pos, end = 0, len(value)
    while pos < end:
        if pos + 8 > end:
            raise UnusualEncoding
        group, element, length = item_head.unpack_from(value, pos)
        if (group << 16 | element) != _ITEM:
            raise UnusualEncoding
        pos += 8
        undefined_item = length == UNDEFINED_LENGTH
        stop = end if undefined_item else pos + length
        if stop > end:
            raise UnusualEncoding
        elems: dict[int, RawDataElement | DataElement] = {}
        while True:
            if pos + 8 > stop:
                if pos == stop and not undefined_item:
                    break
                raise UnusualEncoding
            if implicit:
                group, element, length = item_head.unpack_from(value, pos)
                vr = None
                pos += 8
            else:
                group, element, raw_vr, length = explicit_head.unpack_from(value, pos)
                if group == 0xFFFE:
                    vr = None
                    length = item_head.unpack_from(value, pos)[2]
                    pos += 8
                else:
                    vr = _VR_NAMES.get(raw_vr)
                    if vr is None:
                        raise UnusualEncoding
                    if raw_vr in _LONG_VRS:
                        if pos + 12 > stop:
                            raise UnusualEncoding
                        length = long_length.unpack_from(value, pos + 8)[0]
                        pos += 12
                    else:
                        pos += 8
            if group == 0xFFFE:  # only an item's own delimiter may stand here
                if undefined_item and element == _ITEM_END_ELEMENT:
                    break
                raise UnusualEncoding
            if length == UNDEFINED_LENGTH:
                known = ends.get(offset + pos) if ends else None
                if known is not None and _is_delimiter(value, known - offset, pos, stop, little):
                    value_stop = known - offset  # found by an earlier pass
                else:
                    un = vr == "UN"
                    value_stop, _ = value_end(
                        MemoryWindow(value, 0, stop),
                        pos,
                        implicit or un,
                        little or un,
                        origin=offset,
                        ends=ends,
                        reading=reading,
                    )
                after = value_stop + 8
            else:
                value_stop = after = pos + length
                if value_stop > stop:
                    raise UnusualEncoding
            if value_stop - pos >= _VIEW_MIN:
                if view is None:
                    view = memoryview(value)
                data: Value = view[pos:value_stop]
            elif copy_small:
                data = bytes(value[pos:value_stop])
            else:
                data = value[pos:value_stop]
            tag = group << 16 | element  # plain int keys: BaseTag.__eq__ is slow Python
            # pydicom's type says bytes; nothing of pydicom reads these values.
            elems[tag] = RawDataElement(
                BaseTag(tag), vr, length, cast(bytes, data), offset + pos, implicit, little
            )
            pos = after
        yield elems


def _is_delimiter(value: Value, at: int, start: int, stop: int, little: bool) -> bool:
    """Whether a Sequence Delimitation Item lies at ``at``, between ``start`` and ``stop``."""
    if not start <= at <= stop - 8:
        return False
    group, element, _ = _HEADERS[little][0].unpack_from(value, at)
    return (group, element) == (0xFFFE, 0xE0DD)
