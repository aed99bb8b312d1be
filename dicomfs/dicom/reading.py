"""The bounded reading of one file's element stream, under pydicom's element reader.

``dicomfs.dicom.parse`` decides what a file is; this module does the reading
it needs without trusting the file: the File Meta group and the dataset are
read with ``defer_size`` (big values are skipped by seeking, not read), the
element count is capped, completeness is judged from where the last element
ends (pydicom stops quietly at a short read), deferred sequences are read back
within a size cap, and a deflated dataset is inflated only after a counting
pass showed it fits (reliability.md B1, D2). A problem that ends the parse is
raised as :class:`Reject` carrying the rejection.
"""

from __future__ import annotations

import zlib
from itertools import compress, islice, repeat
from operator import attrgetter, is_
from typing import BinaryIO

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filereader import data_element_generator
from pydicom.tag import BaseTag
from pydicom.valuerep import VR

from dicomfs.dicom.records import Rejection, RejectKind
from dicomfs.dicom.references import SEQUENCE_TAGS, keyword

# Values longer than this are skipped by seeking instead of read (pixel data).
DEFER_SIZE = 64 * 1024
# A deflated dataset may inflate to at most this (a 200 KB bomb would be 200 MB).
MAX_INFLATED_BYTES = 64 * 1024 * 1024
# A top-level sequence longer than this is not loaded to look for references.
MAX_SEQUENCE_BYTES = 256 * 1024 * 1024
# Real datasets have a few thousand top-level elements; a zero-filled file
# (a preallocating writer) reads as 8-byte elements, one per 8 bytes.
MAX_TOP_LEVEL_ELEMENTS = 100_000

DEFLATED_TRANSFER_SYNTAX = "1.2.840.10008.1.2.1.99"

_UNDEFINED_LENGTH = 0xFFFFFFFF
_INFLATE_READ = 64 * 1024
_INFLATE_STEP = 1024 * 1024
_REASON_MAX = 200

# (implicit VR, little endian) per transfer syntax; any other syntax is
# explicit VR little endian (PS3.5 A.4: all encapsulated syntaxes are).
ENCODINGS = {
    "1.2.840.10008.1.2": (True, True),
    "1.2.840.10008.1.2.1": (False, True),
    "1.2.840.10008.1.2.2": (False, False),
    DEFLATED_TRANSFER_SYNTAX: (False, True),
}
_VR_NAMES = frozenset(vr.value.encode("ascii") for vr in VR)
_DELIMITER_LE = b"\xfe\xff\xdd\xe0"
_DELIMITER_BE = b"\xff\xfe\xe0\xdd"
_GET_VALUE = attrgetter("value")

Elements = dict[int, RawDataElement | DataElement]


class Reject(Exception):
    """Carries a rejection out of nested helpers to ``parse.parse_fileobj``."""

    def __init__(self, kind: RejectKind, reason: str) -> None:
        super().__init__(reason)
        self.rejection = Rejection(kind, reason)


def read_meta(fp: BinaryIO, size: int, strict: bool) -> Elements:
    """File Meta group (0002): explicit VR LE, or implicit from some writers (pydicom #503)."""
    start = fp.tell()
    peek = fp.read(6)
    fp.seek(start)
    if len(peek) < 6 or peek[:2] != b"\x02\x00":
        return {}
    explicit = peek[4:6] in _VR_NAMES
    elements: Elements = {}
    kind = RejectKind.TRUNCATED if strict else RejectKind.NOT_DICOM
    generator = data_element_generator(
        fp, not explicit, True, stop_when=_not_meta, defer_size=DEFER_SIZE
    )
    end = start
    try:
        for elem in generator:
            elements[elem.tag] = elem
            end = elem.value_tell + elem.length  # type: ignore[union-attr]
    except (RecursionError, MemoryError):
        raise
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise Reject(kind, f"file meta information unreadable: {describe(exc)}") from exc
    if end > size or fp.tell() > end:
        raise Reject(kind, f"file meta information ends past the end of the file ({size})")
    return elements


