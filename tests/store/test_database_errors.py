"""How PostgreSQL driver failures reach the wire: the shapes the outage test met, pinned down one by one.

SQLAlchemy wraps asyncpg's errors in its own classes, and not always in the one the name suggests: a
connection attempt cut short by a server shutdown arrives as a bare ``DBAPIError``. These tests build the
wrapped errors the way the dialect does and check the one boundary that translates them.
"""

from __future__ import annotations

import asyncpg
import asyncpg.exceptions as pg
import pytest
from sqlalchemy.dialects.postgresql import asyncpg as dialect
from sqlalchemy.exc import DBAPIError

from contracts import InvalidArgument, Unavailable
from service.store.engine.db import translate_db_error, translate_value_error

pytestmark = pytest.mark.faults

DBAPI = dialect.AsyncAdapt_asyncpg_dbapi(asyncpg)


def wrapped(error: Exception) -> DBAPIError:
    """``error`` as SQLAlchemy hands it over from the asyncpg driver."""
    try:
        try:
            raise error
        except Exception as raw:
            dialect.AsyncAdapt_asyncpg_connection._handle_exception_no_connection(DBAPI, raw)
    except Exception as adapted:
        return DBAPIError.instance("SELECT 1", {}, adapted, DBAPI.Error)  # type: ignore[arg-type]
    raise AssertionError("the dialect did not translate the error")


@pytest.mark.parametrize(
    "error",
    [
        pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        pg.AdminShutdownError("terminating connection due to administrator command"),
        pg.CannotConnectNowError("the database system is shutting down"),
    ],
    ids=["closed-mid-operation", "admin-shutdown", "cannot-connect-now"],
)
def test_server_going_away_is_retryable_unavailable(error: Exception) -> None:
    """A command that meets a PostgreSQL shutting down or gone gets UNAVAILABLE (retry), never INTERNAL."""
    translated = translate_db_error(wrapped(error))
    assert isinstance(translated, Unavailable) and translated.retryable


@pytest.mark.parametrize(
    "error",
    [
        pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        pg.AdminShutdownError("terminating connection due to administrator command"),
        pg.InterfaceError("connection is closed"),
        ConnectionRefusedError(111, "Connection refused"),
    ],
    ids=["closed-mid-operation", "admin-shutdown", "connection-is-closed", "refused"],
)
def test_the_driver_s_own_error_of_a_server_gone_is_unavailable(error: Exception) -> None:
    """The read limit's SET goes to asyncpg directly: a server that went away there is UNAVAILABLE, not INTERNAL
    (seen under the PostgreSQL-stopped outage: one command in ~15 runs came back INTERNAL)."""
    translated = translate_db_error(error)
    assert isinstance(translated, Unavailable) and translated.retryable


def test_a_driver_error_that_is_not_about_the_connection_stays_untranslated() -> None:
    """Only a lost server is UNAVAILABLE: another driver error stays what it is (a bug shows as a bug)."""
    assert translate_db_error(pg.InterfaceError("cannot perform operation: another operation is in progress")) is None
    assert translate_db_error(pg.UndefinedTableError('relation "x" does not exist')) is None


def test_nul_in_text_is_the_senders_error() -> None:
    """A NUL character PostgreSQL cannot store is INVALID_ARGUMENT: retrying would never help."""
    error = wrapped(pg.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00'))
    assert translate_db_error(error) is None
    refusal = translate_value_error(error)
    assert isinstance(refusal, InvalidArgument) and not refusal.retryable
