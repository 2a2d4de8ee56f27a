"""Several workers need PostgreSQL: a fresh database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.requirements import require_postgres


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    await require_postgres()
    url, name = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(name)
