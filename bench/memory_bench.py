"""Agent memory latency against store size: get, and search by namespace prefix + labels.

    python -m bench.memory_bench [--backend sqlite|postgres|both] [--totals 1000,1000000] [--samples 300]

For each total a fresh database is migrated and seeded directly with Core bulk inserts, shaped the way
memory grows in practice: more agents, each with its own 1,000 items (top-level namespace ``agent.N``,
sub-namespaces ``facts``/``cache``/``notes``, labels ``topic`` (20 values) and ``client`` (50 per agent)).
Then the handlers run in-process on a real single writer and read pool, as the worker calls them, for:

- ``get``: a primary-key lookup of a random item;
- ``prefix+label``: ``["agent.N"]`` and ``topic`` (about 50 matches, first page of 50);
- ``prefix+2 labels``: ``["agent.N", "facts"]``, ``topic`` and ``client`` (a handful of matches);
- ``store-wide label``: no prefix, the agent's ``client`` label (20 matches among every item).

Every size is seeded before any is timed, and the sizes are measured in alternating rounds, so a busy
machine slows them alike and the comparison holds.

The point is the shape: the figures at 1,000,000 items should be those at 1,000. PostgreSQL is ANALYZEd
after the seed (what autovacuum does in production); SQLite is measured as the worker leaves it.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, text

from bench.common import fresh_database
from contracts import GetMemoryParams, SearchMemoryParams, utc_now
from service.core.context import HandlerContext, Services
from service.files import FileStore
from service.handlers.memory import get_memory, search_memory
from service.identity import Requester
from service.settings import Settings
from service.store import memory_keys
from service.store.engine.db import create_engine
from service.store.engine.schema import migrate
from service.store.engine.writer import SingleWriter
from service.store.models import MemoryLabel, MemoryRecord

PER_AGENT = 1_000
SUBS = ("facts", "cache", "notes")
TOPICS = 20
CLIENTS = 50
SEED_CHUNK = 5_000
ROUNDS = 5

Query = Callable[[random.Random], Awaitable[Any]]


def _item(index: int, now: Any) -> tuple[dict[str, Any], list[dict[str, str]]]:
    agent, local = divmod(index, PER_AGENT)
    top = f"agent.{agent}"
    namespace = [top, SUBS[local % len(SUBS)]]
    path = memory_keys.encode(namespace)
    key = f"k{local}"
    item_id = memory_keys.item_id(path, key)
    labels = {"topic": f"t{local % TOPICS}", "client": f"{top}-c{local % CLIENTS}"}
    moment = now - timedelta(seconds=index)
    row = {
        "id": item_id,
        "ns_path": path,
        "ns_top": top,
        "key": key,
        "value": {"fact": f"value {index}", "n": index},
        "labels": labels,
        "version": 1,
        "owner": top,
        "visibility": "private",
        "trace_id": None,
        "ttl_seconds": None,
        "created_at": moment,
        "updated_at": moment,
        "expires_at": None,
    }
    return row, [{"item_id": item_id, "key": k, "value": v, "ns_path": path} for k, v in labels.items()]


async def _seed(engine: Any, total: int) -> float:
    started = time.perf_counter()
    now = utc_now()
    async with engine.begin() as conn:
        for start in range(0, total, SEED_CHUNK):
            rows, labels = [], []
            for index in range(start, min(total, start + SEED_CHUNK)):
                row, item_labels = _item(index, now)
                rows.append(row)
                labels.extend(item_labels)
            await conn.execute(insert(MemoryRecord.__table__), rows)
            await conn.execute(insert(MemoryLabel.__table__), labels)
        if engine.dialect.name == "postgresql":
            await conn.execute(text("ANALYZE memory_items"))
            await conn.execute(text("ANALYZE memory_labels"))
    return time.perf_counter() - started


def _queries(services: Services, agents: int) -> dict[str, Query]:
    def ctx(agent: int) -> HandlerContext:
        return HandlerContext(services, Requester(id=f"agent.{agent}"))

    async def get(rng: random.Random) -> Any:
        agent, local = rng.randrange(agents), rng.randrange(PER_AGENT)
        params = GetMemoryParams(namespace=[f"agent.{agent}", SUBS[local % len(SUBS)]], key=f"k{local}")
        return await get_memory(params, ctx(agent))

    async def prefix_label(rng: random.Random) -> Any:
        agent = rng.randrange(agents)
        params = SearchMemoryParams(
            namespace_prefix=[f"agent.{agent}"], labels={"topic": f"t{rng.randrange(TOPICS)}"}, limit=50
        )
        return await _page(params, ctx(agent))

    async def prefix_two_labels(rng: random.Random) -> Any:
        agent, client = rng.randrange(agents), rng.randrange(CLIENTS)
        params = SearchMemoryParams(
            namespace_prefix=[f"agent.{agent}", "facts"],
            labels={"topic": f"t{client % TOPICS}", "client": f"agent.{agent}-c{client}"},
            limit=50,
        )
        return await _page(params, ctx(agent))

    async def store_wide(rng: random.Random) -> Any:
        agent = rng.randrange(agents)
        params = SearchMemoryParams(labels={"client": f"agent.{agent}-c{rng.randrange(CLIENTS)}"}, limit=50)
        return await _page(params, ctx(agent))

    return {
        "get": get,
        "prefix+label": prefix_label,
        "prefix+2 labels": prefix_two_labels,
        "store-wide label": store_wide,
    }


async def _page(params: SearchMemoryParams, ctx: HandlerContext) -> int:
    out = await search_memory(params, ctx)
    assert out.count > 0, "a benchmark query found nothing: the seed and the queries disagree"
    return out.count


async def _measure(query: Query, samples: int, rng: random.Random) -> list[float]:
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        await query(rng)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


async def _plans(services: Services, queries: dict[str, Query]) -> dict[str, str]:
    """The database's own plan of each search (PostgreSQL: executed, with its timing): the index evidence."""
    captured: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")) and "memory_items" in statement:
            captured.append((statement, parameters))

    sync_engine = services.engine.sync_engine
    explain = "EXPLAIN QUERY PLAN " if sync_engine.dialect.name == "sqlite" else "EXPLAIN (ANALYZE, COSTS OFF) "
    plans = {}
    event.listen(sync_engine, "before_cursor_execute", grab)
    try:
        for name, query in queries.items():
            captured.clear()
            await query(random.Random(11))
            statement, parameters = captured[-1]
            async with services.engine.connect() as conn:
                rows = (await conn.exec_driver_sql(explain + statement, parameters)).all()
            plans[name] = "\n".join(f"    {row[-1]}" for row in rows)
    finally:
        event.remove(sync_engine, "before_cursor_execute", grab)
    return plans


