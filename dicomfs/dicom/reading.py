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

import io
import zlib
from itertools import compress, islice, repeat
from operator import attrgetter, is_
from typing import BinaryIO

from pydicom.datadict import _dictionary_vr_fast  # pydicom's own reader decides with it
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filereader import data_element_generator
from pydicom.tag import BaseTag
from pydicom.valuerep import VR

from dicomfs.dicom.records import Rejection, RejectKind
from dicomfs.dicom.references import (
    MAX_PYDICOM_BYTES,
    SEQUENCE_TAGS,
    FileWindow,
    UnusualEncoding,
    keyword,
    value_end,
)

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
_DELIMITERS = (_DELIMITER_LE, _DELIMITER_BE)
_ITEM_TAG_LE = b"\xfe\xff\x00\xe0"
_ITEM_TAG_BE = b"\xff\xfe\xe0\x00"
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
            elements[int(elem.tag)] = elem  # plain keys: see read_dataset
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
    fp: BinaryIO,
    start: int,
    size: int,
    implicit: bool,
    little: bool,
    ends: dict[int, int] | None = None,
) -> tuple[Elements, Rejection | None]:
    """Read every top-level element and check that the dataset ends exactly at ``size``.

    pydicom stops quietly at a short read, so completeness is judged from
    where the last element ends: a defined-length element ends at its value
    offset plus its length, an undefined-length one with a sequence delimiter.
    pydicom would also parse every undefined-length sequence into Datasets
    as it reads it; the reader stops before each one instead and keeps its
    raw bytes (:func:`_undefined_sequence`), to be read item by item. The
    ends of long values nested in them go into ``ends`` (see ``value_end``).
    """
    elements: Elements = {}
    last: RawDataElement | DataElement | None = None
    fp.seek(start)
    stop = _SequenceStop(fp, little)
    count = 0
    pydicom_left = MAX_PYDICOM_BYTES
    too_many = Rejection(
        RejectKind.TOO_LARGE, f"more than {MAX_TOP_LEVEL_ELEMENTS} top-level elements"
    )
    try:
        while True:
            generator = data_element_generator(
                fp, implicit, little, stop_when=stop.check, defer_size=DEFER_SIZE
            )
            for elem in generator:
                count += 1
                if count > MAX_TOP_LEVEL_ELEMENTS:
                    return elements, too_many
                # Keyed by plain int: a BaseTag key makes every lookup by int
                # call BaseTag.__eq__ in Python (18 times a file).
                elements[int(elem.tag)] = elem
                last = elem
            if stop.pending is None:
                break
            count += 1
            if count > MAX_TOP_LEVEL_ELEMENTS:
                return elements, too_many
            elem, used = _undefined_sequence(fp, stop, (implicit, little), size, pydicom_left, ends)
            pydicom_left -= used
            elements[int(elem.tag)] = elem
            last = elem
    except (RecursionError, MemoryError):
        raise
    except Reject as exc:
        return elements, exc.rejection
    except EOFError as exc:
        return elements, Rejection(RejectKind.TRUNCATED, f"{describe(exc)} (file size {size})")
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        position = fp.tell()
        kind = RejectKind.TRUNCATED if position >= size else RejectKind.MALFORMED
        return elements, Rejection(kind, f"{describe(exc)} at offset {position} of {size}")
    return elements, _completeness(fp, start, size, last, little)


class _SequenceStop:
    """``check`` is a ``stop_when`` for pydicom's reader: stop before an undefined-length sequence.

    Decides as pydicom does whether the element is a sequence (SQ, UN, or
    implicit VR with a dictionary VR of SQ, or an unknown tag whose value
    starts with an item) and keeps its tag, VR and value offset in
    ``pending``; pydicom has then rewound to the element's header.
    """

    def __init__(self, fp: BinaryIO, little: bool) -> None:
        self.fp = fp
        self.item_tag = _ITEM_TAG_LE if little else _ITEM_TAG_BE
        self.pending: tuple[int, str | None, int] | None = None
        decide = self._decide

        def check(tag: BaseTag, vr: str | None, length: int) -> bool:
            # Called for every element of every file: a plain function, one test.
            return length == _UNDEFINED_LENGTH and decide(tag, vr)

        self.check = check

    def _decide(self, tag: BaseTag, vr: str | None) -> bool:
        if vr is None:
            try:
                sequence = _dictionary_vr_fast(tag) == "SQ"
            except KeyError:
                peek = self.fp.read(4)
                self.fp.seek(-len(peek), 1)
                sequence = peek == self.item_tag
        else:
            sequence = vr in ("SQ", "UN")  # pydicom reads UN of undefined length as SQ
        if sequence:
            self.pending = (int(tag), vr, self.fp.tell())
        return sequence


