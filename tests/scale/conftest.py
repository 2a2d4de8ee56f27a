"""Several workers need PostgreSQL: a fresh database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.databases import create_pg_database, drop_pg_database, pg_available


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    if not await pg_available():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432 (set STORAGE_TEST_PG_DSN)")
    url, name = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(name)
