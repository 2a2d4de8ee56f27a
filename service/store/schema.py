"""Creating and upgrading the schema. Alembic owns the schema once migrations exist; until then metadata does."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from service.store.models import Base


async def migrate(engine: AsyncEngine) -> None:
    """Bring the database to the current schema (idempotent)."""
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
