"""The schema is Alembic's: ``migrate`` upgrades to head, ``prepare`` decides what a starting worker may do.

Migrations run programmatically on a connection of the worker's own async engine, so the same code path
serves ``storage-worker migrate``, migrate-on-start and the tests. The upgrade is one transaction holding
a lock (an advisory lock on PostgreSQL, the write lock on SQLite): several workers started at once with
migrate-on-start upgrade once, the others wait and then find the schema at head. On SQLite foreign keys
are switched off while batch mode rebuilds tables (a rebuild drops the old table, which would otherwise
cascade into its children).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).parent.parent / "migrations"
VERSION_TABLE = "alembic_version"
INITIAL_REVISION = "0001"
INITIAL_TABLES = frozenset({"artifacts", "artifact_labels", "inbox"})
"""What ``create_all`` made before migrations existed: such a database is adopted at the initial revision."""
_PG_LOCK_KEY = 0x6D62_7374  # "mbst": one advisory lock id for every storage worker's migrations


class SchemaNotReady(RuntimeError):
    """The database is not at the schema this worker was built for, and the worker may not change it."""


@dataclass(frozen=True, slots=True)
class SchemaState:
    current: tuple[str, ...]
    """Revisions recorded in the database (empty when Alembic never ran on it)."""
    heads: tuple[str, ...]
    """The newest revisions this code ships."""
    tables: frozenset[str]
    """The application's tables present (the version table left out)."""
    unknown: tuple[str, ...] = ()
    """Recorded revisions this code does not know: the database was migrated by a newer worker."""

    @property
    def up_to_date(self) -> bool:
        return set(self.current) == set(self.heads)

    @property
    def empty(self) -> bool:
        return not self.current and not self.tables

    def describe(self) -> str:
        if self.unknown:
            return (
                f"database schema is at revision {', '.join(self.unknown)}, newer than this worker "
                f"(head {', '.join(self.heads)}): upgrade the worker"
            )
        if self.empty:
            return f"database is empty, schema head is {', '.join(self.heads)}"
        if not self.current:
            found = f"database has tables ({', '.join(sorted(self.tables))}) but no migration history"
            if self.tables == INITIAL_TABLES:
                return f"{found}: it was made before migrations existed, `storage-worker migrate` adopts it"
            return found
        return f"database schema is at revision {', '.join(self.current)}, this worker needs {', '.join(self.heads)}"


def alembic_config(connection: Connection | None = None) -> Config:
    """A Config for the shipped migrations; ``connection`` is handed to env.py instead of a URL."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def heads() -> tuple[str, ...]:
    return tuple(ScriptDirectory.from_config(alembic_config()).get_heads())


async def state(engine: AsyncEngine) -> SchemaState:
    async with engine.connect() as conn:
        return await conn.run_sync(_state)


def _state(conn: Connection) -> SchemaState:
    script = ScriptDirectory.from_config(alembic_config())
    current = tuple(MigrationContext.configure(conn).get_current_heads())
    unknown = []
    for revision in current:
        try:
            script.get_revision(revision)
        except CommandError:
            unknown.append(revision)
    tables = frozenset(inspect(conn).get_table_names()) - {VERSION_TABLE}
    return SchemaState(current, tuple(script.get_heads()), tables, tuple(unknown))


async def migrate(engine: AsyncEngine, revision: str = "head") -> SchemaState:
    """Upgrade the database to ``revision`` (idempotent); returns the state reached."""
    await run_with_connection(engine, lambda conn: _upgrade(conn, revision))
    return await state(engine)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    await run_with_connection(engine, lambda conn: command.downgrade(alembic_config(conn), revision))


async def prepare(engine: AsyncEngine, *, migrate_on_start: bool, create_if_empty: bool) -> SchemaState:
    """Make sure the schema is at head before a worker consumes, or refuse with what to do.

    ``migrate_on_start`` upgrades whatever the database holds; ``create_if_empty`` only creates the schema
    in a database with no tables at all (the embedded SQLite default: nothing there to protect).
    """
    found = await state(engine)
    if found.up_to_date:
        return found
    if found.unknown:
        raise SchemaNotReady(found.describe())
    if migrate_on_start or (create_if_empty and found.empty):
        return await migrate(engine)
    raise SchemaNotReady(f"{found.describe()}: run `storage-worker migrate` (or set STORAGE_MIGRATE_ON_START=true)")


def _upgrade(conn: Connection, revision: str) -> None:
    config = alembic_config(conn)
    found = _state(conn)
    if found.unknown:
        raise SchemaNotReady(found.describe())
    if not found.current and found.tables:
        if found.tables != INITIAL_TABLES:
            raise SchemaNotReady(
                f"{found.describe()}: it was not created by this worker's migrations; "
                "point DATABASE_URL at an empty database or restore one made by `storage-worker migrate`"
            )
        command.stamp(config, INITIAL_REVISION)
    command.upgrade(config, revision)


async def run_with_connection(engine: AsyncEngine, fn: Callable[[Connection], object]) -> None:
    """Run ``fn`` (a sync Alembic call) in one transaction, under the migration lock of this database."""
    sqlite = engine.dialect.name == "sqlite"
    async with engine.connect() as conn:
        if sqlite:
            await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            await conn.commit()
        try:
            async with conn.begin():
                if sqlite:  # take the write lock now: the whole upgrade is one transaction, migrators queue up
                    await conn.exec_driver_sql("BEGIN IMMEDIATE")
                elif engine.dialect.name == "postgresql":
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
                await conn.run_sync(fn)
                if sqlite:
                    broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                    if broken:
                        raise SchemaNotReady(f"migration left rows that break foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                await conn.commit()
