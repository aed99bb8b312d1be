"""One file in, one record out: an Instance with its reference edges, or a Rejection.

The only module (with its helper ``dicomfs.dicom.references``) that imports pydicom.
It does not call ``dcmread``: dcmread returns a partial dataset for a
truncated file without a word, inflates a deflated file with no bound, and
turns any bytes into a dataset under ``force=True`` (reliability.md B1, D1,
D2). Instead it drives pydicom's element reader directly, the way
``pydicom.filereader.read_partial`` does, and adds what the index needs:

* completeness: the whole dataset is read with ``defer_size`` (big values are
  skipped by seeking, not read), and parsing must end exactly at the file size;
* acceptance: a file without the ``DICM`` prefix is accepted only when it
  yields a SOP Class UID of valid UID grammar and a SOP Instance UID;
* bounded deflate: inflated size is checked in a streaming pass before the
  dataset is inflated into memory.

Pure: no database, no pydicom configuration changed. One process-wide
setting is made at import, in every process that parses (the CLI and the
parse workers): pydicom's warnings and log records are never shown, since
they quote values read from files ("Unknown encoding 'ISO_IR <value>'"),
which may be patient data (reliability.md I2). Problems reach users as
flags and rejection reasons instead.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import re
import stat
import warnings
import zlib
from itertools import compress, islice, repeat
from operator import attrgetter, is_
from typing import BinaryIO

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filereader import data_element_generator
from pydicom.tag import BaseTag
from pydicom.valuerep import VR

from dicomfs.dicom.records import (
    FileResult,
    FileStat,
    Instance,
    Rejection,
    RejectKind,
    is_safe_uid,
)
from dicomfs.dicom.references import (
    FOR_UID,
    RT_IMAGE,
    RT_ION_PLAN,
    RT_PLAN,
    RT_STRUCTURE_SET,
    SEQUENCE_TAGS,
    SERIES_UID,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    STUDY_UID,
    Node,
    extract_edges,
    keyword,
)

# Warnings attributed to pydicom, or to our modules that call it (stacklevel).
warnings.filterwarnings("ignore", module=r"(pydicom|dicomfs\.(parse|references))(\.|$)")
logging.getLogger("pydicom").addFilter(lambda record: False)

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
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"

_UNDEFINED_LENGTH = 0xFFFFFFFF
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_INFLATE_READ = 64 * 1024
_INFLATE_STEP = 1024 * 1024
_REASON_MAX = 200

_TRANSFER_SYNTAX_UID = 0x00020010
_MEDIA_CLASS_UID = 0x00020002
_MEDIA_INSTANCE_UID = 0x00020003
_DIRECTORY_RECORD_SEQ = 0x00041220
_PATIENT_ID = 0x00100020
_MODALITY = 0x00080060
_SERIES_DESCRIPTION = 0x0008103E
_INSTANCE_NUMBER = 0x00200013
_DOSE_SUMMATION_TYPE = 0x3004000A
_PLAN_INTENT = 0x300A000A
_RT_PLAN_LABEL = 0x300A0002
_STRUCTURE_SET_LABEL = 0x30060002
_RT_IMAGE_LABEL = 0x30020002
_CONTENT_LABEL = 0x00700080
_ROWS, _COLUMNS = 0x00280010, 0x00280011
_PIXEL_DATA_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)

# (implicit VR, little endian) per transfer syntax; any other syntax is
# explicit VR little endian (PS3.5 A.4: all encapsulated syntaxes are).
_ENCODINGS = {
    "1.2.840.10008.1.2": (True, True),
    "1.2.840.10008.1.2.1": (False, True),
    "1.2.840.10008.1.2.2": (False, False),
    DEFLATED_TRANSFER_SYNTAX: (False, True),
}
_VR_NAMES = frozenset(vr.value.encode("ascii") for vr in VR)
_DELIMITER_LE = b"\xfe\xff\xdd\xe0"
_DELIMITER_BE = b"\xff\xfe\xe0\xdd"
_INTEGER = re.compile(r"[+-]?[0-9]+")
_IS_MAX = 2**31 - 1  # IS values are 32-bit signed (PS3.5 6.2)
_GET_VALUE = attrgetter("value")

Elements = dict[int, RawDataElement | DataElement]


class _Reject(Exception):
    """Carries a rejection out of nested helpers to parse_fileobj."""

    def __init__(self, kind: RejectKind, reason: str) -> None:
        super().__init__(reason)
        self.rejection = Rejection(kind, reason)


# -- public API --------------------------------------------------------------


def parse_file(path: str) -> FileResult | None:
    """Parse the file at ``path``; None if it no longer exists. Never raises.

    ``lstat`` first so FIFOs, sockets and devices are never opened (opening a
    FIFO can block); ``O_NOFOLLOW`` closes the race with a swapped-in symlink.
    """
    try:
        return _parse_path(path)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # e.g. ValueError for a NUL in the name
        return FileResult(_file_stat(path, None), _unreadable(exc))


def _parse_path(path: str) -> FileResult | None:
    name = os.fsencode(path)
    try:
        before = os.lstat(name)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return FileResult(_file_stat(path, None), _unreadable(exc))
    if not stat.S_ISREG(before.st_mode):
        return FileResult(_file_stat(path, before), _not_regular(before.st_mode))
    try:
        fd = os.open(name, _OPEN_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return FileResult(_file_stat(path, before), _not_regular(stat.S_IFLNK))
        return FileResult(_file_stat(path, before), _unreadable(exc))
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):  # swapped between lstat and open
            os.close(fd)
            return FileResult(_file_stat(path, opened), _not_regular(opened.st_mode))
        fileobj = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fileobj:
        result = parse_fileobj(fileobj, opened.st_size)
    return FileResult(_file_stat(path, opened), result)


def parse_fileobj(fileobj: BinaryIO, size: int) -> Instance | Rejection:
    """Parse one file-like object of known size. Never raises."""
    try:
        return _parse(fileobj, size)
    except _Reject as exc:
        return exc.rejection
    except (KeyboardInterrupt, SystemExit):
        raise
    except RecursionError:
        return Rejection(RejectKind.TOO_DEEP, "sequences nested too deeply to parse")
    except MemoryError:
        return Rejection(RejectKind.OUT_OF_MEMORY, "out of memory while parsing")
    except OSError as exc:
        if exc.errno is not None:
            return _unreadable(exc)
        return Rejection(RejectKind.MALFORMED, _describe(exc))
    except BaseException as exc:
        return Rejection(RejectKind.MALFORMED, _describe(exc))


def parse_bytes(data: bytes) -> Instance | Rejection:
    return parse_fileobj(io.BytesIO(data), len(data))


# -- reading -----------------------------------------------------------------


def _parse(fp: BinaryIO, size: int) -> Instance | Rejection:
    fp.seek(0)
    head = fp.read(132)
    if not head:
        return Rejection(RejectKind.NOT_DICOM, "empty file")
    strict = len(head) == 132 and head[128:] == b"DICM"
    flags: list[str] = []
    fp.seek(132 if strict else 0)

    meta = Node(_read_meta(fp, size, strict), flags)
    if not meta.elems:
        flags.append("no_file_meta")
    elif not strict:
        flags.append("no_preamble")
    if meta.uid(_MEDIA_CLASS_UID) == DICOMDIR_CLASS:
        return Rejection(RejectKind.DICOMDIR, "media storage SOP class is Media Storage Directory")
    transfer_syntax = meta.uid(_TRANSFER_SYNTAX_UID)

    if transfer_syntax == DEFLATED_TRANSFER_SYNTAX:
        data = _inflate(fp, size, flags)
        fp, start, size = io.BytesIO(data), 0, len(data)
        implicit, little = False, True
    else:
        _skip_command_set(fp)
        start = fp.tell()
        implicit, little = _ENCODINGS.get(transfer_syntax) or _guess_encoding(
            fp, bool(transfer_syntax)
        )
    implicit = _check_vr_encoding(fp, start, implicit, flags)

    elems, problem = _read_dataset(fp, start, size, implicit, little)
    root = Node(elems, flags)
    sop_class = root.uid(SOP_CLASS_UID)
    sop_instance = root.uid(SOP_INSTANCE_UID)
    if _DIRECTORY_RECORD_SEQ in elems:
        return Rejection(RejectKind.DICOMDIR, "dataset has a Directory Record Sequence")
    if not strict and not (sop_class and sop_instance and is_safe_uid(sop_class)):
        # force-style reading turns any bytes into "elements" (reliability.md D1)
        return Rejection(RejectKind.NOT_DICOM, "no DICM prefix and no valid SOP Class/Instance UID")
    if problem is not None:
        return problem
    if not sop_class or not sop_instance:
        missing = "SOP Class UID" if not sop_class else "SOP Instance UID"
        return Rejection(RejectKind.NO_IDENTITY, f"no {missing} in the dataset")
    _load_deferred_sequences(fp, elems, size)
    return _instance(root, meta, transfer_syntax, flags)


def _read_meta(fp: BinaryIO, size: int, strict: bool) -> Elements:
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
        raise _Reject(kind, f"file meta information unreadable: {_describe(exc)}") from exc
    if end > size or fp.tell() > end:
        raise _Reject(kind, f"file meta information ends past the end of the file ({size})")
    return elements


def _not_meta(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag >> 16 != 2


def _not_command(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag >> 16 != 0


def _skip_command_set(fp: BinaryIO) -> None:
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
            raise _Reject(RejectKind.NOT_DICOM, "endless group 0000 (a zero-filled file?)")


def _guess_encoding(fp: BinaryIO, had_syntax: bool) -> tuple[bool, bool]:
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


def _check_vr_encoding(fp: BinaryIO, start: int, implicit: bool, flags: list[str]) -> bool:
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


def _read_dataset(
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
        return elements, Rejection(RejectKind.TRUNCATED, f"{_describe(exc)} (file size {size})")
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        position = fp.tell()
        kind = RejectKind.TRUNCATED if position >= size else RejectKind.MALFORMED
        return elements, Rejection(kind, f"{_describe(exc)} at offset {position} of {size}")
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


def _load_deferred_sequences(fp: BinaryIO, elems: Elements, size: int) -> None:
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
            raise _Reject(RejectKind.TOO_LARGE, f"{keyword(tag)} is {raw.length} bytes long")
        fp.seek(raw.value_tell)
        value = fp.read(raw.length)
        if len(value) != raw.length:
            raise _Reject(RejectKind.TRUNCATED, f"file shrank while reading {keyword(tag)}")
        elems[tag] = raw._replace(value=value)


def _may_be_sequence(tag: int, raw: RawDataElement, first: bytes) -> bool:
    if raw.VR not in (None, "UN"):
        return False
    return tag in SEQUENCE_TAGS or (bool(tag >> 16 & 1) and first == b"\xfe\xff\x00\xe0")


def _inflate(fp: BinaryIO, size: int, flags: list[str]) -> bytes:
    """Inflate the deflated dataset (PS3.5 A.5), refusing more than MAX_INFLATED_BYTES.

    A first pass only counts, so a bomb costs CPU up to the cap but no memory;
    only a stream known to fit is inflated into memory.
    """
    start = fp.tell()
    total, complete, _ = _run_inflater(fp, keep=False)
    if total > MAX_INFLATED_BYTES:
        raise _Reject(
            RejectKind.TOO_LARGE, f"deflated dataset inflates beyond {MAX_INFLATED_BYTES} bytes"
        )
    if not complete:
        raise _Reject(RejectKind.TRUNCATED, "deflated dataset ends before its end of stream")
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
        raise _Reject(RejectKind.MALFORMED, f"corrupt deflate stream: {exc}") from exc
    if inflater.eof:  # give back what belongs after the stream, so tell() is exact
        fp.seek(fp.tell() - len(inflater.unused_data))
    return total, inflater.eof, chunks


# -- the record --------------------------------------------------------------


def _instance(root: Node, meta: Node, transfer_syntax: str, flags: list[str]) -> Instance:
    sop_class = root.uid(SOP_CLASS_UID)
    sop_instance = root.uid(SOP_INSTANCE_UID)
    if not is_safe_uid(sop_instance):
        flags.append("unsafe_sop_uid")
    uids = {
        "SOPClassUID": sop_class,
        "StudyInstanceUID": root.uid(STUDY_UID),
        "SeriesInstanceUID": root.uid(SERIES_UID),
        "FrameOfReferenceUID": root.uid(FOR_UID),
    }
    flags.extend(f"unsafe_uid:{name}" for name, uid in uids.items() if uid and not is_safe_uid(uid))
    elems = root.elems
    if _ROWS in elems and _COLUMNS in elems and not any(t in elems for t in _PIXEL_DATA_TAGS):
        # Complete as far as parsing can tell, but a writer cut off exactly
        # before the pixel data would look the same (reliability.md B1).
        flags.append("no_pixel_data")
    media_instance = meta.uid(_MEDIA_INSTANCE_UID)
    if media_instance and media_instance != sop_instance:
        flags.append("meta_uid_mismatch")
    edges = extract_edges(root, sop_class, sop_instance)
    return Instance(
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        frame_of_reference_uid=uids["FrameOfReferenceUID"],
        patient_id=root.text(_PATIENT_ID),
        modality=root.text(_MODALITY),
        label=root.text(_label_tag(sop_class)),
        dose_summation_type=root.text(_DOSE_SUMMATION_TYPE),
        series_description=root.text(_SERIES_DESCRIPTION),
        instance_number=_integer(root.text(_INSTANCE_NUMBER)),
        plan_intent=root.text(_PLAN_INTENT),
        transfer_syntax=transfer_syntax,
        flags=list(dict.fromkeys(flags)),
        edges=edges,
    )


def _label_tag(sop_class: str) -> int:
    if sop_class in (RT_PLAN, RT_ION_PLAN):
        return _RT_PLAN_LABEL
    if sop_class == RT_STRUCTURE_SET:
        return _STRUCTURE_SET_LABEL
    if sop_class == RT_IMAGE:
        return _RT_IMAGE_LABEL
    return _CONTENT_LABEL  # SEG, REG, PS ...; never the series description


def _integer(text: str) -> int | None:
    first = text.split("\\", 1)[0].strip()
    if not _INTEGER.fullmatch(first):
        return None
    value = int(first)
    return value if -_IS_MAX - 1 <= value <= _IS_MAX else None


# -- helpers -----------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 3] + "..."


def _unreadable(exc: BaseException) -> Rejection:
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return Rejection(RejectKind.UNREADABLE, f"{name}: {exc.strerror}")
    return Rejection(RejectKind.UNREADABLE, _describe(exc))


def _not_regular(mode: int) -> Rejection:
    kinds = (
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISDIR, "directory"),
    )
    what = next((name for test, name in kinds if test(mode)), "special file")
    return Rejection(RejectKind.NOT_REGULAR, f"not a regular file: {what}")


def _file_stat(path: str, st: os.stat_result | None) -> FileStat:
    if st is None:
        return FileStat(path, 0, 0, 0, 0, 0, 0, 0)
    return FileStat(
        path=path,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        inode=st.st_ino,
        dev=st.st_dev,
        uid=st.st_uid,
        gid=st.st_gid,
        mode=st.st_mode,
    )
