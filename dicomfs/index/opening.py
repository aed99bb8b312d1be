"""Opening an index file read-only, and saying why when it cannot be.

An index on read-only media (a snapshot, a DVD, a read-only bind mount)
cannot be opened like one a writer may change: SQLite must create the
``-shm`` file of a WAL database beside it. Such an index is read with
``immutable=1`` instead; any other failure to open it is said as what it is
(permission denied, a folder the reader may not write in), never as "not a
dicomfs index".
"""

from __future__ import annotations

import logging
import os
import pwd
import sqlite3
from pathlib import Path

from dicomfs.errors import IndexCorruptError, IndexUnavailableError
from dicomfs.index.schema import check_schema

log = logging.getLogger(__name__)

# Primary result codes (sqlite3.h) of a file that could not be opened, as
# opposed to one that is not a database: permission, read-only, cannot open.
_SQLITE_PERM = 3
_SQLITE_READONLY = 8
_SQLITE_CANTOPEN = 14
_ACCESS_CODES = (_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_CANTOPEN)
_BUSY_TIMEOUT = 5.0


def _connect(path: Path, query: str) -> sqlite3.Connection:
    """A read-only connection to a checked index (SQLite opens the file at the first query)."""
    conn = sqlite3.connect(
        f"{path.resolve().as_uri()}?{query}",
        uri=True,
        check_same_thread=False,
        isolation_level=None,
        timeout=_BUSY_TIMEOUT,
    )
    try:
        conn.execute("PRAGMA query_only = 1")
        check_schema(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _is_access_error(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _ACCESS_CODES


def _on_read_only_media(path: Path) -> bool:
    """True when the filesystem holding ``path`` is mounted read-only (ST_RDONLY)."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def open_read_only(path: Path) -> sqlite3.Connection:
    """``mode=ro``; on read-only media ``immutable=1``; else an error that says why.

    A WAL database needs its ``-shm`` file. On read-only media nobody can
    create it, so when it is missing the database is read as immutable: no
    locks, no WAL; correct because nothing can change the file there (a
    ``-wal`` left beside it cannot be read without its ``-shm`` and is
    reported). Elsewhere a missing right is the user's to fix: say which.
    Failures that are not about access (not a database, another schema,
    damaged) keep the schema check's message, which says what the file is.
    """
    try:
        return _connect(path, "mode=ro")
    except (sqlite3.Error, IndexCorruptError) as exc:
        cause = exc.__cause__ if isinstance(exc, IndexCorruptError) else exc
        if not (isinstance(cause, sqlite3.Error) and _is_access_error(cause)):
            raise
        if not os.access(path, os.R_OK):
            raise IndexUnavailableError(_permission_denied(path)) from exc
        if not (_on_read_only_media(path) or _on_read_only_media(path.parent)):
            raise IndexUnavailableError(_cannot_open(path, cause)) from exc
    try:
        conn = _connect(path, "immutable=1")
    except sqlite3.Error as exc:
        raise IndexUnavailableError(
            f"cannot read the index {path} on read-only media: {exc}"
        ) from exc
    log.info("the index %s is on read-only media: read as immutable", path)
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        log.warning(
            "%s holds changes that cannot be read on read-only media without %s-shm: "
            "the index is read as of its last checkpoint",
            wal,
            path.name,
        )
    return conn


def _permission_denied(path: Path) -> str:
    st = path.stat()
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    return (
        f"cannot read the index {path}: permission denied (owner {owner}, mode "
        f"{st.st_mode & 0o7777:04o}; the index holds patient IDs, so it is private to the "
        "user that writes it): run this as that user, or read the data through the mount"
    )


def _cannot_open(path: Path, exc: sqlite3.Error) -> str:
    folder = path.parent
    shm = Path(f"{path}-shm")
    if not shm.exists() and not os.access(folder, os.W_OK | os.X_OK):
        return (
            f"cannot read the index {path}: SQLite must create {shm.name} beside it to read "
            f"it (WAL mode) and this user may not write in {folder}"
        )
    return f"cannot open the index {path} read-only: {exc}"
