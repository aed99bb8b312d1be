"""Where an undefined-length value ends, found by stepping over headers and keeping nothing.

An undefined-length sequence (or item, or encapsulated value) ends at its
matching delimiter, and values nested in it may have delimiters of their own,
so its end is known only after stepping over every element header inside.
pydicom finds it by parsing the whole value into Datasets, about 1.5 KB per
item: 600,000 contour image items cost a gigabyte before a single edge
(reliability.md D6). This module only steps: defined lengths are skipped,
undefined ones are followed on an explicit stack, and nothing is built, so
the raw bytes can be handed on and read item by item.

The bytes come through a :class:`Window`: the whole value in memory for
values nested in an item (``MemoryWindow``), or a sliding window over the
file for top-level sequences (``FileWindow``), so the file is never read
whole to find an end. Anything unusual (a stray tag, more nesting than
:data:`MAX_NESTING`, a short read) raises UnusualEncoding and is left to
pydicom, as before. The two liberties pydicom takes with explicit
VR are taken here too, so that the end found is the end pydicom would
find: an item whose first element has no VR is read as implicit VR, and an
element whose VR bytes are not letters is read as implicit.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

from dicomfs.dicom.references.limits import SCAN_STEPS_PER_ITEM, Reading

UNDEFINED_LENGTH = 0xFFFFFFFF
# Undefined-length values followed inside one another; real data nests a
# handful (SR content trees about 15), pydicom itself stops near 300.
MAX_NESTING = 128

_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_VR_NAMES = frozenset(vr.value.encode("ascii") for vr in VR)
_LONG_VRS = frozenset(vr.value.encode("ascii") for vr in EXPLICIT_VR_LENGTH_32)
_UN = b"UN"
_STRUCTS = {
    little: (
        struct.Struct("<HHL" if little else ">HHL"),
        struct.Struct("<HH2sH" if little else ">HH2sH"),
        struct.Struct("<L" if little else ">L"),
    )
    for little in (True, False)
}
_CHUNK = 64 * 1024
_CHARGE_EVERY = 4096
# Values at least this long have their end remembered, at most _MEMO_MAX of
# them per object; shorter ones cost little to step over again.
MEMO_MIN = 4096
_MEMO_MAX = 100_000


class UnusualEncoding(Exception):
    """An encoding the fast readers leave to pydicom."""


class Window:
    """Bytes ``buf`` hold the file (or value) from offset ``base`` to ``end``."""

    __slots__ = ("base", "buf", "end")

    def __init__(self, buf: bytes | memoryview, base: int, end: int) -> None:
        self.buf = buf
        self.base = base
        self.end = end

    def need(self, pos: int, size: int) -> None:
        """Make ``[pos, pos + size)`` available, or raise UnusualEncoding."""
        raise UnusualEncoding

    def peek(self, pos: int, size: int) -> bytes:
        """The bytes at ``[pos, pos + size)`` (fewer at the end), leaving the window as it is."""
        if pos < self.base:
            return b""
        return bytes(self.buf[pos - self.base : min(pos + size, self.end) - self.base])


class MemoryWindow(Window):
    """A value already in memory; its end is the end of what may be read."""

    __slots__ = ()


class FileWindow(Window):
    """A sliding window over a file: only the part being stepped over is held."""

    __slots__ = ("fp", "size")

    def __init__(self, fp: BinaryIO, size: int) -> None:
        super().__init__(b"", 0, 0)
        self.fp = fp
        self.size = size

    def need(self, pos: int, size: int) -> None:
        if pos + size > self.size:
            raise UnusualEncoding  # the file ends first: pydicom says how
        self.fp.seek(pos)
        data = self.fp.read(max(size, _CHUNK))
        if len(data) < size:
            raise UnusualEncoding
        self.buf, self.base, self.end = data, pos, pos + len(data)

    def peek(self, pos: int, size: int) -> bytes:
        self.fp.seek(pos)
        return self.fp.read(min(size, max(self.size - pos, 0)))


def value_end(
    window: Window,
    pos: int,
    implicit: bool,
    little: bool,
    *,
    origin: int = 0,
    ends: dict[int, int] | None = None,
    reading: Reading | None = None,
) -> tuple[int, int]:
    """Step over the undefined-length value starting at ``pos``: (delimiter offset, after it).

    The value is a run of items closed by a Sequence Delimitation Item, as
    both sequences and encapsulated pixel data are. UN content is implicit VR
    little endian (PS3.5 6.2.2). ``origin`` is the file offset of the
    window's position 0. The ends of long values met on the way are kept in
    ``ends`` (file offsets) so that reading them later needs no second pass:
    a sequence nested n deep would otherwise be stepped over n times. Steps
    are charged to ``reading``, SCAN_STEPS_PER_ITEM headers for one item.
    """
    # Frames: (in an item?, implicit, little, where the value began).
    stack: list[tuple[bool, bool, bool, int]] = [(False, implicit, little, pos)]
    steps = 0
    while True:
        in_item, implicit, little, began = stack[-1]
        head, explicit_head, long_length = _STRUCTS[little]
        if pos + 8 > window.end:
            window.need(pos, 8)
        group, element, length = head.unpack_from(window.buf, pos - window.base)
        tag = group << 16 | element
        steps += 1
        if reading is not None and steps % _CHARGE_EVERY == 0:
            reading.spend(_CHARGE_EVERY // SCAN_STEPS_PER_ITEM)
        if not in_item:
            if tag == _ITEM:
                pos += 8
                if length == UNDEFINED_LENGTH:
                    stack.append((True, implicit or _starts_implicit(window, pos), little, pos))
                else:
                    pos += length
            elif tag == _SEQUENCE_END:
                stack.pop()
                if ends is not None and pos - began >= MEMO_MIN and len(ends) < _MEMO_MAX:
                    ends[origin + began] = origin + pos
                if not stack:
                    if reading is not None:
                        reading.spend(steps % _CHARGE_EVERY // SCAN_STEPS_PER_ITEM)
                    return pos, pos + 8
                pos += 8
            else:
                raise UnusualEncoding
            continue
        if tag == _ITEM_END:
            stack.pop()
            pos += 8
            continue
        if group == 0xFFFE:
            raise UnusualEncoding
        vr = b""
        if implicit:
            pos += 8
        else:
            _, _, vr, short = explicit_head.unpack_from(window.buf, pos - window.base)
            if vr not in _VR_NAMES and not b"AA" <= vr <= b"ZZ":
                vr = b""  # pydicom reads this element as implicit VR (a writer's switch)
                pos += 8
            elif vr in _LONG_VRS:
                if pos + 12 > window.end:
                    window.need(pos, 12)
                length = long_length.unpack_from(window.buf, pos + 8 - window.base)[0]
                pos += 12
            else:  # unknown VRs too have a 16-bit length, as pydicom reads them
                length = short
                pos += 8
        if length != UNDEFINED_LENGTH:
            pos += length
            continue
        known = ends.get(origin + pos) if ends else None
        if known is not None and _delimiter_at(window, known - origin, pos, little):
            pos = known - origin + 8  # stepped over before: jump past its delimiter
            continue
        if len(stack) >= MAX_NESTING:
            raise UnusualEncoding
        un = vr == _UN
        stack.append((False, implicit or un, little or un, pos))


def _starts_implicit(window: Window, pos: int) -> bool:
    """Whether an item of an explicit VR sequence is written in implicit VR.

    pydicom decides so from the first element of each item (PS3.5 6.2.2
    allows implicit VR in undefined-length sequences): its VR bytes are not
    two capital letters.
    """
    head = window.peek(pos + 4, 2)
    return len(head) == 2 and not (0x40 < head[0] < 0x5B and 0x40 < head[1] < 0x5B)


def _delimiter_at(window: Window, at: int, start: int, little: bool) -> bool:
    """Whether a Sequence Delimitation Item lies at ``at`` (after ``start``)."""
    if at < start:
        return False
    head = window.peek(at, 8)
    if len(head) < 8:
        return False
    group, element, _ = _STRUCTS[little][0].unpack(head)
    return bool((group << 16 | element) == _SEQUENCE_END)
