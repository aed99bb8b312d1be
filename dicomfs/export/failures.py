"""Why an export failed: :class:`ExportError`, and :class:`ProfileError` naming each member.

A media profile that re-encodes files (``general-purpose``) can fail on some
members and not others. The export tries every member before it gives up, so
one error lists them all, which and why, and the user fixes (or exports
byte for byte) once instead of once per file. The list is cut after
:data:`LISTED` lines so a CT series of compressed slices stays readable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dicomfs.errors import DicomfsError

__all__ = ["LISTED", "ExportError", "ProfileError", "Unwritable"]

LISTED = 20


class ExportError(DicomfsError):
    """The package could not be written as a File-set."""


@dataclass(frozen=True, slots=True)
class Unwritable:
    """A member the profile could not write: which, and why."""

    sop_uid: str
    source: str
    reason: str
    compressed: bool  # compressed pixel data, which STD-GEN-CD media cannot hold


class ProfileError(ExportError):
    """Members that cannot be written in the profile's transfer syntax; nothing was exported."""

    def __init__(self, profile: str, problems: Sequence[Unwritable], total: int) -> None:
        self.problems = tuple(problems)
        compressed = sum(p.compressed for p in self.problems)
        lines = [
            f"{profile} profile: {len(self.problems)} of {total} files cannot be written "
            "as Explicit VR Little Endian, so nothing was exported"
        ]
        if compressed:
            lines.append(
                f"{compressed} of them hold compressed pixel data, which STD-GEN-CD media cannot "
                "hold (--profile byte-for-byte copies them as they are)"
            )
        for problem in self.problems[:LISTED]:
            lines.append(f"  {problem.sop_uid} ({problem.source!r}): {problem.reason}")
        if len(self.problems) > LISTED:
            lines.append(f"  ... and {len(self.problems) - LISTED} more")
        super().__init__("\n".join(lines))
