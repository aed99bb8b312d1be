"""One source file re-encoded as Explicit VR Little Endian, for media that allow nothing else.

The General Purpose CD-R profile (PS3.11 STD-GEN-CD), which ``dcmmkdir
-Pgp`` and media importers check, allows one transfer syntax: Explicit VR
Little Endian, uncompressed. Real exports also come as Implicit VR Little
Endian (with or without File Meta), Explicit VR Big Endian and Deflated, so
the ``general-purpose`` export profile writes those files again in that one
syntax. Only the encoding changes:

* the dataset is decoded with pydicom and encoded again; a deflated dataset
  is inflated by the parser's bounded inflater, never beyond its cap;
* a Big Endian source gets the bytes of its OW/OF/OL/OD/OV values swapped
  (pydicom writes those as read; ``byteorder`` says how wide each value is);
  a UN value there has no known width, so such a file is refused;
* the File Meta group is new (Media Storage SOP UIDs from the dataset,
  dicomfs's implementation UID) and the preamble is zeros;
* group lengths and any command group (0000) are left out: they describe the
  old encoding or a network message, not the instance;
* the written file is read back and compared with a fresh read of the source
  (``same_values``): a value that would change refuses the file.

Compressed (encapsulated) pixel data cannot be on STD-GEN-CD media and is
not decompressed here (lossy data cannot be restored and decoders are not a
dependency): such a file is refused with :attr:`NotReencodable.compressed`
set, and the caller refuses the export.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dicomfs.dicom.reading import (
    DEFLATED_TRANSFER_SYNTAX,
    Reject,
    describe,
    inflate,
    read_meta,
)
from dicomfs.export.byteorder import PIXEL_DATA, Unswappable, swap, swapped_by_us, width
from dicomfs.export.same_values import first_difference, kept

__all__ = ["NotReencodable", "write_explicit_le"]

_TRANSFER_SYNTAX_TAG = 0x00020010
_PYDICOM_LOG = logging.getLogger("pydicom")
_PREAMBLE = b"\x00" * 128


class NotReencodable(Exception):
    """A source file that cannot be written as Explicit VR Little Endian without change."""

    def __init__(self, reason: str, *, compressed: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.compressed = compressed


def write_explicit_le(
    source: str, target: Path, sop_uid: str, implementation: tuple[str, str], *, size: int
) -> None:
    """Write ``source`` (holding ``sop_uid``, ``size`` bytes) to ``target`` as Explicit VR LE.

    ``implementation`` is the (class UID, version name) put in the File Meta;
    ``size`` is the source's size when it was indexed (and its inflated size
    checked), so a file changed since is refused before it is decoded.
    Raises :class:`NotReencodable` for a file that cannot be re-encoded and
    ``OSError`` when ``target`` cannot be written; ``target`` is then untouched.
    """
    partial = target.with_name(target.name + ".part")
    try:
        with _quiet_pydicom():
            _write(source, partial, sop_uid, implementation, size)
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """No pydicom warnings or log records: they quote values, and values may be patient data."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _PYDICOM_LOG.addFilter(_drop)
        try:
            yield
        finally:
            _PYDICOM_LOG.removeFilter(_drop)


def _drop(record: logging.LogRecord) -> bool:
    return False


def _write(
    source: str, partial: Path, sop_uid: str, implementation: tuple[str, str], size: int
) -> None:
    try:
        data, little = _encode(source, sop_uid, implementation, size)
        written = dcmread(io.BytesIO(data))
        original, _, _ = _load(source, size)
        problem = first_difference(original, written, little)
    except NotReencodable:
        raise
    except Unswappable as exc:
        raise NotReencodable(str(exc)) from exc
    except RecursionError as exc:
        raise NotReencodable("its sequences are nested too deeply") from exc
    except MemoryError as exc:
        raise NotReencodable("it is too large to re-encode in memory") from exc
    except Exception as exc:  # any value pydicom cannot decode or encode: report the file, go on
        raise NotReencodable(f"pydicom cannot re-encode it: {_why(exc)}") from exc
    if problem:
        raise NotReencodable(f"a value would change: {problem}")
    with open(partial, "wb") as out:
        out.write(data)


