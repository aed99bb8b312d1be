"""Where an index lives, an SQLite file or a PostgreSQL database, and the one API both answer.

The index's queries are written once, in the SQL both engines speak
(``ON CONFLICT``, ``RETURNING``, ``WITH RECURSIVE``), against the small part
of ``sqlite3.Connection`` they use: ``execute``, ``executemany``,
``in_transaction``, ``close``. ``PgConnection`` gives a psycopg 3
connection that same face, so the reader and the writer do not care which
engine is behind it; where the engines must differ (the schema's DDL, the
write lock, SQLite's pragmas and its WAL), the code asks ``is_postgres``.

What the adapter does is what DB-API leaves to each driver: the parameter
style (``?`` here, ``%s`` for psycopg; a literal ``%`` is doubled) and the
autocommit mode that lets ``BEGIN`` and ``COMMIT`` be plain statements, as
with ``sqlite3``'s ``isolation_level=None``. Nothing else is rewritten.

psycopg is imported only when a PostgreSQL index is opened: it costs a
quarter of a second, which an SQLite user's every command would pay.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import psycopg

SCHEMES = ("postgresql", "postgres")


class Rows(Protocol):
    """What a statement returns: ``sqlite3.Cursor`` or psycopg's cursor."""

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """The part of ``sqlite3.Connection`` the index's code uses."""

    @property
    def in_transaction(self) -> bool: ...
    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Rows: ...
    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Rows: ...
    def close(self) -> None: ...


def default_index_path() -> Path:
    """``$XDG_DATA_HOME/dicomfs/index.sqlite`` (``~/.local/share`` when unset)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    return Path(base) / "dicomfs" / "index.sqlite"


def as_target(value: str | Path) -> Path | str:
    """An index named by a user: a database URL as given, a file as an absolute path
    (the FUSE loop may change the working directory before readers open it)."""
    return str(value) if is_url(value) else Path(os.path.abspath(value))


def is_url(target: object) -> bool:
    """True when ``target`` names a PostgreSQL database (``postgresql://...``), not a file."""
    text = str(target)
    return any(text.startswith(f"{scheme}://") for scheme in SCHEMES)


def shown(url: str) -> str:
    """``url`` without its password: for messages, logs and ``status``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}{host}"))


def errors() -> tuple[type[Exception], ...]:
    """The driver errors a statement may raise: sqlite3's, and psycopg's once it is loaded.

    Used as ``except errors():``. Before psycopg is imported no PostgreSQL
    connection exists, so its errors cannot arise.
    """
    psycopg = sys.modules.get("psycopg")
    if psycopg is None:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


@functools.lru_cache(maxsize=1024)
def _pg_sql(sql: str) -> str:
    """``?`` -> ``%s`` outside quoted literals, ``%`` -> ``%%`` everywhere (psycopg's format)."""
    out: list[str] = []
    quote: str | None = None
    for ch in sql:
        if quote is None and ch in "'\"":
            quote = ch
        elif ch == quote:
            quote = None
        if ch == "%":
            out.append("%%")
        elif ch == "?" and quote is None:
            out.append("%s")
        else:
            out.append(ch)
    return "".join(out)


class PgConnection:
    """A psycopg 3 connection in autocommit mode, with ``sqlite3.Connection``'s face."""

    is_postgres = True

    def __init__(self, url: str, *, read_only: bool, application: str) -> None:
        import psycopg

        self._conn: psycopg.Connection[Any] = psycopg.connect(
            url, autocommit=True, application_name=application, connect_timeout=10
        )
        if read_only:  # as sqlite's query_only: a reader cannot write by mistake
            self._conn.execute("SET default_transaction_read_only = on")

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self._conn.info.transaction_status != TransactionStatus.IDLE

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Rows:
        return self._conn.execute(_pg_sql(sql), tuple(parameters))

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Rows:
        cursor = self._conn.cursor()
        cursor.executemany(_pg_sql(sql), [tuple(p) for p in parameters])
        return cursor

    def close(self) -> None:
        self._conn.close()

    @property
    def raw(self) -> psycopg.Connection[Any]:
        """The psycopg connection, for what only PostgreSQL has (LISTEN, COPY)."""
        return self._conn


def is_postgres(conn: Connection) -> bool:
    return getattr(conn, "is_postgres", False) is True
