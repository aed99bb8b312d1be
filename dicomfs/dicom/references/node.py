"""One dataset (the top level or a sequence item) read through its raw elements.

A :class:`Node` answers the few questions an edge needs: a value as text or a
clean UID, the items of a sequence (converted once, on demand, and only when
their bytes can hold an edge), and the path of an element for the edge's
``path``. It works on raw elements instead of ``Dataset.__getitem__``, which
runs conversion hooks, validation and VR correction for every access.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import cast

from pydicom._dicom_dict import DicomDictionary  # the dictionary datadict re-exports
from pydicom.charset import convert_encodings, decode_bytes, default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.values import convert_SQ

from dicomfs.dicom.records import clean_uid
from dicomfs.dicom.references.raw import (
    Elements,
    UnusualEncoding,
    has_edge_tags,
    keyword,
    raw_sequence_encoding,
    read_items,
)
from dicomfs.dicom.references.tags import SPECIFIC_CHARACTER_SET

_BINARY_INT_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l"}


class Node:
    """One dataset (top level or sequence item) read through its raw elements."""

    __slots__ = ("_encodings", "_sequences", "elems", "flags", "index", "parent", "tag")

    def __init__(
        self,
        elems: Elements,
        flags: list[str],
        parent: Node | None = None,
        tag: int = 0,
        index: int = 0,
    ) -> None:
        self.elems = elems
        self.flags = flags  # shared with the whole tree: parse problems inside sequences
        self.parent = parent
        self.tag = tag  # the sequence this item belongs to (0 for the top level)
        self.index = index
        self._encodings: list[str] | None = None
        self._sequences: dict[int, list[Node]] = {}

    # -- paths ---------------------------------------------------------------

    @property
    def path(self) -> str:
        parts: list[str] = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            parts.append(f"{keyword(node.tag)}[{node.index}]")
            node = node.parent
        return ".".join(reversed(parts))

    def element_path(self, tag: int) -> str:
        prefix = self.path
        return f"{prefix}.{keyword(tag)}" if prefix else keyword(tag)

    # -- values --------------------------------------------------------------

    @property
    def encodings(self) -> list[str]:
        if self._encodings is None:
            if SPECIFIC_CHARACTER_SET in self.elems:
                terms = [t.strip() for t in self._decode_ascii(SPECIFIC_CHARACTER_SET).split("\\")]
                try:
                    self._encodings = convert_encodings(terms or [""])
                except (LookupError, ValueError):  # garbage names (codecs.lookup)
                    self._encodings = [default_encoding]
            elif self.parent is not None:
                self._encodings = self.parent.encodings
            else:
                self._encodings = [default_encoding]
        return self._encodings

    def _decode_ascii(self, tag: int) -> str:
        elem = self.elems[tag]
        value = elem.value
        if isinstance(value, bytes):
            return value.decode("ascii", "replace")
        return "" if value is None else str(value)

    def raw_text(self, tag: int) -> str:
        """The value as written, multi-values joined by a backslash; "" if absent."""
        elem = self.elems.get(tag)
        if elem is None:
            return ""
        value = elem.value
        if isinstance(value, bytes):
            if elem.__class__ is RawDataElement:
                vr = elem.VR or _dictionary_vr(tag)
                fmt = _BINARY_INT_FORMATS.get(vr)
                if fmt is not None:
                    return _unpack_ints(value, fmt, elem.is_little_endian)
            if value.isascii():
                return value.decode("ascii")
            try:
                return decode_bytes(value, self.encodings, set())
            except (LookupError, UnicodeError, ValueError):
                return value.decode("latin-1")
        if value is None:
            return ""
        if isinstance(value, list | tuple):
            return "\\".join(str(v) for v in value)
        return str(value)

    def text(self, tag: int) -> str:
        return self.raw_text(tag).strip(" \x00")

    def uid(self, tag: int) -> str:
        return clean_uid(self.raw_text(tag))

    def values(self, tag: int) -> str:
        """A qualifier value: multi-values comma-joined, blanks dropped."""
        parts = (part.strip(" \x00") for part in self.raw_text(tag).split("\\"))
        return ",".join(part for part in parts if part)

    # -- sequences -----------------------------------------------------------

    def items(self, tag: int, *, edges_only: bool = True) -> list[Node]:
        """The items of sequence ``tag`` (converted once and cached).

        With ``edges_only`` a raw sequence that cannot contain an edge is not
        converted and yields no items; pass False to read qualifiers.
        """
        elem = self.elems.get(tag)
        if elem is None:
            return []
        cached = self._sequences.get(tag)
        if cached is not None:
            return cached
        item_elems: list[Elements]
        if isinstance(elem, RawDataElement):
            value = elem.value
            implicit = raw_sequence_encoding(tag, elem)
            if not value or implicit is None:
                return []
            # UN-encoded sequences are implicit VR little endian in any syntax.
            little = bool(elem.is_little_endian) or elem.VR == "UN"
            if edges_only and not has_edge_tags(value, little):
                return []
            try:
                item_elems = read_items(value, implicit, little, elem.value_tell)
            except UnusualEncoding:
                item_elems = self._read_with_pydicom(tag, value, implicit, little, elem.value_tell)
        elif elem.VR == "SQ" and elem.value is not None:
            item_elems = [cast(Elements, ds._dict) for ds in elem.value]
        else:
            return []
        nodes = [Node(elems, self.flags, self, tag, i) for i, elems in enumerate(item_elems)]
        self._sequences[tag] = nodes
        return nodes

    def _read_with_pydicom(
        self, tag: int, value: bytes, implicit: bool, little: bool, offset: int
    ) -> list[Elements]:
        try:
            datasets: Iterable[Dataset] = convert_SQ(value, implicit, little, None, offset)
        except (RecursionError, MemoryError):
            raise
        except Exception:  # one broken sequence must not lose the instance
            self.flags.append(f"malformed_sequence:{keyword(tag)}")
            return []
        return [cast(Elements, ds._dict) for ds in datasets]


def _dictionary_vr(tag: int) -> str:
    entry = DicomDictionary.get(tag)
    return entry[0] if entry is not None else "UN"


def _unpack_ints(value: bytes, fmt: str, little_endian: bool | None) -> str:
    size = struct.calcsize(fmt)
    count = len(value) // size
    numbers = struct.unpack(("<" if little_endian else ">") + fmt * count, value[: count * size])
    return "\\".join(str(n) for n in numbers)
