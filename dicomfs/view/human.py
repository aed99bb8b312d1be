"""Names people read: folder and file names built from values read from files (issue 10).

Every value is untrusted (reliability.md C1): a label may hold ``../``, NUL,
newlines, right-to-left marks or ten kilobytes. A name made here is safe on
Linux and on Windows, because the mount is shared over SMB:

* NFC; control and format characters (bidi marks included) are dropped;
  ``/ \\ : * ? " < > |`` become ``_``; runs of white space become one space;
* no leading or trailing space or dot (Windows drops trailing ones; a
  leading dot hides a file), never ``.`` or ``..``;
* a Windows reserved device name (CON, PRN, AUX, NUL, COM1-9, LPT1-9,
  with any extension) gets a ``_`` in front;
* at most ``NAME_BYTES`` bytes of UTF-8, cut on a character boundary;
* a missing value gets a placeholder, never an empty name.

Names must also be unique in their folder, and Windows compares names
without regard to case: siblings whose names are equal when case-folded all
get `` ~`` and eight hex digits of a hash of what they stand for (a UID, a
patient ID) appended. The suffix depends only on that key, so a name never
depends on the order rows come in; it changes only when a sibling with the
same name appears or goes.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from typing import TypeVar

NAME_BYTES = 255
# A value's share of a composite name; the whole name is still cut at NAME_BYTES.
PART_CHARS = 80
_FORBIDDEN = re.compile(r'[/\\:*?"<>|]')
_SPACES = re.compile(r"\s+")
_RESERVED = re.compile(r"(CON|PRN|AUX|NUL|CONIN\$|CONOUT\$|(COM|LPT)[0-9¹²³])(\..*)?", re.I)
_SUFFIX_BYTES = 10  # " ~" and eight hex digits
_SUFFIXED = re.compile(r" ~[0-9a-f]{8}$", re.I)

_T = TypeVar("_T")


def clean(value: str, limit: int = PART_CHARS) -> str:
    """``value`` as part of a name: the rules above, at most ``limit`` characters and
    twice as many bytes (so that a part of four-byte characters leaves room for the
    rest of a composite name); may be "".

    Normalised after the filtering: a format character dropped from between a
    letter and its combining mark would leave a string that is not NFC.
    """
    text = "".join(
        " " if ch.isspace() else ch
        for ch in value[: limit * 4]
        if ch.isspace() or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn")
    )
    text = unicodedata.normalize("NFC", text)
    text = _SPACES.sub(" ", _FORBIDDEN.sub("_", text)).strip(" .")
    return _cut(text[:limit], limit * 2).rstrip(" .")


def safe_name(name: str, placeholder: str, *, extension: str = "") -> str:
    """A whole file or folder name from ``name`` (already assembled from ``clean`` parts)."""
    base = clean(name, NAME_BYTES) or placeholder
    if _RESERVED.fullmatch(base + extension):
        base = "_" + base
    return _cut(base, NAME_BYTES - len(extension.encode())) + extension


def _cut(text: str, max_bytes: int) -> str:
    """``text`` cut to ``max_bytes`` of UTF-8 on a character boundary, no trailing space or dot."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", "ignore").rstrip(" .") or "_"


def iso_date(da: str, placeholder: str = "no-date") -> str:
    """``YYYYMMDD`` as ``YYYY-MM-DD`` (sorts as dates do); the placeholder when absent.

    ASCII digits only: ``isdigit`` alone would take fullwidth or Arabic-Indic
    digits, which make a "date" that sorts after every real one.
    """
    ok = len(da) == 8 and da.isascii() and da.isdigit()
    return f"{da[:4]}-{da[4:6]}-{da[6:8]}" if ok else placeholder


def unique(entries: Iterable[tuple[str, str, _T]], extension: str = "") -> dict[str, _T]:
    """{name: item} from (name, key, item) rows, names made unique as the module says.

    ``name`` is already ``safe_name``d (without ``extension``); ``key`` is
    what the entry stands for, and must differ between rows.
    """
    room = NAME_BYTES - len(extension.encode())
    rows = [(_cut(name, room), key, item) for name, key, item in entries]
    seen: dict[str, int] = {}
    for name, _key, _item in rows:
        folded = (name + extension).casefold()
        seen[folded] = seen.get(folded, 0) + 1
    out: dict[str, _T] = {}
    for name, key, item in rows:
        # A value that already ends like a suffix is suffixed too: otherwise
        # a patient ID "X ~<hash of x>" could take the name of a sibling.
        if seen[(name + extension).casefold()] > 1 or _SUFFIXED.search(name):
            digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:8]
            name = _cut(name, NAME_BYTES - _SUFFIX_BYTES - len(extension.encode()))
            name = f"{name} ~{digest}"
        out[name + extension] = item
    return out


def patient_folder(patient_id: str, patient_name: str, with_name: bool) -> str:
    """``<PatientID>``, or ``<PatientID> <Family^Given>`` when names may be shown."""
    name = clean(patient_id) or "no-patient-id"
    if with_name:
        person = clean(patient_name.replace("^", " ").strip()).replace(" ", "^")
        if person:
            name = f"{name} {person}"
    return safe_name(name, "no-patient-id")


def plan_folder(label: str, plan_date: str, approval: str) -> str:
    """``<RTPlanLabel> <YYYY-MM-DD> <ApprovalStatus>``."""
    status = clean(approval, 16) or "no-approval"
    return safe_name(f"{clean(label) or 'no label'} {iso_date(plan_date)} {status}", "plan")


def study_folder(study_date: str, description: str) -> str:
    """``<YYYY-MM-DD> <StudyDescription>``."""
    return safe_name(f"{iso_date(study_date)} {clean(description) or 'no description'}", "study")


def series_folder(modality: str, number: int | None, description: str) -> str:
    """``<Modality> <SeriesNumber> <SeriesDescription>``, the absent parts left out."""
    parts = [clean(modality, 16) or "OT"]
    if number is not None:
        parts.append(str(number))
    if clean(description):
        parts.append(clean(description))
    return safe_name(" ".join(parts), "series")


def member_file(modality: str, number: int | None) -> str:
    """``<Modality>-<InstanceNumber, five digits>`` (``.dcm`` is added by ``unique``)."""
    mod = clean(modality, 16) or "OT"
    return safe_name(f"{mod}-{number:05d}" if number is not None else f"{mod}-no-number", "file")
