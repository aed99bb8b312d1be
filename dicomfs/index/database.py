"""Where an index lives, an SQLite file or a PostgreSQL database, and the one API both answer.

The index's queries are written once, in the SQL both engines speak
(``ON CONFLICT``, ``RETURNING``, ``WITH RECURSIVE``), against the small part
of ``sqlite3.Connection`` they use: ``execute``, ``executemany``,
``in_transaction``, ``close``. ``PgConnection`` gives a psycopg 3
connection that same face, so the reader and the writer do not care which
engine is behind it; where the engines must differ (the schema's DDL, the
write lock, SQLite's pragmas and its WAL), the code asks
``IndexReader.postgres``.

What the adapter does is what DB-API leaves to each driver: the parameter
style (``?`` here, ``%s`` for psycopg; a literal ``%`` is doubled) and the
autocommit mode that lets ``BEGIN`` and ``COMMIT`` be plain statements, as
with ``sqlite3``'s ``isolation_level=None``, and one thing PostgreSQL cannot
store: a NUL character in text. Values read from files may hold one (a
hostile patient name, a UID padded wrongly); each is stored and looked up
as U+0001, the same on the way in and in every query, so a value still
finds its row, and the names the view makes from it are those of SQLite
(they drop every control character alike). Nothing else is rewritten.

psycopg is imported only when a PostgreSQL index is opened: it costs a
quarter of a second, which an SQLite user's every command would pay.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

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


@contextlib.contextmanager
def transaction(conn: Connection, begin: str = "BEGIN") -> Iterator[None]:
    """``begin`` ... ``COMMIT``, or ``ROLLBACK`` on any error, in either engine.

    SQLite may have rolled back already (SQLITE_FULL, SQLITE_IOERR): a second
    ROLLBACK would hide the real error behind "no transaction", so it is
    issued only while a transaction is open.
    """
    conn.execute(begin)
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def pipeline(conn: Connection) -> contextlib.AbstractContextManager[object]:
    """PostgreSQL: statements sent without waiting for each one's result until one is read
    (psycopg's pipeline mode; ``index.lookahead``). SQLite: nothing to wait for."""
    if isinstance(conn, PgConnection):
        return conn.raw.pipeline()
    return contextlib.nullcontext()


def is_url(target: object) -> bool:
    """True when ``target`` names a PostgreSQL database (``postgresql://...``), not a file."""
    text = str(target)
    return any(text.startswith(f"{scheme}://") for scheme in SCHEMES)


def shown(url: str) -> str:
    """``url`` without its password (``user:password@`` or ``?password=``): for messages,
    logs and ``status``."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[-1]
        user = f"{parts.username}@" if parts.username else ""
        parts = parts._replace(netloc=f"{user}{host}")
    query = [q for q in parts.query.split("&") if q and not q.startswith("password=")]
    return urlunsplit(parts._replace(query="&".join(query)))


def errors(*also: type[Exception]) -> tuple[type[Exception], ...]:
    """The driver errors a statement may raise, sqlite3's and psycopg's once it is loaded,
    and ``also``.

    Used as ``except errors():``. Before psycopg is imported no PostgreSQL
    connection exists, so its errors cannot arise.
    """
    psycopg = sys.modules.get("psycopg")
    if psycopg is None:
        return (*also, sqlite3.Error)
    return (*also, sqlite3.Error, psycopg.Error)


def is_unreachable(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is a PostgreSQL server that cannot be reached:
    an outage to report, unlike a damaged SQLite file, which is rebuilt (``live.index_guard``)."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is None:
        return False
    return isinstance(exc, psycopg.OperationalError) or isinstance(
        exc.__cause__, psycopg.OperationalError
    )


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


def storable_text(value: str) -> str:
    """``value`` as PostgreSQL stores it: every NUL replaced by U+0001 (module docstring)."""
    return value.replace("\x00", "\x01") if "\x00" in value else value


def _storable(values: Sequence[Any]) -> tuple[Any, ...]:
    """``values`` as stored (``storable_text``), the text in an array (``= ANY(?)``) too."""
    return tuple(
        storable_text(v)
        if isinstance(v, str)
        else [storable_text(x) if isinstance(x, str) else x for x in v]
        if isinstance(v, list)
        else v
        for v in values
    )


class PgConnection:
    """A psycopg 3 connection in autocommit mode, with ``sqlite3.Connection``'s face.

    A server that restarted, or a network that dropped the connection, is
    met by connecting again, but only between transactions: a statement
    that fails because the connection was lost while none of ours was open
    (every reader's statement, a writer's ``BEGIN``) is run again once on a
    new connection. Inside a batch the error goes up, the server has rolled
    the batch back, and the writer's caller retries it (``live.ingest``);
    the next statement then connects again.
    """

    def __init__(self, url: str, *, read_only: bool, application: str) -> None:
        self._url, self._read_only, self._application = url, read_only, application
        self._conn = self._connect()
        self._idle = True  # no transaction of ours is open on the server

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        conn: psycopg.Connection[Any] = psycopg.connect(
            self._url, autocommit=True, application_name=self._application, connect_timeout=10
        )
        if self._read_only:  # as sqlite's query_only: a reader cannot write by mistake
            conn.execute("SET default_transaction_read_only = on")
        return conn

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self._conn.info.transaction_status != TransactionStatus.IDLE

    def _run(self, statement: Callable[[psycopg.Connection[Any]], Rows]) -> Rows:
        import psycopg

        if self._idle and self._conn.broken:
            self._reconnect()
        try:
            return statement(self._conn)
        except psycopg.OperationalError:
            if not (self._idle and self._conn.broken):
                raise
            self._reconnect()  # raises again while the server is away
            return statement(self._conn)
        finally:
            self._idle = self._conn.broken or not self.in_transaction

    def _reconnect(self) -> None:
        log.warning("the connection to the index was lost: connecting again")
        self._conn.close()
        self._conn = self._connect()

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Rows:
        query, values = _pg_sql(sql), _storable(parameters)
        return self._run(lambda conn: conn.execute(query, values))

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Rows:
        query, rows = _pg_sql(sql), [_storable(p) for p in parameters]

        def run(conn: psycopg.Connection[Any]) -> Rows:
            cursor = conn.cursor()
            cursor.executemany(query, rows)
            return cursor

        return self._run(run)

    def close(self) -> None:
        self._conn.close()

    @property
    def raw(self) -> psycopg.Connection[Any]:
        """The psycopg connection, for what only PostgreSQL has (LISTEN, COPY)."""
        return self._conn
