"""One dataset (the top level or a sequence item) read through its raw elements.

A :class:`Node` answers the few questions an edge needs: a value as text or a
clean UID, the items of a sequence (read on demand, and only when their bytes
can hold an edge), and the path of an element for the edge's ``path``. It
works on raw elements instead of ``Dataset.__getitem__``, which runs
conversion hooks, validation and VR correction for every access.

Items are streamed: a sequence is read one item at a time each time it is
walked, and only small sequences keep their items, so memory does not grow
with the number of items (reliability.md D6). Every node of one object shares
a :class:`~dicomfs.dicom.references.limits.Reading` that counts the items
read; when a budget runs out, or the extractor stops, sequences yield no more
items and the object carries ``edges_capped``. A node's ``key`` names its
position in the tree (sequence tags and item indexes), so a node read twice
is recognised as the same item.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import cast

from pydicom._dicom_dict import DicomDictionary  # the dictionary datadict re-exports
from pydicom.charset import convert_encodings, decode_bytes, default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.values import convert_SQ

from dicomfs.dicom.records import clean_uid
from dicomfs.dicom.references.limits import BudgetSpent, Reading
from dicomfs.dicom.references.raw import (
    Elements,
    Value,
    has_edge_tags,
    iter_items,
    keyword,
    raw_sequence_encoding,
)
from dicomfs.dicom.references.tags import SPECIFIC_CHARACTER_SET
from dicomfs.dicom.references.undefined import UnusualEncoding

_BINARY_INT_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l"}
# Sequences up to this long keep their items once read (the known paths and
# the walk read most sequences twice), as long as the object holds fewer
# than _CACHED_ITEMS such items; longer ones are read again when walked.
_CACHE_BYTES = 64 * 1024
_CACHE_DATASETS = 1024  # sequences pydicom has already read
_CACHED_ITEMS = 20_000


class Node:
    """One dataset (top level or sequence item) read through its raw elements."""

    __slots__ = (
        "_encodings",
        "_sequences",
        "elems",
        "flags",
        "index",
        "key",
        "parent",
        "reading",
        "tag",
    )

    def __init__(
        self,
        elems: Elements,
        flags: list[str],
        parent: Node | None = None,
        tag: int = 0,
        index: int = 0,
        *,
        reading: Reading | None = None,
    ) -> None:
        self.elems = elems
        self.flags = flags  # shared with the whole tree: parse problems inside sequences
        self.parent = parent
        self.tag = tag  # the sequence this item belongs to (0 for the top level)
        self.index = index
        # The same for every reading of this item: a hash of its position.
        self.key: int = hash((parent.key, tag, index)) if parent is not None else 0
        if reading is None:
            reading = parent.reading if parent is not None else Reading(flags)
        self.reading: Reading = reading
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
        if isinstance(value, bytes | memoryview):
            return bytes(value).decode("ascii", "replace")
        return "" if value is None else str(value)

    def raw_text(self, tag: int) -> str:
        """The value as written, multi-values joined by a backslash; "" if absent."""
        elem = self.elems.get(tag)
        if elem is None:
            return ""
        value = elem.value
        if isinstance(value, memoryview):  # a long value read inside a sequence
            value = value.tobytes()
        if isinstance(value, bytes):
            if elem.__class__ is RawDataElement:
                vr = elem.VR or _dictionary_vr(tag)
                fmt = _BINARY_INT_FORMATS.get(vr)
                if fmt is not None:
                    return _unpack_ints(value, fmt, elem.is_little_endian)
            # ISO 2022 values (Japanese, Korean) are ASCII bytes too: their
            # escape sequences switch the character set, so they must be decoded.
            if value.isascii() and b"\x1b" not in value:
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

    def items(self, tag: int, *, edges_only: bool = True) -> Iterable[Node]:
        """The items of sequence ``tag``, read one at a time (small sequences are kept).

        With ``edges_only`` a raw sequence that cannot contain an edge is not
        read and yields no items; pass False to read qualifiers. Nothing is
        yielded once the object's reading has stopped.
        """
        reading = self.reading
        if reading.stopped:
            return ()
        cached = self._sequences.get(tag)
        if cached is not None:
            return cached
        elem = self.elems.get(tag)
        if elem is None:
            return ()
        if isinstance(elem, RawDataElement):
            value = elem.value
            implicit = raw_sequence_encoding(tag, elem)
            if not value or implicit is None:
                return ()
            # UN-encoded sequences are implicit VR little endian in any syntax.
            little = bool(elem.is_little_endian) or elem.VR == "UN"
            if edges_only and not has_edge_tags(value, little):
                return ()
            nodes = self._nodes(tag, self._raw_items(tag, value, implicit, little, elem.value_tell))
            keep = len(value) <= _CACHE_BYTES
        elif elem.VR == "SQ" and elem.value is not None:
            datasets: list[Dataset] = list(elem.value)
            nodes = self._nodes(tag, (cast(Elements, ds._dict) for ds in datasets))
            keep = len(datasets) <= _CACHE_DATASETS
        else:
            return ()
        if not keep or reading.cached_items >= _CACHED_ITEMS:
            return nodes
        kept = list(nodes)
        if not reading.stopped:  # a list cut short by a bound is never kept
            reading.cached_items += len(kept)
            self._sequences[tag] = kept
        return kept

    def has_items(self, tag: int, *, edges_only: bool = True) -> bool:
        """Whether sequence ``tag`` yields at least one item (reads at most one)."""
        return next(iter(self.items(tag, edges_only=edges_only)), None) is not None

    def _nodes(self, tag: int, source: Iterator[Elements]) -> Iterator[Node]:
        reading = self.reading
        index = 0
        try:
            for elems in source:
                if reading.stopped:
                    return
                reading.spend(1)
                yield Node(elems, self.flags, self, tag, index)
                index += 1
        except BudgetSpent:
            reading.out_of_steps(self._at(tag, index))

    def _at(self, tag: int, index: int) -> str:
        prefix = self.path
        here = f"{keyword(tag)}[{index}]"
        return f"{prefix}.{here}" if prefix else here

    def _raw_items(
        self, tag: int, value: Value, implicit: bool, little: bool, offset: int
    ) -> Iterator[Elements]:
        """The fast reader's items; from the first item it cannot read, pydicom's."""
        done = 0
        try:
            for elems in iter_items(value, implicit, little, offset, self.reading):
                yield elems
                done += 1
            return
        except UnusualEncoding:
            pass
        yield from self._read_with_pydicom(tag, value, implicit, little, offset, done)

    def _read_with_pydicom(
        self, tag: int, value: Value, implicit: bool, little: bool, offset: int, skip: int
    ) -> Iterator[Elements]:
        """Items ``skip`` and on, read by pydicom, within the object's pydicom bytes."""
        reading = self.reading
        if len(value) > reading.pydicom_left:
            reading.pydicom_refused(self._at(tag, skip))
            return
        reading.pydicom_left -= len(value)
        try:
            datasets: Iterable[Dataset] = convert_SQ(bytes(value), implicit, little, None, offset)
        except (RecursionError, MemoryError):
            raise
        except Exception:  # one broken sequence must not lose the instance
            self.flags.append(f"malformed_sequence:{keyword(tag)}")
            return
        for i, ds in enumerate(datasets):
            if i >= skip:
                yield cast(Elements, ds._dict)


def _dictionary_vr(tag: int) -> str:
    entry = DicomDictionary.get(tag)
    return entry[0] if entry is not None else "UN"


def _unpack_ints(value: bytes, fmt: str, little_endian: bool | None) -> str:
    size = struct.calcsize(fmt)
    count = len(value) // size
    numbers = struct.unpack(("<" if little_endian else ">") + fmt * count, value[: count * size])
    return "\\".join(str(n) for n in numbers)
