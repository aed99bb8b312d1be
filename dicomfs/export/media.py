"""``dicomfs export PLAN_UID DEST``: a plan's package as DICOM media with a DICOMDIR.

Many planning systems import from removable media through a DICOMDIR rather
than from a folder of loose files. This module copies a plan and its
``references/`` package (optionally its registrations too) into ``DEST`` and
writes a DICOMDIR with pydicom's :class:`~pydicom.fileset.FileSet`, laid out
the way pydicom lays out a File-set (``PT000000/ST000000/SE000000/IM000000``).

Reading DICOM belongs to the parser; this module imports pydicom anyway
because it *writes* DICOM media (a PS3.10 File-set and its DICOMDIR), which
the parser's read-only element reader cannot do. It reads only files the
index has already accepted (so deflated data was checked against the inflate
cap when it was indexed), and only their headers, without pixel data.

What lands on the media:

* every file is the source byte for byte when the source is a PS3.10 file
  (128-byte preamble, ``DICM``, File Meta Information);
* a source without preamble (files that start with the File Meta group) gets
  the preamble and ``DICM`` in front of its own bytes;
* a source without File Meta (real Monaco exports: a bare implicit VR little
  endian dataset) gets a preamble, ``DICM`` and a File Meta group written by
  dicomfs in front of its unchanged dataset bytes, since media must hold
  PS3.10 files. The dataset itself is never re-encoded.

With ``profile="general-purpose"`` (``--profile general-purpose``) the media
follow PS3.11 STD-GEN-CD, the General Purpose CD-R profile that ``dcmmkdir
-Pgp`` and media importers check, which allows Explicit VR Little Endian
only: a file in another transfer syntax (Implicit VR, Big Endian, Deflated,
no File Meta) is written again in that one by ``explicit_le``, with the same
values, and its DICOMDIR record names the syntax of the written file. Files
already in Explicit VR Little Endian are copied as above. A file that cannot
be re-encoded (compressed pixel data, which STD-GEN-CD cannot hold; values
that would change; a source that changed) stops the export after every file
was tried: :class:`ProfileError` names each one and why, and nothing is left
in ``DEST``. Leaving such a file out instead would hand a planning system a
package with a hole in it.

The DICOMDIR's directory records need some values that DICOM allows an
instance to leave empty (Study ID, Series Number, Instance Number ...). When
a file lacks one, the record gets a stand-in (as ``dcmgpdir --invent`` does),
the file is left alone, and :attr:`ExportResult.invented` lists what was
filled in.

``DEST`` must be missing or an empty folder. The File-set is built in a
hidden sibling folder and renamed into place at the end, so ``DEST`` either
appears complete or not at all. The source folders are never written to.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.fileset import FileSet
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dicomfs import __version__
from dicomfs.errors import ConfigError, NotAPlanError
from dicomfs.export import BYTE_FOR_BYTE, GENERAL_PURPOSE, PROFILES
from dicomfs.export.explicit_le import NotReencodable, write_explicit_le
from dicomfs.export.failures import ExportError, ProfileError, Unwritable
from dicomfs.index import IndexReader, InstanceRow, graph

__all__ = [
    "BYTE_FOR_BYTE",
    "GENERAL_PURPOSE",
    "PROFILES",
    "ExportError",
    "ExportResult",
    "ExportedFile",
    "ProfileError",
    "Unwritable",
    "export_plan",
]

# Name-based UID (PS3.5 B.2) naming dicomfs as the writer of File Meta groups it adds.
IMPLEMENTATION_CLASS_UID = f"2.25.{uuid.uuid5(uuid.NAMESPACE_DNS, 'dicomfs.export').int}"
IMPLEMENTATION_VERSION = f"DICOMFS_{__version__}"[:16]
FILE_SET_ID = "DICOMFS"
# Media profiles: the sources as they are, or STD-GEN-CD (Explicit VR Little Endian only).
_PREAMBLE = b"\x00" * 128 + b"DICM"

# What pydicom's default directory recorders read (PS3.3 F.5), plus the
# identity of the instance. Only these are copied into the stub dataset that
# FileSet turns into records; the real file is copied separately.
_RECORD_KEYWORDS = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "PatientID",
    "PatientName",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "StudyInstanceUID",
    "StudyID",
    "AccessionNumber",
    "Modality",
    "SeriesInstanceUID",
    "SeriesNumber",
    "InstanceNumber",
    "DoseSummationType",
    "StructureSetLabel",
    "StructureSetDate",
    "StructureSetTime",
    "RTPlanLabel",
    "RTPlanDate",
    "RTPlanTime",
    "TreatmentDate",
    "TreatmentTime",
    "ContentDate",
    "ContentTime",
    "ContentLabel",
    "ContentDescription",
    "ContentCreatorName",
    "UserContentLabel",
    "UserContentLongLabel",
)
# Values read only to choose a stand-in for an empty study date or time.
_DATE_FALLBACKS = ("SeriesDate", "ContentDate", "InstanceCreationDate", "StructureSetDate")
_TIME_FALLBACKS = ("SeriesTime", "ContentTime", "InstanceCreationTime", "StructureSetTime")
_READ_TAGS = (*_RECORD_KEYWORDS, *_DATE_FALLBACKS, *_TIME_FALLBACKS, "SeriesDescription")

# Type 1 keys of the records pydicom writes, by SOP class (PS3.3 F.5).
_RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
_RT_STRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
_REGISTRATION = ("1.2.840.10008.5.1.4.1.1.66.1", "1.2.840.10008.5.1.4.1.1.66.3")
_FIDUCIALS = "1.2.840.10008.5.1.4.1.1.66.2"


@dataclass(frozen=True, slots=True)
class ExportedFile:
    """One object on the media: where it came from and its File ID."""

    sop_uid: str
    modality: str
    role: str
    source: str
    file_id: str  # relative to DEST, "/"-separated (PT000000/ST000000/SE000000/IM000000)
    wrapped: bool  # True when a preamble / File Meta was added in front of the source bytes
    transfer_syntax: str = ""  # of the file on the media (its DICOMDIR record says the same)
    reencoded: bool = False  # True when written again as Explicit VR Little Endian


@dataclass(frozen=True, slots=True)
class ExportResult:
    plan_uid: str
    dest: Path
    files: tuple[ExportedFile, ...]
    missing: int  # references of the package that are not indexed (``dicomfs missing``)
    invented: tuple[str, ...] = field(default=())  # "<sop uid> <Keyword>=<value>" per stand-in
    profile: str = BYTE_FOR_BYTE

    @property
    def bytes(self) -> int:
        return sum((self.dest / f.file_id).stat().st_size for f in self.files)


@dataclass(slots=True)
class _Source:
    inst: InstanceRow
    role: str
    prefix: bytes  # written before the source bytes: b"" for a PS3.10 file
    stub: Dataset
    reencode: bool = False  # written again as Explicit VR Little Endian instead of copied


# -- reading the sources ----------------------------------------------------------


def _members(pkg: graph.Package, registrations: bool) -> list[tuple[InstanceRow, str]]:
    """The plan, then its references (and registrations), each SOP UID once."""
    out: list[tuple[InstanceRow, str]] = [(pkg.root, "plan")]
    seen = {pkg.root.sop_uid}
    groups: list[Iterable[graph.Member]] = [pkg.references]
    if registrations:
        groups.append(pkg.registrations)
    for group in groups:
        for member in group:
            if member.sop_uid not in seen:
                seen.add(member.sop_uid)
                out.append((member.instance, member.role))
    return out


def _read_source(inst: InstanceRow, role: str, profile: str) -> _Source:
    source = _read_header(inst, role)
    syntax = source.stub.file_meta.TransferSyntaxUID
    if profile == GENERAL_PURPOSE and syntax != ExplicitVRLittleEndian:
        source.stub.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        return _Source(inst, role, b"", source.stub, reencode=True)
    return source


def _read_header(inst: InstanceRow, role: str) -> _Source:
    path = inst.file.path
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
        header = dcmread(
            path,
            stop_before_pixels=True,
            force=True,
            defer_size=65536,
            specific_tags=list(_READ_TAGS),
        )
    except (OSError, ValueError, EOFError) as exc:
        raise ExportError(f"cannot read {path!r} ({inst.sop_uid}): {exc}") from exc
    found = str(header.get("SOPInstanceUID", "")).rstrip("\0 ")
    if found != inst.sop_uid:
        raise ExportError(
            f"{path!r} holds {found!r}, not {inst.sop_uid}: it changed since it was indexed; "
            "run `dicomfs index` again"
        )
    file_meta = getattr(header, "file_meta", None)
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if syntax:
        # A PS3.10 file is copied as it is; File Meta without the preamble gets the preamble.
        prefix = b"" if head[128:132] == b"DICM" else _PREAMBLE
        return _Source(inst, role, prefix, _stub(header, UID(str(syntax))))
    implicit, little = header.original_encoding
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(str(header.SOPClassUID))
    meta.MediaStorageSOPInstanceUID = UID(inst.sop_uid)
    if implicit and little:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    elif little:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRBigEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    buffer = DicomBytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=True)
    prefix = _PREAMBLE + buffer.getvalue()
    return _Source(inst, role, prefix, _stub(header, meta.TransferSyntaxUID))


def _stub(header: Dataset, transfer_syntax: UID) -> Dataset:
    """A small dataset holding only what the directory records are made of.

    The fallbacks for stand-ins (series date, description ...) come along and
    are removed again by :meth:`_Inventor.fill`.
    """
    stub = Dataset()
    for keyword in _READ_TAGS:
        if keyword in header:
            stub[keyword] = header[keyword]
    stub.file_meta = FileMetaDataset()
    stub.file_meta.MediaStorageSOPClassUID = stub.SOPClassUID
    stub.file_meta.MediaStorageSOPInstanceUID = stub.SOPInstanceUID
    stub.file_meta.TransferSyntaxUID = transfer_syntax
    return stub


# -- directory record stand-ins -----------------------------------------------------


def _empty(ds: Dataset, keyword: str) -> bool:
    return keyword not in ds or ds[keyword].VM == 0 or str(ds[keyword].value).strip() == ""


class _Inventor:
    """Stand-ins for record keys an instance leaves empty, the same per study/series."""

    def __init__(self) -> None:
        self.studies: dict[str, str] = {}
        self.series: dict[str, int] = {}
        self.instances: dict[str, int] = {}
        self.notes: list[str] = []

    def fill(self, ds: Dataset) -> None:
        uid = str(ds.SOPInstanceUID)
        study = str(ds.get("StudyInstanceUID", ""))
        series = str(ds.get("SeriesInstanceUID", ""))
        wanted: dict[str, Any] = {
            "PatientID": lambda: "UNKNOWN",
            "StudyDate": lambda: self._first(ds, _DATE_FALLBACKS, "19000101"),
            "StudyTime": lambda: self._first(ds, _TIME_FALLBACKS, "000000"),
            "StudyID": lambda: self.studies.setdefault(study, str(len(self.studies) + 1)),
            "Modality": lambda: "OT",
            "SeriesNumber": lambda: self.series.setdefault(series, len(self.series) + 1),
            "InstanceNumber": lambda: self._next_instance(series),
        }
        sop_class = str(ds.SOPClassUID)
        if sop_class == _RT_DOSE:
            wanted["DoseSummationType"] = lambda: "PLAN"
        elif sop_class == _RT_STRUCT:
            wanted["StructureSetLabel"] = lambda: str(ds.get("SeriesDescription", "")) or "RS"
        elif sop_class in (*_REGISTRATION, _FIDUCIALS):
            wanted["ContentDate"] = lambda: self._first(ds, ("StudyDate", *_DATE_FALLBACKS), "")
            wanted["ContentTime"] = lambda: self._first(ds, ("StudyTime", *_TIME_FALLBACKS), "")
            wanted["ContentLabel"] = lambda: "REG" if sop_class in _REGISTRATION else "FID"
        if "RTPlanLabel" in ds and _empty(ds, "RTPlanLabel"):
            wanted["RTPlanLabel"] = lambda: "PLAN"
        for keyword, make in wanted.items():
            if _empty(ds, keyword):
                value = make()
                if keyword in ("ContentDate", "StudyDate") and not value:
                    value = "19000101"
                if keyword in ("ContentTime", "StudyTime") and not value:
                    value = "000000"
                setattr(ds, keyword, value)
                self.notes.append(f"{uid} {keyword}={value}")
        for keyword in (*_DATE_FALLBACKS, *_TIME_FALLBACKS, "SeriesDescription"):
            if keyword not in _RECORD_KEYWORDS and keyword in ds:
                del ds[keyword]

    @staticmethod
    def _first(ds: Dataset, keywords: Sequence[str], default: str) -> str:
        for keyword in keywords:
            if not _empty(ds, keyword):
                return str(ds[keyword].value)
        return default

    def _next_instance(self, series: str) -> int:
        self.instances[series] = self.instances.get(series, 0) + 1
        return self.instances[series]


# -- writing ------------------------------------------------------------------------


def _check_dest(dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise ConfigError(f"{dest} exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()):
        raise ConfigError(f"{dest} is not empty: export writes a new File-set into an empty folder")


def _copy_payload(source: _Source, target: Path) -> None:
    """Replace the staged stub at ``target`` with the source file (plus any prefix)."""
    partial = target.with_name(target.name + ".part")
    try:
        if not source.prefix:
            shutil.copyfile(source.inst.file.path, partial)
        else:
            with open(source.inst.file.path, "rb") as src, open(partial, "wb") as out:
                out.write(source.prefix)
                shutil.copyfileobj(src, out, 1 << 20)
        os.replace(partial, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise ExportError(f"cannot copy {source.inst.file.path!r}: {exc}") from exc


def _write_member(source: _Source, target: Path) -> None:
    if not source.reencode:
        _copy_payload(source, target)
        return
    try:
        write_explicit_le(
            source.inst.file.path,
            target,
            source.inst.sop_uid,
            (IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION),
            size=source.inst.file.size,
        )
    except OSError as exc:  # the media side: NotReencodable covers the source side
        raise ExportError(f"cannot write {target.name} for {source.inst.sop_uid}: {exc}") from exc


def export_plan(
    reader: IndexReader,
    plan_uid: str,
    dest: Path | str,
    *,
    registrations: bool = False,
    profile: str = BYTE_FOR_BYTE,
) -> ExportResult:
    """Copy ``plan_uid``'s package into ``dest`` as a File-set with a DICOMDIR.

    ``profile`` is :data:`BYTE_FOR_BYTE` (files as they are) or
    :data:`GENERAL_PURPOSE` (STD-GEN-CD: Explicit VR Little Endian only).
    """
    if profile not in PROFILES:
        raise ConfigError(f"unknown media profile {profile!r} (one of: {', '.join(PROFILES)})")
    dest = Path(os.path.abspath(dest))
    root = graph.resolve(reader, plan_uid)
    if not root.is_plan:
        raise NotAPlanError(
            f"{plan_uid} is a {root.modality or root.sop_class} object, not an RT Plan"
        )
    _check_dest(dest)
    pkg = graph.package(reader, plan_uid)
    sources = [_read_source(inst, role, profile) for inst, role in _members(pkg, registrations)]

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.dicomfs-export-", dir=dest.parent))
    try:
        file_set = FileSet()
        file_set.ID = FILE_SET_ID
        inventor = _Inventor()
        for source in sources:
            inventor.fill(source.stub)
            try:
                file_set.add(source.stub)
            except ValueError as exc:
                raise ExportError(
                    f"no DICOMDIR record for {source.inst.sop_uid} ({source.inst.file.path!r}): "
                    f"{exc}"
                ) from exc
        file_set.write(staging)
        by_uid = {s.inst.sop_uid: s for s in sources}
        files: list[ExportedFile] = []
        problems: list[Unwritable] = []
        for instance in file_set:
            source = by_uid[str(instance.SOPInstanceUID)]
            target = Path(instance.path)
            try:
                _write_member(source, target)
            except NotReencodable as exc:
                path = source.inst.file.path
                problems.append(Unwritable(source.inst.sop_uid, path, exc.reason, exc.compressed))
                continue
            files.append(
                ExportedFile(
                    sop_uid=source.inst.sop_uid,
                    modality=source.inst.modality,
                    role=source.role,
                    source=source.inst.file.path,
                    file_id=target.relative_to(staging).as_posix(),
                    wrapped=bool(source.prefix),
                    transfer_syntax=str(instance.TransferSyntaxUID),
                    reencoded=source.reencode,
                )
            )
        if problems:
            order = {s.inst.sop_uid: i for i, s in enumerate(sources)}
            problems.sort(key=lambda p: order[p.sop_uid])
            raise ProfileError(GENERAL_PURPOSE, problems, len(sources))
        if len(files) != len(sources):
            raise ExportError(f"the File-set holds {len(files)} of {len(sources)} objects")
        if dest.is_dir():
            dest.rmdir()  # checked empty above
        os.rename(staging, dest)
        os.chmod(dest, 0o755 & ~_umask())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    order = {s.inst.sop_uid: i for i, s in enumerate(sources)}
    files.sort(key=lambda f: order[f.sop_uid])
    return ExportResult(
        plan_uid=root.sop_uid,
        dest=dest,
        files=tuple(files),
        missing=len(pkg.missing),
        invented=tuple(inventor.notes),
        profile=profile,
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
