"""Engine creation and the one place SQLAlchemy/driver exceptions become wire errors."""

from __future__ import annotations

import logging
import math
import re
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, cast

import asyncpg
from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError, TimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from contracts import DeadlineExceeded, InvalidArgument, Unavailable
from service.store.engine.sqlite_driver import BEGIN_WRITE, LeanConnection, lean_connector
from service.store.types import serialize_json

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 5000


class AsyncpgConnection(Protocol):
    """The calls the worker makes on an asyncpg connection directly (asyncpg ships no type information)."""

    def is_in_transaction(self) -> bool: ...

    def is_closed(self) -> bool: ...

    async def execute(self, query: str, *args: Any) -> str: ...

    async def executemany(self, query: str, args: Iterable[Sequence[Any]]) -> None: ...

    async def fetch(self, query: str, *args: Any) -> list[Sequence[Any]]: ...


def seems_open(conn: AsyncConnection) -> bool:
    """Open as far as can be told without a round trip: asyncpg sees the server close the socket (a restart)."""
    sync = conn.sync_connection
    if conn.closed or conn.invalidated or sync is None:
        return False
    if conn.dialect.driver != "asyncpg":
        return True
    return not cast(AsyncpgConnection, sync.connection.driver_connection).is_closed()


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for in-memory databases and other engines."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).resolve()


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
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
    driver = cast(LeanConnection, conn.connection.driver_connection)  # listened to on lean_connector engines only
    if not driver.in_transaction:
        conn.exec_driver_sql(BEGIN_WRITE)


def create_engine(url: str, *, pool_size: int = 8, read_timeout_ms: int | None = None) -> AsyncEngine:
    """An async engine with the pragmas and pool sizes the worker relies on; with ``read_timeout_ms``, every
    ``read_connection`` statement is stopped after that long (DEADLINE_EXCEEDED)."""
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
    if read_timeout_ms is not None:
        _READ_TIMEOUTS[engine.sync_engine] = read_timeout_ms
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

    # Replaced on this engine's dialect instance alone, with functions of the same signature as the methods.
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
    ``DBAPIError`` (a connection attempt cut by a shutdown is neither Operational nor Interface to it), and for
    asyncpg's own error where the worker calls the driver directly (the read limit's ``SET``)."""
    if not isinstance(exc, DBAPIError):
        return _driver_lost_server(exc)
    if str(getattr(exc.orig, "sqlstate", None) or "").startswith(SERVER_GONE_SQLSTATES):
        return True
    return isinstance(getattr(exc.orig, "__cause__", None), OSError)


def _driver_lost_server(exc: BaseException) -> bool:
    """An unwrapped asyncpg error of a connection that is gone: a server-gone state, or a closed connection."""
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc.sqlstate or "").startswith(SERVER_GONE_SQLSTATES)
    return isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)


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


_READ_TIMEOUTS: weakref.WeakKeyDictionary[Engine, int] = weakref.WeakKeyDictionary()
"""The statement time limit of each engine's reads (``STORAGE_READ_TIMEOUT_MS``); engines without one read freely."""
QUERY_CANCELED = "57014"
"""PostgreSQL's query_canceled: what ``statement_timeout`` raises."""
SQLITE_PROGRESS_STEPS = 10_000
"""Virtual machine steps between two looks at the clock of a SQLite read: microseconds apart."""
_LIMIT_KEY = "storage_read_timeout_ms"
_DEADLINE_KEY = "storage_read_deadline"


class _Deadline:
    """When the read running on one SQLite connection must stop; never, outside ``read_connection``.

    The progress handler stays on the connection for its life, so a connection the pool later lends to the
    writer or to the point lookups is never interrupted: its deadline is infinite between reads.
    """

    __slots__ = ("at", "fired")

    def __init__(self) -> None:
        self.at = math.inf
        self.fired = False

    def start(self, timeout_ms: int) -> None:
        self.at = time.monotonic() + timeout_ms / 1000
        self.fired = False

    def passed(self) -> bool:
        """sqlite3's progress handler: a true answer interrupts the running statement."""
        if time.monotonic() > self.at:
            self.fired = True
            return True
        return False