@dataclass
class _Store:
    """One seeded database of one size, with the stores a worker would open on it."""

    backend: str
    total: int
    seed_s: float
    services: Services
    drop: Callable[[], Awaitable[None]]
    queries: dict[str, Query] = field(default_factory=dict)
    timings: dict[str, list[float]] = field(default_factory=dict)


async def _open(backend: str, total: int, folder: Path) -> _Store:
    url, drop = await fresh_database(backend, folder, "bench_memory")
    engine = create_engine(url)
    await migrate(engine)
    seed_s = await _seed(engine, total)
    writer = SingleWriter(engine)
    await writer.start()
    settings = Settings(database_url=url, storage_root=folder.as_uri())
    services = Services(settings=settings, engine=engine, writer=writer, files=FileStore(settings.storage_root))
    store = _Store(backend, total, seed_s, services, drop)
    store.queries = _queries(services, total // PER_AGENT)
    return store


async def _close(store: _Store) -> None:
    await store.services.writer.stop()
    await store.services.engine.dispose()
    await store.drop()


async def run_backend(backend: str, totals: list[int], samples: int, explain: bool = False) -> list[dict[str, Any]]:
    """Seed every size first, then measure them in alternating rounds, so machine noise hits all alike."""
    stores: list[_Store] = []
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as folder:
        try:
            for total in totals:
                stores.append(await _open(backend, total, Path(folder) / str(total)))
            rngs = {id(store): random.Random(7) for store in stores}
            for store in stores:  # warm the pools and the caches
                for query in store.queries.values():
                    for _ in range(20):
                        await query(rngs[id(store)])
            for _ in range(ROUNDS):
                for store in stores:
                    for name, query in store.queries.items():
                        measured = await _measure(query, max(1, samples // ROUNDS), rngs[id(store)])
                        store.timings.setdefault(name, []).extend(measured)
            results = []
            for store in stores:
                plans = await _plans(store.services, store.queries) if explain else {}
                results.append(
                    {
                        "backend": backend,
                        "total": store.total,
                        "seed_s": store.seed_s,
                        "timings": store.timings,
                        "plans": plans,
                    }
                )
        finally:
            for store in stores:
                await _close(store)
    return results


def _table(results: list[dict[str, Any]]) -> str:
    names = list(results[0]["timings"])
    head = f"{'backend':<9}{'items':>11}{'seed s':>9}" + "".join(f"{n + ' p50/p95 ms':>30}" for n in names)
    lines = [head, "-" * len(head)]
    for r in results:
        cells = "".join(
            f"{statistics.median(t):>20.2f} /{statistics.quantiles(t, n=20)[18]:>7.2f}" for t in r["timings"].values()
        )
        lines.append(f"{r['backend']:<9}{r['total']:>11,}{r['seed_s']:>9.1f}{cells}")
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--totals", default="1000,1000000", help="comma list of store sizes (multiples of 1000)")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--explain", action="store_true", help="also print each query's plan at each size")
    args = parser.parse_args(argv)
    backends = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)
    totals = [int(t) for t in args.totals.split(",")]
    results = []
    for backend in backends:
        for result in await run_backend(backend, totals, args.samples, args.explain):
            results.append(result)
            print(_table([result]).splitlines()[-1], flush=True)
    print()
    print(_table(results))
    for result in results:
        for name, plan in result["plans"].items():
            print(f"\n{result['backend']} {result['total']:,} items, {name}:\n{plan}")


if __name__ == "__main__":
    asyncio.run(main())
