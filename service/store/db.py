"""Engine creation and the one place SQLAlchemy/driver exceptions become wire errors."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError, TimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from contracts import InvalidArgument, Unavailable
from service.store.sqlite_driver import BEGIN_WRITE, lean_connector
from service.store.types import serialize_json

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 5000


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for in-memory databases and other engines."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).resolve()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers run beside the writer; synchronous=FULL makes a sent RESULT survive power loss.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Every writer job runs in a savepoint, and SQLite keeps the pages a savepoint changes in a statement
    # journal, by default a temporary file: two pwrite calls per page, some sixty per registration. In memory
    # it costs no syscall; it only ever serves a rollback to a savepoint in this process (a crash discards
    # the uncommitted transaction through the WAL, not through this journal).
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def _sqlite_savepoint(conn: Connection, _name: str) -> None:
    # pysqlite begins a transaction only before INSERT/UPDATE/DELETE, so a SAVEPOINT issued first would open
    # the transaction itself and its RELEASE would commit it: the writer would fsync once per command
    # instead of once per group. Beginning explicitly makes every savepoint nest in the group's transaction;
    # IMMEDIATE takes the write lock at once, so no later statement of the group waits for it.
    if not conn.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
        conn.exec_driver_sql(BEGIN_WRITE)


def create_engine(url: str, *, pool_size: int = 8) -> AsyncEngine:
    """An async engine with the pragmas and pool sizes the worker relies on."""
    if path := sqlite_path(url):
        path.parent.mkdir(parents=True, exist_ok=True)
    if path is not None:
        # A fixed pool (no overflow): an overflow connection is a new thread, file open and pragmas for one
        # statement. Savepoints always nest in a real transaction (_sqlite_savepoint).
        creator = lean_connector(path, check_same_thread=False)
        engine = create_async_engine(
            url, pool_size=pool_size, max_overflow=0, async_creator=creator, json_serializer=serialize_json
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "savepoint", _sqlite_savepoint)
    elif is_sqlite(url):
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, json_serializer=serialize_json)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
        engine = create_async_engine(
            url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, json_serializer=serialize_json
        )
    _plain_savepoints(engine)
    return engine


_PLAIN_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


def _plain_savepoints(engine: AsyncEngine) -> None:
    """Savepoint statements sent as plain text. SQLAlchemy compiles a new clause object for each SAVEPOINT
    and RELEASE, and the writer issues two of each per write command: the compile cost more than the SQL."""
    dialect = engine.sync_engine.dialect
    preparer = dialect.identifier_preparer

    def ident(name: str) -> str:
        # SQLAlchemy numbers a connection's savepoints for its whole life (sa_savepoint_1, _2, ...), and its
        # identifier quoting remembers every name it has seen: on the writer's connection that memory would
        # grow by two names per write command. Plain names need no quoting.
        return name if _PLAIN_IDENTIFIER.fullmatch(name) else preparer.quote_identifier(name)

    def savepoint(connection: Connection, name: str) -> None:
        connection.exec_driver_sql(f"SAVEPOINT {ident(name)}")

    def release(connection: Connection, name: str) -> None:
        connection.exec_driver_sql(f"RELEASE SAVEPOINT {ident(name)}")

    def rollback_to(connection: Connection, name: str) -> None:
        connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {ident(name)}")

    dialect.do_savepoint = savepoint  # type: ignore[method-assign]
    dialect.do_release_savepoint = release  # type: ignore[method-assign]
    dialect.do_rollback_to_savepoint = rollback_to  # type: ignore[method-assign]


DB_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    TimeoutError,
    ConnectionError,
    OSError,
)


CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})
"""deadlock_detected, serialization_failure: the transaction was rolled back and may simply run again."""


def is_conflict(exc: BaseException) -> bool:
    """True when concurrent transactions (several workers) made the database roll this one back."""
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in CONFLICT_SQLSTATES


def is_lock_timeout(exc: BaseException) -> bool:
    """True when a statement gave up waiting for a lock (PostgreSQL ``lock_timeout``, lock_not_available)."""
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) == "55P03"


SERVER_GONE_SQLSTATES = ("08", "57P01", "57P02", "57P03")
"""connection_exception (class 08), admin_shutdown, crash_shutdown, cannot_connect_now: the server went away."""


def is_server_gone(exc: BaseException) -> bool:
    """True for a driver error meaning the server stopped mid-operation, even when SQLAlchemy wraps it as a bare
    ``DBAPIError`` (a connection attempt cut by a shutdown is neither Operational nor Interface to it)."""
    if not isinstance(exc, DBAPIError):
        return False
    if str(getattr(exc.orig, "sqlstate", None) or "").startswith(SERVER_GONE_SQLSTATES):
        return True
    return isinstance(getattr(exc.orig, "__cause__", None), OSError)


def translate_db_error(exc: BaseException) -> Unavailable | None:
    """Map a failure of the database itself (down, locked, read-only, gone) to a retryable UNAVAILABLE."""
    if is_conflict(exc):
        return Unavailable("database busy with conflicting writes, retry later", {"reason": "conflict"})
    gone = is_server_gone(exc)
    if gone or isinstance(exc, DB_UNAVAILABLE_ERRORS) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        return Unavailable("database unavailable, retry later", {"reason": reason})
    return None


UNSTORABLE_TEXT_STATES = frozenset({"22021", "22P05"})
"""character_not_in_repertoire, untranslatable_character: PostgreSQL refusing a NUL in text or in JSON."""


def translate_value_error(exc: BaseException) -> InvalidArgument | None:
    """A value the database cannot hold (PostgreSQL: ``\\u0000`` in a string) is the sender's error, not a crash."""
    if isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in UNSTORABLE_TEXT_STATES:
        return InvalidArgument(
            "a text value holds a character the database cannot store (NUL, \\u0000)",
            {"reason": "unstorable_character"},
        )
    return None


@asynccontextmanager
async def read_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A pooled read connection; database failures surface as UNAVAILABLE."""
    try:
        async with engine.connect() as conn:
            yield conn
    except Exception as exc:
        if (unavailable := translate_db_error(exc)) is not None:
            raise unavailable from exc
        if (refusal := translate_value_error(exc)) is not None:
            raise refusal from exc
        raise
