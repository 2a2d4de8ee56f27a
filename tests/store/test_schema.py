"""Alembic owns the schema: migrations reach the models exactly, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    Column,
    Connection,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import utc_now
from service.bootstrap import build_worker
from service.store.engine import schema
from service.store.engine.db import create_engine
from service.store.models import NAMING, Artifact, ArtifactLabel, Base, InboxRecord
from service.store.search import FTS_TABLES
from service.store.types import UtcDateTime
from tests.support.databases import postgres_database
from tests.support.requirements import require_postgres
from tests.support.workers import make_settings, running


def _compared(dialect: str) -> Any:
    """What the drift comparison looks at on ``dialect``, deliberately leaving out two things no model can say:

    - an index declared for one database only (``Index.ddl_if``: the ``pg_trgm`` GIN index of revision 0010)
      is compared on that database alone;
    - SQLite's FTS5 search tables (revision 0010: a virtual table and the shadow tables FTS5 makes for it,
      ``threads_search_data`` and so on) are not model tables; tests/threads/test_thread_search.py and
      tests/artifacts/test_artifact_search.py check what they do.
    """

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        declared = getattr(compare_to if reflected else obj, "_ddl_if", None)
        if type_ == "index" and declared is not None and declared.dialect not in (None, dialect):
            return False
        fts = tuple(FTS_TABLES.values())
        return not (type_ == "table" and reflected and name is not None and name.startswith(fts))

    return include


def _drift(conn: Connection) -> list[Any]:
    opts = {"compare_type": True, "compare_server_default": True, "include_object": _compared(conn.dialect.name)}
    context = MigrationContext.configure(conn, opts=opts)
    return list(compare_metadata(context, Base.metadata))


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_migrated_schema_matches_the_models(engine: AsyncEngine) -> None:
    """An empty database upgraded to head has exactly the tables, columns, types and indexes the models declare."""
    reached = await schema.migrate(engine)
    assert reached.up_to_date and reached.current == schema.heads()
    async with engine.connect() as conn:
        drift = await conn.run_sync(_drift)
    assert drift == [], f"models and migrations disagree (write a revision): {drift}"


async def test_downgrade_to_base_and_upgrade_again(engine: AsyncEngine) -> None:
    """Every revision can be undone and redone: downgrade to base leaves no table, upgrade restores head."""
    await schema.migrate(engine)
    await schema.downgrade(engine, "base")
    assert await _tables(engine) <= {schema.VERSION_TABLE}
    reached = await schema.migrate(engine)
    assert reached.up_to_date
    assert set(Base.metadata.tables) <= await _tables(engine)


async def test_migrate_twice_changes_nothing(engine: AsyncEngine) -> None:
    """Running the migration on a database already at head is a no-op, not an error."""
    first = await schema.migrate(engine)
    second = await schema.migrate(engine)
    assert first == second and second.up_to_date


async def test_concurrent_migrations_upgrade_once(engine: AsyncEngine) -> None:
    """Several workers started together with migrate-on-start all succeed; the schema is created once."""
    results = await asyncio.gather(*(schema.migrate(engine) for _ in range(3)))
    assert all(r.up_to_date for r in results)


LEGACY_INBOX = Table(
    "inbox",
    MetaData(naming_convention=NAMING),
    Column("id", String(255), primary_key=True),
    Column("action", String(100), nullable=False),
    Column("idempotency_key", String(255)),
    Column("request_hash", String(64), nullable=False),
    Column("reply_id", String(64), nullable=False),
    Column("reply_type", String(32), nullable=False),
    Column("reply_data", Text, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    UniqueConstraint("action", "idempotency_key", name="uq_inbox_action_idempotency_key"),
)
"""The inbox as the pre-Alembic worker's ``create_all`` made it (named by the models' convention, keyed by
envelope id alone; revision 0006 adds the requester)."""


ADDED_LATER = {"deleted_at", "deleted_by", "search_text", "verified_at", "failure_reason"}
"""Artifact columns that revisions after the initial one add (0009, 0010, 0013): no pre-Alembic table had them."""


def _legacy_tables() -> MetaData:
    """``artifacts`` as the model declares it, less what later revisions add (columns, the indexes on them, an
    index for one database only), and ``artifact_labels`` as the first revision made it."""
    legacy = MetaData(naming_convention=NAMING)
    model = Artifact.__table__
    kept = [
        Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable, unique=c.unique)
        for c in model.c
        if c.name not in ADDED_LATER
    ]
    indexes = [
        Index(index.name, *(column.name for column in index.columns))
        for index in model.indexes
        if getattr(index, "_ddl_if", None) is None
        and index.dialect_options["sqlite"].get("where") is None
        and all(column.name not in ADDED_LATER for column in index.columns)
    ]
    Table(model.name, legacy, *kept, *indexes)
    Table(  # as revision 0001 made it: 0015 adds created_at and walks (key, value, created_at, artifact_id)
        ArtifactLabel.__table__.name,
        legacy,
        Column("artifact_id", String(40), ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True),
        Column("key", String(64), primary_key=True),
        Column("value", String(256), nullable=False),
        Index(None, "key", "value", "artifact_id"),
    )
    return legacy


async def test_database_made_before_migrations_is_adopted(engine: AsyncEngine) -> None:
    """A database created by the pre-Alembic worker keeps its rows and is upgraded to head."""
    legacy = _legacy_tables()
    async with engine.begin() as conn:
        await conn.run_sync(legacy.create_all)
        await conn.run_sync(lambda c: LEGACY_INBOX.create(c))
        await conn.execute(text("DROP INDEX ix_artifacts_registered_at_id"))  # added by revision 0005
        for column in ("created_by", "artifact_type", "step_id", "owner"):  # dropped by revision 0008
            name = f"ix_artifacts_{column}_created_at_id"
            await conn.execute(text(f"CREATE INDEX {name} ON artifacts ({column}, created_at, id)"))
        await conn.execute(
            LEGACY_INBOX.insert().values(
                id="env-1",
                action="ping",
                request_hash="h",
                reply_id="r",
                reply_type="ai.team.result",
                reply_data="{}",
                created_at=utc_now(),
            )
        )
    reached = await schema.migrate(engine)
    assert reached.up_to_date
    async with engine.connect() as conn:
        rows = (await conn.execute(select(InboxRecord.__table__.c.requester, InboxRecord.__table__.c.id))).all()
    assert [tuple(row) for row in rows] == [("", "env-1")]  # kept, as an anonymous requester's record


async def test_worker_refuses_an_unmigrated_postgres(amqp_url: str, storage_root: Path) -> None:
    """With migrate-on-start off, a worker on an empty PostgreSQL database refuses to start and says why."""
    await require_postgres()
    async with postgres_database() as url:
        settings = make_settings(amqp_url, url, storage_root, migrate_on_start=False)
        with pytest.raises(schema.SchemaNotReady, match="storage-worker migrate"):
            await build_worker(settings).start()
        async with running(make_settings(amqp_url, url, storage_root, migrate_on_start=True)) as worker:
            assert worker.services is not None


async def test_new_sqlite_database_is_created_on_start(amqp_url: str, tmp_path: Path, storage_root: Path) -> None:
    """`storage-worker run` on a brand-new SQLite file works without a migrate step or setting."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    async with running(make_settings(amqp_url, url, storage_root, migrate_on_start=False)) as worker:
        assert worker.services is not None
        assert (await schema.state(worker.services.engine)).up_to_date


async def test_outdated_sqlite_is_not_upgraded_unasked(amqp_url: str, tmp_path: Path, storage_root: Path) -> None:
    """A SQLite database with data at an older revision is left alone unless migrate-on-start is set."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    try:
        assert schema.heads() != (schema.INITIAL_REVISION,), "the test needs a revision older than head"
        await schema.migrate(engine, schema.INITIAL_REVISION)
        with pytest.raises(schema.SchemaNotReady, match="STORAGE_MIGRATE_ON_START"):
            await schema.prepare(engine, migrate_on_start=False, create_if_empty=True)
        assert (await schema.prepare(engine, migrate_on_start=True, create_if_empty=True)).up_to_date
    finally:
        await engine.dispose()


def test_cli_migrate_and_status(tmp_path: Path) -> None:
    """`storage-worker migrate` creates the schema and `migrate --status` reports head (exit 0) afterwards."""
    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}
    cli = [sys.executable, "-m", "service.cli", "migrate"]
    before = subprocess.run([*cli, "--status"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert before.returncode == 1 and "empty" in before.stdout
    done = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "schema up to date" in done.stdout
    after = subprocess.run([*cli, "--status"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert after.returncode == 0 and "schema at head" in after.stdout
