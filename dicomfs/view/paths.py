"""What a path of the view may be, and what its names may show (the ``names`` setting).

Every front-end (FUSE, WebDAV, ``dicomfs ls``) hands paths it received to
``split_path`` before anything else: a component that is not a name the
view could have made is NotFound before any query runs, so ``..``, ``/``,
NUL or over-long input never reach the index (reliability.md C1).
"""

from __future__ import annotations

import re

from dicomfs.dicom.records import is_safe_uid
from dicomfs.view.nodes import NotFound

# What the names setting may be (README "Names in paths"): "uid" shows UIDs
# only; "id" adds patients/ named by PatientID, labels and descriptions;
# "name" adds the PatientName to the patient folders.
NAMES = ("uid", "id", "name")
HUMAN_TOP = "patients"
_MAX_PATH = 4096
_NAME = re.compile(r"[A-Za-z0-9._-]{1,255}")


def default_names(shared: bool) -> str:
    """The ``names`` setting when none is given: "id" for a private mount, "uid" for a shared one.

    A private mount (no ``allow_other``) is read only by the user who runs
    it, who can read the sources anyway; a shared one shows no patient data
    in names unless the administrator asks for it (README "Names in paths").
    """
    return "uid" if shared else "id"


def uid_of(name: str) -> str | None:
    """The UID of a ``<uid>.dcm`` name, when it is a safe UID."""
    uid = name[:-4] if name.endswith(".dcm") else None
    return uid if uid is not None and is_safe_uid(uid) else None


def split_path(path: str) -> list[str]:
    """Path components, each a safe name; anything else is NotFound before any query.

    Outside ``patients/`` a name is UIDs, digits and a few ASCII marks. Under
    ``patients/`` names are made from values people read (``human``): there
    a component only has to be a name at all (no NUL, not ``.`` or ``..``,
    at most 255 bytes), as it is only ever looked up among the names the
    tree made, never put into a query.
    """
    if not isinstance(path, str) or len(path) > _MAX_PATH:
        raise NotFound("no such file or folder")
    parts = [p for p in path.split("/") if p]
    human = bool(parts) and parts[0] == HUMAN_TOP
    for part in parts:
        if part in (".", ".."):
            raise NotFound("no such file or folder")
        if human:
            if "\x00" in part or len(part.encode("utf-8", "surrogatepass")) > 255:
                raise NotFound("no such file or folder")
        elif _NAME.fullmatch(part) is None:
            raise NotFound("no such file or folder")
    return parts


def is_uid_folder(parts: list[str]) -> bool:
    """``by-series/<uid>``, ``by-study/<uid>`` or ``by-study/<uid>/<uid>``: a UID's folder."""
    shape = (len(parts) == 2 and parts[0] in ("by-series", "by-study")) or (
        len(parts) == 3 and parts[0] == "by-study"
    )
    return shape and all(is_safe_uid(part) for part in parts[1:])


def valid_path(path: str) -> bool:
    """True when every component of ``path`` may be a name of the view (front-ends check first)."""
    try:
        split_path(path)
    except NotFound:
        return False
    return True
