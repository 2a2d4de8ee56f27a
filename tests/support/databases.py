"""Fresh databases per test: a SQLite file in a temp dir, or a new PostgreSQL database dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

BACKENDS = [b.strip() for b in os.environ.get("STORAGE_TEST_BACKENDS", "sqlite,postgres").split(",") if b.strip()]
"""The databases tests run on (``STORAGE_TEST_BACKENDS``): a test parametrised by them runs once on each."""
PG_ADMIN_DSN = os.environ.get("STORAGE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def sqlite_url(folder: Path) -> str:
    return f"sqlite+aiosqlite:///{folder / 'storage.db'}"


async def pg_available() -> bool:
    try:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


async def create_pg_database() -> tuple[str, str]:
    """Create an empty database; returns (its SQLAlchemy URL, its name)."""
    name = f"storage_test_{uuid.uuid4().hex[:12]}"
    await _as_admin(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}", name


async def drop_pg_database(name: str) -> None:
    await _as_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _as_admin(statement: str) -> None:
    """One statement on the server's admin database, in a connection of its own (no transaction around it)."""
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database (its SQLAlchemy URL), dropped on exit."""
    url, name = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(name)
