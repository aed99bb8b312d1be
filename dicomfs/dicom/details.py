"""The descriptive attributes of one object: what people search and name things by.

Read from the raw elements of the top-level dataset (``references.Node``),
so the file's character set applies, and every value is bounded and
normalised here once: the index stores it as is, and the names built from it
(``view.human``) still treat it as untrusted. Nothing here fails: a value
that does not have its VR's form is kept as an empty string.
"""

from __future__ import annotations

import re
import unicodedata

from dicomfs.dicom.records import DETAIL_MAX, Details
from dicomfs.dicom.references import Node

PATIENT_NAME = 0x00100010
BIRTH_DATE = 0x00100030
STUDY_DATE = 0x00080020
STUDY_TIME = 0x00080030
STUDY_DESCRIPTION = 0x00081030
ACCESSION = 0x00080050
SERIES_NUMBER = 0x00200011
SERIES_DATE = 0x00080021
MANUFACTURER = 0x00080070
MODEL = 0x00081090
PLAN_NAME = 0x300A0003
PLAN_DATE = 0x300A0006
PLAN_TIME = 0x300A0007
APPROVAL_STATUS = 0x300E0002
REVIEW_DATE = 0x300E0004

_DA = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})")  # ASCII digits: \d takes any script's
_INTEGER = re.compile(r"[+-]?[0-9]+")
_IS_MAX = 2**31 - 1  # IS values are 32-bit signed (PS3.5 6.2)


def read_details(root: Node) -> Details:
    """The ``Details`` of the dataset ``root``; empty fields for what is absent or malformed."""
    return Details(
        patient_name=bounded(root.text(PATIENT_NAME).split("=", 1)[0]),
        birth_date=date(root.text(BIRTH_DATE)),
        study_date=date(root.text(STUDY_DATE)),
        study_time=time_digits(root.text(STUDY_TIME)),
        study_description=bounded(root.text(STUDY_DESCRIPTION)),
        accession=bounded(root.text(ACCESSION)),
        series_number=integer(root.text(SERIES_NUMBER)),
        series_date=date(root.text(SERIES_DATE)),
        manufacturer=bounded(root.text(MANUFACTURER)),
        model=bounded(root.text(MODEL)),
        plan_name=bounded(root.text(PLAN_NAME)),
        plan_date=date(root.text(PLAN_DATE)),
        plan_time=time_digits(root.text(PLAN_TIME)),
        approval_status=bounded(root.text(APPROVAL_STATUS)).upper(),
        review_date=date(root.text(REVIEW_DATE)),
    )


def bounded(text: str) -> str:
    """NFC, at most ``DETAIL_MAX`` characters, surrounding padding stripped.

    NFC here so that a search typed on one system finds a name written on
    another (macOS writes NFD); unpaired surrogates (undecodable bytes) are
    replaced, as SQLite stores UTF-8 only.
    """
    text = text.encode("utf-8", "replace").decode("utf-8", "replace")
    return unicodedata.normalize("NFC", text[: DETAIL_MAX * 2])[:DETAIL_MAX].strip(" \x00")


def date(text: str) -> str:
    """A DA value ``YYYYMMDD`` with a plausible month and day, else ""."""
    match = _DA.fullmatch(text.strip())
    if match is None:
        return ""
    month, day = int(match[2]), int(match[3])
    return match[0] if 1 <= month <= 12 and 1 <= day <= 31 else ""


def time_digits(text: str) -> str:
    """A TM value's leading ``HHMMSS`` digits (at most six), else ""."""
    digits = text.strip().split(".", 1)[0]
    return digits[:6] if digits.isascii() and digits.isdigit() else ""


def integer(text: str) -> int | None:
    """The first value of an IS, when it is an integer within IS range; else None."""
    first = text.split("\\", 1)[0].strip()
    if not _INTEGER.fullmatch(first):
        return None
    value = int(first)
    return value if -_IS_MAX - 1 <= value <= _IS_MAX else None
