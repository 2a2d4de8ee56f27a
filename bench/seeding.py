"""Growing a migrated database to a million rows directly, for the benchmarks that need that many.

The worker would take hours to register or save a million items one command at a time; the benchmarks of a
query at that size (``bench.search``, ``bench.console``) instead fill its tables with Core bulk inserts, a
chunk of items per transaction, in the shape the worker's own writes give them. SQLite's FTS5 triggers take
every row as they take the worker's; PostgreSQL's trigram GIN indexes are dropped before the load and built
after it (a load's usual order, and how revision 0010 builds them over existing rows). The tables are then
analysed (PostgreSQL: vacuumed too), as autovacuum would have done in a deployment that grew to that size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.systems import is_postgres

CHUNK = 20_000
"""Items per transaction."""

Rows = Callable[[int, int], Sequence[list[dict[str, Any]]]]
"""Items ``start``..``stop`` as rows of each of the load's tables, in the order of ``BulkLoad.tables``."""


@dataclass(frozen=True)
class BulkLoad:
    """What one benchmark loads: ``counted`` holds one row per item (how far an earlier load got)."""

    counted: Table
    tables: tuple[Table, ...]
    rows: Rows
    trigram_indexes: tuple[str, ...] = ()
    """PostgreSQL's GIN ``gin_trgm_ops`` indexes over ``search_text``, by name: dropped, then built after."""
    noun: str = "rows"


async def bulk_load(url: str, load: BulkLoad, upto: int, chunk: int = CHUNK) -> float:
    """Grow ``load.counted`` to ``upto`` rows; returns the seconds it took (analysing included)."""
    engine = create_async_engine(url)
    postgres = is_postgres(url)
    started = time.perf_counter()
    try:
        async with engine.begin() as conn:
            have = int((await conn.execute(select(func.count()).select_from(load.counted))).scalar_one())
            if postgres:
                for name in load.trigram_indexes:
                    await conn.execute(text(f"DROP INDEX IF EXISTS {name}"))
        for number, start in enumerate(range(have, upto, chunk)):
            stop = min(start + chunk, upto)
            batches = load.rows(start, stop)
            async with engine.begin() as conn:
                for table, rows in zip(load.tables, batches, strict=True):
                    if rows:
                        await conn.execute(insert(table), rows)
            if number % 10 == 0:
                print(f"  {stop:,} {load.noun} ({time.perf_counter() - started:.0f} s)", flush=True)
        if postgres:
            async with engine.begin() as conn:
                for name in load.trigram_indexes:
                    table = next(t for t in load.tables if name.startswith(f"ix_{t.name}_"))
                    await conn.execute(
                        text(f"CREATE INDEX {name} ON {table.name} USING gin (search_text gin_trgm_ops)")
                    )
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                for table in load.tables:
                    await conn.execute(text(f"VACUUM ANALYZE {table.name}"))
        else:
            async with engine.begin() as conn:
                await conn.execute(text("ANALYZE"))
        return time.perf_counter() - started
    finally:
        await engine.dispose()
