"""Whether a re-encoded file holds its source's values, element by element.

Re-encoding goes through pydicom's decoding and encoding. That is exact for
well-formed data, but text that is not valid in its declared character set
is decoded with replacement characters, and any decoder quirk would change a
value without a word. Media that claim to hold the same objects must hold the
same values, so ``explicit_le`` reads each written file back and compares it
with a fresh read of its source at the level of value bytes: text byte for
byte (trailing padding aside, which encoders may add or drop), binary values
as numbers in each file's own byte order, sequences item by item. A file
that differs is reported instead of exported.
"""

from __future__ import annotations

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomfs.export.byteorder import Unswappable, swap, width

__all__ = ["first_difference", "kept"]

_PADDING = b" \x00"
# Text whose values are split by backslashes, each with insignificant leading and trailing
# spaces (PS3.5 table 6.2-1): pydicom reads "16.0 " and "16.0" as the same value.
_MULTI_VALUED_TEXT = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UC", "UI"}
)
# Text that is one value, with insignificant trailing spaces only.
_SINGLE_VALUED_TEXT = frozenset({"LT", "ST", "UT", "UR"})


def kept(tag: int) -> bool:
    """Whether a source element belongs in the re-encoded file.

    Group lengths (retired, PS3.5 7.2) describe the old encoding and the
    command group (0000) is a network message's, not the instance's.
    """
    return tag >> 16 != 0 and tag & 0xFFFF != 0


def first_difference(source: Dataset, written: Dataset, source_little_endian: bool) -> str | None:
    """Where ``written`` first differs from ``source`` (a tag path and what differs), or None."""
    return _compare(source, written, source_little_endian, "")


def _name(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _compare(source: Dataset, written: Dataset, little: bool, where: str) -> str | None:
    # keys(), not iteration: iterating a Dataset decodes every element
    wanted = {int(tag) for tag in source.keys() if kept(tag)}  # noqa: SIM118
    found = {int(tag) for tag in written.keys()}  # noqa: SIM118
    if wanted != found:
        tag = min(wanted ^ found)
        side = "missing from" if tag in wanted else "added to"
        return f"{where}{_name(tag)} is {side} the written file"
    for tag in sorted(wanted):
        here = f"{where}{_name(tag)}"
        problem = _compare_element(source, written, tag, little, here)
        if problem:
            return problem
    return None


def _compare_element(
    source: Dataset, written: Dataset, tag: int, little: bool, here: str
) -> str | None:
    theirs, ours = source.get_item(tag), written.get_item(tag)
    if _is_sequence(ours):
        items, copies = source[tag].value, written[tag].value
        if not isinstance(items, Sequence) or not isinstance(copies, Sequence):
            return f"{here} is a sequence in only one of the files"
        if len(items) != len(copies):
            return f"{here} has {len(copies)} items instead of {len(items)}"
        for index, (item, copy) in enumerate(zip(items, copies, strict=True)):
            problem = _compare(item, copy, little, f"{here}[{index}].")
            if problem:
                return problem
        return None
    if isinstance(theirs, RawDataElement) and isinstance(ours, RawDataElement):
        before, after = bytes(theirs.value or b""), bytes(ours.value or b"")
        vr = str(ours.VR)
        if vr in _MULTI_VALUED_TEXT:
            return None if _values(before) == _values(after) else f"{here} has another value"
        if vr in _SINGLE_VALUED_TEXT:
            before, after = before.rstrip(_PADDING), after.rstrip(_PADDING)
        elif not little:
            try:
                before = swap(before, width(tag, vr, source))
            except Unswappable as exc:
                return f"{here}: {exc}"
        return None if before == after else f"{here} has another value"
    # Elements pydicom decoded while reading (Specific Character Set): compare values.
    return None if source[tag].value == written[tag].value else f"{here} has another value"


def _values(text: bytes) -> list[bytes]:
    return [value.strip(_PADDING) for value in text.split(b"\\")]


def _is_sequence(element: DataElement | RawDataElement) -> bool:
    return element.VR == "SQ" or isinstance(element.value, Sequence)
