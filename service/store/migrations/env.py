"""Alembic environment for the storage worker's schema.

The worker runs migrations through ``service.store.engine.schema`` and hands its connection in
(``config.attributes["connection"]``). The ``alembic`` command line (for writing new revisions, see
alembic.ini) gets no connection: this file then opens one from ``DATABASE_URL`` on the async engine.
Revisions are rendered in batch mode so the same file alters tables on SQLite (by rebuilding them) and
on PostgreSQL (in place).
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import JSON, Connection

from service.store.models import Base
from service.store.types import UtcDateTime

config = context.config
target_metadata = Base.metadata


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Render our column types as plain SQLAlchemy ones, so a revision never imports application code."""
    if type_ != "type":
        return False
    if isinstance(obj, UtcDateTime):
        return "sa.DateTime()"
    if isinstance(obj, JSON) and "postgresql" in getattr(obj, "_variant_mapping", {}):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return 'sa.JSON().with_variant(postgresql.JSONB(), "postgresql")'
    return False


def _options() -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "render_as_batch": True,
        "compare_type": True,
        "render_item": render_item,
    }


def run_on(connection: Connection) -> None:
    context.configure(connection=connection, **_options())
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    context.configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"}, **_options())
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    from service.settings import Settings

    return config.get_main_option("sqlalchemy.url") or Settings().database_url


async def _run_from_url() -> None:
    from service.store.engine import schema
    from service.store.engine.db import create_engine

    engine = create_engine(_url())
    try:
        await schema.run_with_connection(engine, run_on)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_offline()
elif (handed := config.attributes.get("connection")) is not None:
    run_on(handed)
else:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    asyncio.run(_run_from_url())