def _undefined_sequence(
    fp: BinaryIO,
    stop: _SequenceStop,
    encoding: tuple[bool, bool],
    size: int,
    pydicom_left: int,
    ends: dict[int, int] | None,
) -> tuple[RawDataElement | DataElement, int]:
    """The sequence ``stop`` stopped at, as raw bytes; and the bytes pydicom had to read.

    Its end is found by stepping over headers through a small window on the
    file, then its value is read once; a sequence in an encoding only
    pydicom reads is left to pydicom within ``pydicom_left`` bytes.
    """
    assert stop.pending is not None
    tag, vr, value_tell = stop.pending
    stop.pending = None
    header = fp.tell()  # pydicom rewound to the element's header
    implicit, little = encoding
    un = vr == "UN"  # UN content is implicit VR little endian (PS3.5 6.2.2)
    content_implicit, content_little = implicit or un, little or un
    try:
        delimiter, after = value_end(
            FileWindow(fp, size), value_tell, content_implicit, content_little, ends=ends
        )
    except UnusualEncoding:
        return _pydicom_sequence(fp, header, tag, implicit, little, size, pydicom_left)
    length = delimiter - value_tell
    if length > MAX_SEQUENCE_BYTES:
        raise Reject(RejectKind.TOO_LARGE, f"{keyword(tag)} is {length} bytes long")
    fp.seek(value_tell)
    value = fp.read(length)
    if len(value) != length:
        raise Reject(RejectKind.TRUNCATED, f"file shrank while reading {keyword(tag)}")
    fp.seek(after)
    sequence = RawDataElement(
        BaseTag(tag), "SQ", _UNDEFINED_LENGTH, value, value_tell, content_implicit, content_little
    )
    return sequence, 0


def _pydicom_sequence(
    fp: BinaryIO,
    header: int,
    tag: int,
    implicit: bool,
    little: bool,
    size: int,
    allowance: int,
) -> tuple[RawDataElement | DataElement, int]:
    """pydicom reads the element at ``header``, seeing at most ``allowance`` bytes of the file.

    pydicom builds a Dataset per item, about 90 MB per MiB of small items,
    so an unusual encoding may not make it read more than the allowance.
    When the rest of the file is longer, pydicom reads a copy of the window
    (a file object of our own would put Python frames under pydicom's reads,
    and pydicom turns a RecursionError there into an OSError); ``fp`` is then
    placed where pydicom stopped.
    """
    fp.seek(header)
    if size - header <= allowance:  # the rest of the file fits: pydicom reads it in place
        elem = next(data_element_generator(fp, implicit, little, defer_size=DEFER_SIZE), None)
        if elem is None:
            raise Reject(RejectKind.TRUNCATED, f"{keyword(tag)} at offset {header} ends the file")
        return elem, fp.tell() - header
    window = fp.read(max(allowance, 0))
    reason = (
        f"undefined-length {keyword(tag)} at offset {header} needs pydicom's reader beyond "
        f"{MAX_PYDICOM_BYTES} bytes"
    )
    view = io.BytesIO(window)
    try:
        generator = data_element_generator(view, implicit, little, defer_size=DEFER_SIZE)
        elem = next(generator, None)
    except (RecursionError, MemoryError):
        raise
    except Exception as exc:
        raise Reject(RejectKind.TOO_LARGE, reason) from exc
    if elem is None or (view.tell() >= len(window) and window[-8:-4] not in _DELIMITERS):
        raise Reject(RejectKind.TOO_LARGE, reason)  # pydicom stopped quietly at our cut
    fp.seek(header + view.tell())
    return elem, view.tell()


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