def _encode(
    source: str, sop_uid: str, implementation: tuple[str, str], size: int
) -> tuple[bytes, bool]:
    """The source as the bytes of an Explicit VR Little Endian file, and its own byte order."""
    ds, syntax, little = _load(source, size)
    found = str(ds.get("SOPInstanceUID", "")).rstrip("\0 ")
    if found != sop_uid:
        raise NotReencodable(
            f"it holds {found!r}, not {sop_uid!r}: it changed since it was indexed"
        )
    if syntax.is_compressed and any(_encapsulated(element) for element in ds.iterall()):
        raise NotReencodable(
            f"compressed pixel data ({syntax.name}) cannot be on STD-GEN-CD media",
            compressed=True,
        )
    if not little:
        _swap_to_little_endian(ds)
    for tag in [tag for tag in ds.keys() if not kept(tag)]:  # noqa: SIM118 (tags, not elements)
        del ds[tag]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(str(ds.SOPClassUID))
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(implementation[0])
    meta.ImplementationVersionName = implementation[1]
    ds.file_meta = meta
    ds.preamble = _PREAMBLE
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue(), little


def _load(source: str, expected_size: int) -> tuple[Dataset, UID, bool]:
    """The source's dataset, its transfer syntax and whether it is little endian."""
    try:
        with open(source, "rb") as fp:
            size = os.fstat(fp.fileno()).st_size
            if size != expected_size:
                raise NotReencodable(
                    f"it has {size} bytes, not {expected_size}: it changed since it was indexed"
                )
            head = fp.read(132)
            strict = head[128:132] == b"DICM"
            fp.seek(132 if strict else 0)
            meta = read_meta(fp, size, strict)
            syntax = _syntax(meta)
            if syntax == DEFLATED_TRANSFER_SYNTAX:
                data = inflate(fp, size, [])
                ds = read_dataset(io.BytesIO(data), is_implicit_VR=False, is_little_endian=True)
                return ds, UID(DEFLATED_TRANSFER_SYNTAX), True
        whole = dcmread(source, force=True)
    except Reject as exc:
        raise NotReencodable(exc.rejection.reason) from exc
    except OSError as exc:  # a source that went away is this file's problem, not the media's
        raise NotReencodable(f"cannot read it: {_why(exc)}") from exc
    implicit, little = whole.original_encoding
    if syntax is None:
        if implicit is None or little is None:
            raise NotReencodable("its encoding cannot be told")
        if implicit:
            syntax = ImplicitVRLittleEndian
        else:
            syntax = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    elif not syntax.is_transfer_syntax:
        raise NotReencodable(f"unknown transfer syntax {syntax!r}")
    # pydicom's reading of the bytes wins over what the File Meta claims
    return whole, syntax, syntax != ExplicitVRBigEndian if little is None else little


def _syntax(meta: Mapping[int, object]) -> UID | None:
    element = meta.get(_TRANSFER_SYNTAX_TAG)
    value = getattr(element, "value", None)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    text = str(value or "").rstrip("\0 ")
    return UID(text) if text else None


def _why(exc: BaseException) -> str:
    """An exception in one line (pydicom appends a traceback to some messages)."""
    return describe(exc).splitlines()[0]


def _encapsulated(element: DataElement) -> bool:
    return element.tag == PIXEL_DATA and element.is_undefined_length


def _swap_to_little_endian(ds: Dataset) -> None:
    """Swap, in place, the bytes of every value pydicom would copy unswapped."""
    for element in ds:
        if element.VR == "SQ" and isinstance(element.value, Sequence):
            for item in element.value:
                _swap_to_little_endian(item)
        elif element.value and swapped_by_us(element.tag, element.VR):
            element.value = swap(bytes(element.value), width(element.tag, element.VR, ds))