async def _limit_reads(conn: AsyncConnection, timeout_ms: int) -> _Deadline | None:
    """Put this pooled connection under the read limit, once per connection (no round trip per read)."""
    info = conn.info
    if conn.dialect.name == "sqlite":
        deadline: _Deadline | None = info.get(_DEADLINE_KEY)
        if deadline is None:
            driver = (await conn.get_raw_connection()).driver_connection
            if not isinstance(driver, LeanConnection):  # only the worker's file connections are shared by threads
                return None
            deadline = info[_DEADLINE_KEY] = _Deadline()
            driver.sqlite_connection.set_progress_handler(deadline.passed, SQLITE_PROGRESS_STEPS)
        deadline.start(timeout_ms)
        return deadline
    if info.get(_LIMIT_KEY) != timeout_ms:
        # Straight to the driver, before SQLAlchemy begins the read's transaction: a SET inside it would be
        # undone by the rollback that returns the connection to the pool.
        driver = cast(AsyncpgConnection, (await conn.get_raw_connection()).driver_connection)
        await driver.execute(f"SET statement_timeout = {int(timeout_ms)}")
        info[_LIMIT_KEY] = timeout_ms
    return None


async def unlimited(conn: AsyncConnection) -> None:
    """Lift the read limit from a connection the writer takes from the pool: writes are not reads.

    (A SQLite connection needs nothing: its deadline is infinite outside a read.)"""
    if conn.dialect.name == "postgresql" and conn.info.get(_LIMIT_KEY) is not None:
        driver = cast(AsyncpgConnection, (await conn.get_raw_connection()).driver_connection)
        await driver.execute("SET statement_timeout = 0")
        conn.info.pop(_LIMIT_KEY, None)


def _read_timed_out(exc: BaseException, deadline: _Deadline | None) -> bool:
    if not isinstance(exc, DBAPIError):
        return False
    if getattr(exc.orig, "sqlstate", None) == QUERY_CANCELED:
        return True
    return deadline is not None and deadline.fired and "interrupted" in str(exc.orig)


@asynccontextmanager
async def read_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A pooled read connection; database failures surface as UNAVAILABLE, a read past the engine's time
    limit as DEADLINE_EXCEEDED (not retryable: the same read would run as long again)."""
    timeout_ms = _READ_TIMEOUTS.get(engine.sync_engine)
    deadline: _Deadline | None = None
    try:
        async with engine.connect() as conn:
            try:
                if timeout_ms is not None:
                    deadline = await _limit_reads(conn, timeout_ms)
                yield conn
            finally:
                if deadline is not None:
                    deadline.at = math.inf
    except Exception as exc:
        if (failure := read_failure(exc, timeout_ms, deadline)) is not None:
            raise failure from exc
        raise


async def prepare_for_reads(conn: AsyncConnection) -> None:
    """Set up a PostgreSQL connection held for reads, for its life: the engine's read limit, and a plan made
    for each listing's own values.

    asyncpg keeps its statements prepared, and after five runs PostgreSQL may switch a prepared statement to
    a generic plan, one for any value: for a listing whose filter matches few or many rows depending on the
    value (a rare label, a common type) that plan can read far more than the value needs (measured: 5 ms
    instead of 0.6 ms at 10,000 artifacts). Planning each run costs tens of microseconds.
    """
    driver = cast(AsyncpgConnection, (await conn.get_raw_connection()).driver_connection)
    await driver.execute("SET plan_cache_mode = force_custom_plan")
    if (timeout_ms := _READ_TIMEOUTS.get(conn.engine.sync_engine)) is not None:
        await _limit_reads(conn, timeout_ms)


def read_failure(
    exc: Exception, timeout_ms: int | None, deadline: _Deadline | None = None
) -> DeadlineExceeded | Unavailable | InvalidArgument | None:
    """What a failed read answers: DEADLINE_EXCEEDED past the read limit, UNAVAILABLE when the database
    failed, INVALID_ARGUMENT for a value it cannot hold; None when the database is not the cause."""
    if timeout_ms is not None and _read_timed_out(exc, deadline):
        return DeadlineExceeded(
            f"the read ran longer than the {timeout_ms} ms a read may take; narrow it down",
            {"reason": "read_timeout", "timeout_ms": timeout_ms},
            retryable=False,
        )
    return translate_db_error(exc) or translate_value_error(exc)


def read_limit_of(engine: AsyncEngine) -> int | None:
    return _READ_TIMEOUTS.get(engine.sync_engine)
