"""``.dicomfs/status.json``: what the index holds, and whether it can be read at all.

The status is what an operator reads first when something is wrong, so it
answers while the index is rebuilt (``"rebuilding": true``), and while a
PostgreSQL index cannot be reached (a server restarting, a network down),
when it says so in ``"index_unreachable"`` instead of failing with the
listings. An SQLite file that fails to read is being replaced or rebuilt:
that fails as before (EIO), until the rebuild's own status answers. The driver's message is kept: it
names the server and the failure, never a value read from a file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from dicomfs import __version__
from dicomfs.errors import IndexUnavailableError
from dicomfs.index import IndexReader, index_errors, is_unreachable


def status_document(
    reader: Callable[[], tuple[IndexReader, bool]],
    mount_time_ns: int,
    extra: Callable[[], Mapping[str, Any]] | None = None,
) -> bytes:
    """The JSON document: the index's counts (or why there are none) and the mount's."""
    doc: dict[str, Any] = {}
    try:
        current, rebuilding = reader()
        doc.update(current.status().as_dict())
        doc["rebuilding"] = rebuilding
    except index_errors(IndexUnavailableError) as exc:
        doc["index_unreachable"] = _outage(exc)
    doc["dicomfs_version"] = __version__
    doc["mount_time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mount_time_ns / 1e9))
    doc["mount_time_ns"] = mount_time_ns
    if extra is not None:
        doc.update(extra())
    return (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode()


def reachable(reader: Callable[[], tuple[IndexReader, bool]]) -> bool:
    """Whether the index answers and is complete: else the status is made afresh each time."""
    try:
        return not reader()[1]
    except index_errors(IndexUnavailableError) as exc:
        _outage(exc)
        return False


def _outage(exc: Exception) -> str:
    """Why a PostgreSQL index cannot be reached, in one line; any other failure (an SQLite
    file being replaced or rebuilt) is raised again: EIO, then "rebuilding"."""
    if not is_unreachable(exc):
        raise exc
    return " ".join(str(exc).split()) or type(exc).__name__
