"""One file in, one record out: an Instance with its reference edges, or a Rejection.

With its helpers ``dicomfs.dicom.reading`` (the bounded element reading) and
``dicomfs.dicom.references`` (the edges), the only code that imports pydicom.
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
import stat
import warnings
from typing import BinaryIO

from dicomfs.dicom.details import bounded, integer, read_details
from dicomfs.dicom.part10 import dataset_only_flag
from dicomfs.dicom.reading import (
    DEFLATED_TRANSFER_SYNTAX,
    ENCODINGS,
    Reject,
    check_vr_encoding,
    describe,
    guess_encoding,
    inflate,
    load_deferred_sequences,
    read_dataset,
    read_meta,
    skip_command_set,
)
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
    SERIES_UID,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    STUDY_UID,
    Node,
    Reading,
    extract_edges,
)

# Warnings attributed to pydicom, or to our modules that call it (stacklevel):
# every module of this package, since the reading layer is the one that does.
warnings.filterwarnings("ignore", module=r"(pydicom|dicomfs\.dicom)(\.|$)")
logging.getLogger("pydicom").addFilter(lambda record: False)

DICOMDIR_CLASS = "1.2.840.10008.1.3.10"

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

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
        return FileResult(FileStat.from_stat(path, None), _unreadable(exc))


def _parse_path(path: str) -> FileResult | None:
    name = os.fsencode(path)
    try:
        before = os.lstat(name)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return FileResult(FileStat.from_stat(path, None), _unreadable(exc))
    if not stat.S_ISREG(before.st_mode):
        return FileResult(FileStat.from_stat(path, before), _not_regular(before.st_mode))
    try:
        fd = os.open(name, _OPEN_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return FileResult(FileStat.from_stat(path, before), _not_regular(stat.S_IFLNK))
        return FileResult(FileStat.from_stat(path, before), _unreadable(exc))
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):  # swapped between lstat and open
            os.close(fd)
            return FileResult(FileStat.from_stat(path, opened), _not_regular(opened.st_mode))
        fileobj = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fileobj:
        result = parse_fileobj(fileobj, opened.st_size)
    return FileResult(FileStat.from_stat(path, opened), result)


def parse_fileobj(fileobj: BinaryIO, size: int) -> Instance | Rejection:
    """Parse one file-like object of known size. Never raises."""
    try:
        return _parse(fileobj, size)
    except Reject as exc:
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
        return Rejection(RejectKind.MALFORMED, describe(exc))
    except BaseException as exc:
        return Rejection(RejectKind.MALFORMED, describe(exc))


def parse_bytes(data: bytes) -> Instance | Rejection:
    return parse_fileobj(io.BytesIO(data), len(data))


# -- deciding what the file is ----------------------------------------------


def _parse(fp: BinaryIO, size: int) -> Instance | Rejection:
    fp.seek(0)
    head = fp.read(132)
    if not head:
        return Rejection(RejectKind.NOT_DICOM, "empty file")
    strict = len(head) == 132 and head[128:] == b"DICM"
    flags: list[str] = []
    fp.seek(132 if strict else 0)

    meta = Node(read_meta(fp, size, strict), flags)
    if not meta.elems:
        flags.append("no_file_meta")
    elif not strict:
        flags.append("no_preamble")
    if meta.uid(_MEDIA_CLASS_UID) == DICOMDIR_CLASS:
        return Rejection(RejectKind.DICOMDIR, "media storage SOP class is Media Storage Directory")
    transfer_syntax = meta.uid(_TRANSFER_SYNTAX_UID)

    if transfer_syntax == DEFLATED_TRANSFER_SYNTAX:
        data = inflate(fp, size, flags)
        fp, start, size = io.BytesIO(data), 0, len(data)
        implicit, little = False, True
    else:
        skip_command_set(fp)
        start = fp.tell()
        implicit, little = ENCODINGS.get(transfer_syntax) or guess_encoding(
            fp, bool(transfer_syntax)
        )
    implicit = check_vr_encoding(fp, start, implicit, flags)
    bare = dataset_only_flag(implicit, little)
    if bare is not None and not strict and not meta.elems and start == 0:
        # The file is the dataset alone: keep how it is encoded, for the
        # header the view's part10 setting puts in front of it (dicom.part10).
        flags.append(bare)

    reading = Reading(flags)
    elems, problem = read_dataset(fp, start, size, implicit, little, reading.ends)
    root = Node(elems, flags, reading=reading)
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
    load_deferred_sequences(fp, elems, size)
    return _instance(root, meta, transfer_syntax, flags)


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
        label=bounded(root.text(_label_tag(sop_class))),
        dose_summation_type=root.text(_DOSE_SUMMATION_TYPE),
        series_description=bounded(root.text(_SERIES_DESCRIPTION)),
        instance_number=integer(root.text(_INSTANCE_NUMBER)),
        plan_intent=root.text(_PLAN_INTENT),
        transfer_syntax=transfer_syntax,
        details=read_details(root),
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


# -- helpers -----------------------------------------------------------------


def _unreadable(exc: BaseException) -> Rejection:
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return Rejection(RejectKind.UNREADABLE, f"{name}: {exc.strerror}")
    return Rejection(RejectKind.UNREADABLE, describe(exc))


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
