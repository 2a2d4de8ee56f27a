"""The database stage: a usable URL, a writable SQLite folder, one connection; and what a refusal means."""

from __future__ import annotations

import asyncio
from pathlib import Path

from service.settings import Settings
from service.startup.codes import Exit, Stage, StartupError, caused, safe_url, unexpected
from service.startup.probes import check_writable_folder, concerns, network_failure, os_reason

DATABASE_TIMEOUT_S = 15.0


def check_database_url(url: str) -> None:
    """Only the two async drivers the worker runs on; anything else fails later with a long traceback."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise caused(
            exc,
            Stage.DATABASE,
            f"DATABASE_URL {url.split('@')[-1]!r} is not a database URL",
            "use postgresql+asyncpg://user:password@host:5432/name or sqlite+aiosqlite:///path/to/storage.db",
            Exit.DATABASE_URL,
        ) from exc
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    wanted = {"postgresql": "asyncpg", "sqlite": "aiosqlite"}.get(backend)
    if wanted is None:
        raise StartupError(
            Stage.DATABASE,
            f"DATABASE_URL names {backend}, which the worker does not run on",
            "use postgresql+asyncpg:// or sqlite+aiosqlite:///",
            Exit.DATABASE_URL,
        )
    if driver != wanted:
        fixed = parsed.set(drivername=f"{backend}+{wanted}").render_as_string(hide_password=True)
        raise StartupError(
            Stage.DATABASE,
            f"DATABASE_URL {safe_url(url)} uses the {driver} driver, not {wanted}",
            f"use {backend}+{wanted}://, as in {fixed}",
            Exit.DATABASE_URL,
        )


def check_sqlite_folder(db_file: Path) -> None:
    """SQLite writes its journal, WAL and the worker's lock file beside the database file."""
    hint = "point DATABASE_URL at a file in a folder this user can write"
    try:
        check_writable_folder(db_file.parent)
    except OSError as exc:
        raise caused(
            exc,
            Stage.DATABASE,
            f"cannot use the SQLite folder {db_file.parent}: {os_reason(exc)}",
            hint,
            Exit.DATABASE_FOLDER,
        ) from exc


async def check_database(settings: Settings) -> None:
    """The URL, then one connection of the worker's own engine and a ``SELECT 1``."""
    from sqlalchemy import text

    from service.store.engine.db import create_engine, sqlite_path

    url = settings.database_url
    check_database_url(url)
    if (db_file := sqlite_path(url)) is not None:
        check_sqlite_folder(db_file)
    try:
        engine = create_engine(url, pool_size=1)
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT_S), engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        finally:
            await engine.dispose()
    except Exception as exc:
        raise (database_error(exc, url) or unexpected(Stage.DATABASE, exc)) from exc


_PG_DATABASE_MISSING = "3D000"
"""invalid_catalog_name: asyncpg's InvalidCatalogNameError."""
_PG_AUTH_REFUSED = frozenset({"28P01", "28000"})
"""invalid_password, invalid_authorization_specification (no such role, no pg_hba entry)."""
_PG_NOT_NOW = frozenset({"57P03", "53300"})
"""cannot_connect_now (starting or shutting down), too_many_connections."""


def database_error(exc: BaseException, url: str, *, connecting: bool = True) -> StartupError | None:
    """The known mistakes among what connecting to the database raises, or None.

    ``connecting``: ``exc`` came from connecting to the database and nothing else, so a bare network error or
    timeout is the database's (the driver raises them unwrapped).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    from service.store.engine.db import sqlite_path

    parsed = make_url(url)
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    if isinstance(exc, DBAPIError):
        state = getattr(exc.orig, "sqlstate", None)
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
        reason = reason.removeprefix("<class 'asyncpg.exceptions.").split(">: ", 1)[-1]
        if state == _PG_DATABASE_MISSING:
            return caused(
                exc,
                Stage.DATABASE,
                f'database "{parsed.database}" does not exist on {where}',
                f"create it: createdb -h {parsed.host or 'localhost'} -p {parsed.port or 5432} "
                f"-U {parsed.username or 'postgres'} {parsed.database}; then run storage-worker migrate",
                Exit.DATABASE_MISSING,
            )
        if state in _PG_AUTH_REFUSED:
            return caused(
                exc,
                Stage.DATABASE,
                f'PostgreSQL at {where} refused user "{parsed.username}": {reason}',
                "check the user and password in DATABASE_URL",
                Exit.DATABASE_AUTH,
            )
        if state in _PG_NOT_NOW:
            return caused(
                exc,
                Stage.DATABASE,
                f"PostgreSQL at {where} does not take connections now: {reason}",
                "wait until it has started, or raise max_connections",
                Exit.DATABASE_UNREACHABLE,
            )
        return None
    if connecting and isinstance(exc, TimeoutError):
        return caused(
            exc,
            Stage.DATABASE,
            f"no answer from the database at {where} within {DATABASE_TIMEOUT_S:g}s",
            "is it running, and is the host in DATABASE_URL reachable from here?",
            Exit.DATABASE_UNREACHABLE,
        )
    db_file = sqlite_path(url)
    if db_file is not None and isinstance(exc, OSError):
        if concerns(exc, db_file.parent):
            return caused(
                exc,
                Stage.DATABASE,
                f"cannot use the SQLite folder {db_file.parent}: {os_reason(exc)}",
                "point DATABASE_URL at a file in a folder this user can write",
                Exit.DATABASE_FOLDER,
            )
        return None
    if connecting and db_file is None and isinstance(exc, OSError) and network_failure(exc):
        return caused(
            exc,
            Stage.DATABASE,
            f"cannot reach PostgreSQL at {where}: {os_reason(exc)}",
            "is it running? check the host and port in DATABASE_URL",
            Exit.DATABASE_UNREACHABLE,
        )
    return None
