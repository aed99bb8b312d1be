"""File names in the mount, built only from UIDs that may be names.

A UID read from a file is untrusted (reliability.md C1): it becomes a name
only if it matches the DICOM UID grammar in full (``records.is_safe_uid``),
which excludes ``/``, NUL, ``.`` and ``..`` by construction. An instance
whose SOP UID may not be a name is still reachable under ``by-sop/`` by a
synthetic name derived from a hash of the UID, never from the UID itself.
"""

from __future__ import annotations

import hashlib

from dicomfs.dicom.records import is_safe_uid
from dicomfs.index import InstanceRow, ListingRow

SYNTHETIC_PREFIX = "invalid-uid-"


def modality_name(modality: str) -> str:
    """Modality as a name prefix: [A-Z0-9] only, "OT" (other) when nothing is left."""
    cleaned = "".join(c for c in modality.upper() if c.isascii() and c.isalnum())[:16]
    return cleaned or "OT"


def synthetic_name(uid: str) -> str:
    """The by-sop name of an instance whose UID may not be a name (reliability.md C1)."""
    digest = hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{SYNTHETIC_PREFIX}{digest}.dcm"


def named(inst: InstanceRow | ListingRow) -> bool:
    return inst.uid_safe and is_safe_uid(inst.sop_uid)


def member_name(inst: InstanceRow) -> str | None:
    """``<Modality>_<SOPInstanceUID>.dcm``, or None when the UID may not be a name."""
    return f"{modality_name(inst.modality)}_{inst.sop_uid}.dcm" if named(inst) else None