def _not_meta(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag >> 16 != 2


def _not_command(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag >> 16 != 0


def skip_command_set(fp: BinaryIO) -> None:
    """Group 0000 is not part of a stored instance; pydicom reads it as implicit VR LE."""
    start = fp.tell()
    peek = fp.read(2)
    fp.seek(start)
    if peek == b"\x00\x00":
        generator = data_element_generator(
            fp, True, True, stop_when=_not_command, defer_size=DEFER_SIZE
        )
        for _ in islice(generator, MAX_TOP_LEVEL_ELEMENTS):
            pass
        if next(generator, None) is not None:
            raise Reject(RejectKind.NOT_DICOM, "endless group 0000 (a zero-filled file?)")


def guess_encoding(fp: BinaryIO, had_syntax: bool) -> tuple[bool, bool]:
    """Encoding when the file meta names none (as pydicom's read_partial guesses)."""
    if had_syntax:  # an unknown (compressed or private) syntax: explicit VR LE
        return False, True
    start = fp.tell()
    peek = fp.read(6)
    fp.seek(start)
    if len(peek) < 6 or peek[4:6] not in _VR_NAMES:
        return True, True
    # Big endian group numbers up to 0x00FF read as >= 1024 in little endian.
    return False, int.from_bytes(peek[:2], "little") < 1024


def check_vr_encoding(fp: BinaryIO, start: int, implicit: bool, flags: list[str]) -> bool:
    """Writers mislabel implicit/explicit VR; trust the first element, as pydicom does."""
    fp.seek(start)
    peek = fp.read(6)
    fp.seek(start)
    if len(peek) < 6:
        return implicit
    found_implicit = not (0x40 < peek[4] < 0x5B and 0x40 < peek[5] < 0x5B)
    if found_implicit != implicit:
        flags.append("vr_mismatch")
    return found_implicit


def read_dataset(
    fp: BinaryIO, start: int, size: int, implicit: bool, little: bool
) -> tuple[Elements, Rejection | None]:
    """Read every top-level element and check that the dataset ends exactly at ``size``.

    pydicom stops quietly at a short read, so completeness is judged from
    where the last element ends: a defined-length element ends at its value
    offset plus its length, an undefined-length one with a sequence delimiter.
    """
    elements: Elements = {}
    last: RawDataElement | DataElement | None = None
    fp.seek(start)
    generator = data_element_generator(fp, implicit, little, defer_size=DEFER_SIZE)
    try:
        for elem in islice(generator, MAX_TOP_LEVEL_ELEMENTS):
            elements[elem.tag] = elem
            last = elem
        if next(generator, None) is not None:
            reason = f"more than {MAX_TOP_LEVEL_ELEMENTS} top-level elements"
            return elements, Rejection(RejectKind.TOO_LARGE, reason)
    except (RecursionError, MemoryError):
        raise
    except EOFError as exc:
        return elements, Rejection(RejectKind.TRUNCATED, f"{describe(exc)} (file size {size})")
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        position = fp.tell()
        kind = RejectKind.TRUNCATED if position >= size else RejectKind.MALFORMED
        return elements, Rejection(kind, f"{describe(exc)} at offset {position} of {size}")
    return elements, _completeness(fp, start, size, last, little)


def _completeness(
    fp: BinaryIO, start: int, size: int, last: RawDataElement | DataElement | None, little: bool
) -> Rejection | None:
    stopped = fp.tell()
    if last is None:
        if stopped == start == size:
            return None
        return Rejection(RejectKind.TRUNCATED, f"{stopped - start} bytes, no complete element")
    where = f"{keyword(last.tag)} at offset {_value_offset(last)}"
    if isinstance(last, DataElement) or last.length == _UNDEFINED_LENGTH:
        fp.seek(max(stopped - 8, 0))
        ending = fp.read(4)
        fp.seek(stopped)
        if stopped != size or ending != (_DELIMITER_LE if little else _DELIMITER_BE):
            return Rejection(
                RejectKind.TRUNCATED,
                f"undefined-length {where} does not end with a delimiter at {size}",
            )
        return None
    end = last.value_tell + last.length
    if end > size:
        return Rejection(
            RejectKind.TRUNCATED,
            f"{where} declares {last.length} bytes but the file ends at {size}",
        )
    if stopped > end:
        return Rejection(
            RejectKind.TRUNCATED,
            f"{stopped - end} bytes after the last complete element at offset {end} of {size}",
        )
    if end < size:
        return Rejection(RejectKind.MALFORMED, f"parsing stopped at offset {end} of {size}")
    return None


def _value_offset(elem: RawDataElement | DataElement) -> int | None:
    if isinstance(elem, RawDataElement):
        return elem.value_tell
    return elem.file_tell


def load_deferred_sequences(fp: BinaryIO, elems: Elements, size: int) -> None:
    """Read back the sequences that ``defer_size`` skipped: they may hold references."""
    deferred = list(compress(elems, map(is_, repeat(None), map(_GET_VALUE, elems.values()))))
    for tag in deferred:  # C-level scan above: this runs on every CT slice
        raw = elems[tag]
        if not isinstance(raw, RawDataElement) or raw.length in (0, _UNDEFINED_LENGTH):
            continue
        fp.seek(raw.value_tell)
        if raw.VR != "SQ" and not _may_be_sequence(tag, raw, fp.read(4)):
            continue
        if raw.length > MAX_SEQUENCE_BYTES:
            raise Reject(RejectKind.TOO_LARGE, f"{keyword(tag)} is {raw.length} bytes long")
        fp.seek(raw.value_tell)
        value = fp.read(raw.length)
        if len(value) != raw.length:
            raise Reject(RejectKind.TRUNCATED, f"file shrank while reading {keyword(tag)}")
        elems[tag] = raw._replace(value=value)


def _may_be_sequence(tag: int, raw: RawDataElement, first: bytes) -> bool:
    if raw.VR not in (None, "UN"):
        return False
    return tag in SEQUENCE_TAGS or (bool(tag >> 16 & 1) and first == b"\xfe\xff\x00\xe0")


def inflate(fp: BinaryIO, size: int, flags: list[str]) -> bytes:
    """Inflate the deflated dataset (PS3.5 A.5), refusing more than MAX_INFLATED_BYTES.

    A first pass only counts, so a bomb costs CPU up to the cap but no memory;
    only a stream known to fit is inflated into memory.
    """
    start = fp.tell()
    total, complete, _ = _run_inflater(fp, keep=False)
    if total > MAX_INFLATED_BYTES:
        raise Reject(
            RejectKind.TOO_LARGE, f"deflated dataset inflates beyond {MAX_INFLATED_BYTES} bytes"
        )
    if not complete:
        raise Reject(RejectKind.TRUNCATED, "deflated dataset ends before its end of stream")
    fp.seek(start)
    _, _, chunks = _run_inflater(fp, keep=True)
    trailing = size - fp.tell()
    if trailing > 1:  # one pad byte makes the deflated stream even in length
        flags.append("deflate_trailing_bytes")
    return b"".join(chunks)


def _run_inflater(fp: BinaryIO, *, keep: bool) -> tuple[int, bool, list[bytes]]:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    chunks: list[bytes] = []
    total = 0
    try:
        while not inflater.eof:
            data = inflater.unconsumed_tail or fp.read(_INFLATE_READ)
            if not data:
                break
            out = inflater.decompress(data, _INFLATE_STEP)
            total += len(out)
            if total > MAX_INFLATED_BYTES:
                break
            if keep:
                chunks.append(out)
    except zlib.error as exc:
        raise Reject(RejectKind.MALFORMED, f"corrupt deflate stream: {exc}") from exc
    if inflater.eof:  # give back what belongs after the stream, so tell() is exact
        fp.seek(fp.tell() - len(inflater.unused_data))
    return total, inflater.eof, chunks


def describe(exc: BaseException) -> str:
    """An exception as a rejection reason: type and message, cut to one short line."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 3] + "..."
