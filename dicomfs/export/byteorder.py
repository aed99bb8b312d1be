"""How wide each binary value of an element is, and swapping bytes within those values.

Re-encoding a Big Endian file as Little Endian is not done by pydicom alone:
it encodes numbers (US, UL, FL, AT ...) in the byte order it writes, but it
copies the bytes of OW, OF, OL, OD, OV and UN values as they were read (its
``dcmwrite`` says so), so pixel data would come out byte-swapped. This module
knows how wide the values of each such element are, so ``explicit_le`` can
swap them and ``same_values`` can compare a value across byte orders.

Pixel Data is read as pydicom's pixel handling reads Big Endian data: cells
of Bits Allocated bits in the file's byte order (whether the VR says OB or
OW), and 8-bit cells encoded as OW swapped in pairs. 1-bit Pixel Data encoded
as OW has no agreed byte order between readers, so it is refused rather than
guessed.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

__all__ = ["PIXEL_DATA", "Unswappable", "swap", "swapped_by_us", "width"]

PIXEL_DATA = 0x7FE00010

# Bytes per value of the binary VRs; a VR not listed has no byte order (text, OB).
_WIDTHS = {
    "US": 2,
    "SS": 2,
    "AT": 2,  # a pair of 16-bit numbers
    "OW": 2,
    "UL": 4,
    "SL": 4,
    "FL": 4,
    "OF": 4,
    "OL": 4,
    "FD": 8,
    "OD": 8,
    "SV": 8,
    "UV": 8,
    "OV": 8,
}
# The VRs whose bytes pydicom writes as read: swapping them is ours to do.
_WRITTEN_AS_READ = frozenset({"OW", "OF", "OL", "OD", "OV", "UN"})


class Unswappable(ValueError):
    """An element whose values have no known width, so their byte order cannot be changed."""


def width(tag: int, vr: str, holder: Dataset) -> int:
    """Bytes per value of the element ``tag`` (VR ``vr``) in ``holder``; 1: no byte order."""
    if vr == "UN":
        raise Unswappable(
            f"({tag >> 16:04X},{tag & 0xFFFF:04X}) has VR UN: its byte order is unknown"
        )
    if tag == PIXEL_DATA and vr in ("OB", "OW"):
        bits = holder.get("BitsAllocated")
        if bits in (16, 32, 64):
            return int(bits) // 8  # cells in the file's byte order, whatever the VR says
        if bits == 8:
            return 2 if vr == "OW" else 1  # 8-bit cells in OW words are swapped in pairs
        if bits == 1 and vr == "OB":
            return 1
        raise Unswappable(
            f"Pixel Data as {vr} with Bits Allocated {bits!r} has no agreed byte order"
        )
    return _WIDTHS.get(vr, 1)


def swapped_by_us(tag: int, vr: str) -> bool:
    """Whether pydicom writes this element's bytes as read, so a change of byte order is ours."""
    return vr in _WRITTEN_AS_READ or (tag == PIXEL_DATA and vr == "OB")


def swap(value: bytes, size: int) -> bytes:
    """``value`` with the bytes of each ``size``-byte value reversed."""
    if size == 1:
        return value
    if len(value) % size:
        raise Unswappable(
            f"a value of {len(value)} bytes is not a whole number of {size}-byte values"
        )
    out = bytearray(len(value))
    for offset in range(size):
        out[offset::size] = value[size - 1 - offset :: size]
    return bytes(out)
