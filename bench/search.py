"""``list_threads`` with ``search`` at 1,000,000 threads: a part of a client's name or INN, p50 under 50 ms.

The threads table is seeded directly (Core bulk inserts into a fresh database the worker migrated: SQLite's
FTS5 triggers take every row as the worker's own writes would; PostgreSQL's GIN index is built after the
load, as revision 0010 builds it over existing rows), each thread with the metadata a CRM dialog carries: a
client name (a legal form and two of 5,000 Cyrillic words), a ten-digit INN saved as a number, a region (1 in
90, whatever the owner), a manager. Ten owners, half the threads public. Searches, as the bench agent (owner
of a tenth, reader of the public half):

- rare: "ромашка", in 10 threads (one in 100,000);
- medium: "василёк", in one thread in 500 (2,000 at 1M: past SQLite's FTS probe, a walk of the listing);
- common: "ооо", the legal form of a quarter of the threads: a page is found among the newest rows;
- INN part: "70708", a few dozen threads;
- common + region: "ооо" with the metadata filter region=77;
- rare + region: "ромашка" with region=50 (none match);
- region alone: the metadata filter without a search, what "common + region" costs without its search.

Each is measured at the database (the worker's ``store.list_page``, 200 times) and over the bus (the load
generator, 1 command in flight).

    python -m bench.search [--database-url postgresql+asyncpg://postgres@localhost/postgres] [--threads N]

writes ``search-<database>-<time>.json`` and ``.txt`` to ``--out`` (default docs/bench). Not run in CI.
"""

# ruff: noqa: RUF001, RUF002 - Cyrillic on purpose: the names searched for are Russian client names.

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench import ours
from bench.commands import AGENT, READ_TRACE, Workload
from bench.common import Names, ServerProcess, delete_topology
from bench.loadgen import LoadGenerator, Run
from bench.seeding import BulkLoad, bulk_load
from bench.systems import Database, is_postgres

AGENTS = (AGENT, *(f"agent-{n}" for n in range(1, 10)))
FORMS = ("ООО", "АО", "ЗАО", "ИП")
SYLLABLES = ("ка", "ро", "ми", "ла", "те", "но", "ва", "си", "лё", "жу", "па", "ды", "ге", "зо", "бу", "хи")
START = datetime(2024, 1, 1, tzinfo=UTC)
DEFAULT_AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
TARGET_MS = 50.0

QUERIES: dict[str, dict[str, Any]] = {
    "rare": {"search": "ромашка"},
    "medium": {"search": "василёк"},
    "common": {"search": "ооо"},
    "INN part": {"search": "70708"},
    "common+region": {"search": "ооо", "metadata": {"region": "77"}},
    "rare+region": {"search": "ромашка", "metadata": {"region": "50"}},
    "region alone": {"metadata": {"region": "77"}},
}


def _words() -> list[str]:
    """5,000 pronounceable Cyrillic words of three syllables (none of them the rare or medium name)."""
    words = []
    for a in SYLLABLES:
        for b in SYLLABLES:
            for c in SYLLABLES:
                words.append((a + b + c).capitalize())
    return words[:5000]


WORDS = _words()


def _metadata(i: int) -> dict[str, Any]:
    h = (i * 2654435761) % 4294967291
    if i % 100_000 == 50_000:
        client = "ООО «Ромашка»"
    elif i % 500 == 2:
        client = f"{FORMS[i % 4]} «Василёк {WORDS[h % len(WORDS)]}»"
    else:
        client = f"{FORMS[i % 4]} «{WORDS[h % len(WORDS)]} {WORDS[(h // 7) % len(WORDS)]}»"
    return {
        "client": client,
        "inn": 1_000_000_000 + (h * 7919) % 9_000_000_000,
        "region": f"{(h // 8) % 90:02d}",  # independent of owner and visibility: readable in every region
        "manager": AGENTS[(i // 10) % len(AGENTS)],
    }


def _rows(start: int, stop: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Threads ``start``..``stop`` and their label rows, as the worker writes them."""
    from service.store.search import metadata_text
    from service.store.threads import labels_of

    threads, labels = [], []
    for i in range(start, stop):
        metadata = _metadata(i)
        created = START + timedelta(seconds=i)
        thread_id = f"thread-{i:08d}"
        threads.append(
            {
                "id": thread_id,
                "metadata": metadata,
                "version": 1,
                "message_count": 0,
                "next_seq": 0,
                "created_at": created,
                "updated_at": created,
                "owner": AGENTS[i % len(AGENTS)],
                "visibility": "public" if i % 2 == 0 else "private",
                "trace_id": f"trace-{i // 50}",
                "search_text": metadata_text(metadata),
            }
        )
        labels.extend({"thread_id": thread_id, "key": k, "value": v} for k, v in labels_of(metadata).items())
    return threads, labels


async def seed(url: str, upto: int) -> float:
    """Grow the threads table to ``upto`` rows (``bench.seeding``); returns the seconds it took."""
    from service.store.models import Thread, ThreadLabel

    load = BulkLoad(
        Thread.__table__,
        (Thread.__table__, ThreadLabel.__table__),
        _rows,
        trigram_indexes=("ix_threads_search_text_trgm",),
        noun="threads",
    )
    return await bulk_load(url, load, upto)


async def _matches(url: str) -> dict[str, int]:
    """How many threads each search matches (any reader), to show what the figures are of."""
    from service.store.search import like_pattern

    engine = create_async_engine(url)
    counts = {}
    try:
        async with engine.connect() as conn:
            for label, query in QUERIES.items():
                if "metadata" in query or "search" not in query:
                    continue
                found = await conn.execute(
                    text("SELECT count(*) FROM threads WHERE search_text LIKE :p ESCAPE '\\'"),
                    {"p": like_pattern(query["search"])},
                )
                counts[label] = int(found.scalar_one())
    finally:
        await engine.dispose()
    return counts


async def _db_timings(url: str, query: dict[str, Any], repeat: int, *, serial: bool = False) -> list[float]:
    """The worker's own query for one page of 20 (store.list_page) on a connection set up as the worker's reads
    are (PostgreSQL: a plan per run's values), without the bus: each run's seconds, sorted. ``serial``: with
    PostgreSQL's parallel workers off, to show what their start costs a listing on this host."""
    from service.identity import Requester
    from service.store.engine.db import create_engine, prepare_for_reads

    engine = create_engine(url)
    requester = Requester(id=AGENT, trace_id=READ_TRACE)
    timings = []
    try:
        async with engine.connect() as conn:
            if is_postgres(url):
                await prepare_for_reads(conn)
                if serial:
                    await conn.exec_driver_sql("SET max_parallel_workers_per_gather = 0")
            for _ in range(repeat):
                started = time.perf_counter()
                await _first_page(conn, query, requester)
                timings.append(time.perf_counter() - started)
    finally:
        await engine.dispose()
    return sorted(timings)


async def _first_page(conn: Any, query: dict[str, Any], requester: Any) -> None:
    """One measured query: the worker's own listing statement for the first page of 20."""
    from service.store import threads as store

    await store.list_page(
        conn,
        metadata=query.get("metadata", {}),
        created_after=None,
        created_before=None,
        limit=20,
        after=None,
        now=datetime.now(UTC),
        requester=requester,
        search=query.get("search"),
    )


def _p(timings: list[float], share: float) -> float:
    return timings[int(len(timings) * share)] * 1000


async def _plans(url: str) -> dict[str, str]:
    """PostgreSQL's plan of each query's first page: the worker's own statement (``store.list_page``), EXPLAINed."""
    from sqlalchemy import event

    from service.identity import Requester
    from service.store.engine.db import create_engine

    engine = create_engine(url)
    seen: list[tuple[str, Any]] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        seen.append((statement, parameters))

    plans = {}
    requester = Requester(id=AGENT, trace_id=READ_TRACE)
    try:
        async with engine.connect() as conn:
            for label, query in QUERIES.items():
                seen.clear()
                await _first_page(conn, query, requester)
                statement, parameters = seen[-1]
                explained = await conn.exec_driver_sql("EXPLAIN (ANALYZE, COSTS OFF) " + statement, parameters)
                plans[label] = "\n".join(row[0] for row in explained)
    finally:
        await engine.dispose()
    return plans


def run(loadgen: LoadGenerator, amqp_url: str, size: int, count: int, database_url: str | None) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="mindbus-bench-search-"))
    (folder / "files" / "temp").mkdir(parents=True)
    database = Database.fresh(folder, database_url)
    names = Names.fresh("search")
    values = ours.settings_for(amqp_url, names, database.url, (folder / "files").as_uri(), "search")
    backend = "postgresql" if is_postgres(database_url) else "sqlite"
    try:
        ServerProcess(ours.main, values, name="bench-search-schema").start().stop()  # the worker migrates
        print(f"list_threads search on {backend}: seeding {size:,} threads", flush=True)
        seconds = asyncio.run(seed(database.url, size))
        print(f"  seeded in {seconds:.0f} s", flush=True)
        matches = asyncio.run(_matches(database.url))
        measured: dict[str, dict[str, Any]] = {}
        worker = ServerProcess(ours.main, values, name="bench-search-worker").start()
        try:
            for label, query in QUERIES.items():
                loadgen.run(Run(names.exchange, Workload("list_threads", count=20, filters=query), 1))  # warm
                latency = loadgen.run(Run(names.exchange, Workload("list_threads", count=count, filters=query), 1))
                if latency["errors"]:
                    raise RuntimeError(f"list_threads {label} failed: {latency['first_error']}")
                measured[label] = {"bus_p50_ms": latency["p50_ms"], "bus_p99_ms": latency["p99_ms"]}
        finally:
            worker.stop()
        for label, query in QUERIES.items():
            timings = asyncio.run(_db_timings(database.url, query, 200))
            measured[label].update(db_p50_ms=_p(timings, 0.5), db_p99_ms=_p(timings, 0.99))
            if database.pg_name:
                measured[label]["db_serial_p50_ms"] = _p(
                    asyncio.run(_db_timings(database.url, query, 200, serial=True)), 0.5
                )
            measured[label]["matches"] = matches.get(label)
            print(
                f"  {label:14} bus p50 {measured[label]['bus_p50_ms']:6.2f} ms  "
                f"db p50 {measured[label]['db_p50_ms']:6.2f} ms  p99 {measured[label]['db_p99_ms']:6.2f} ms",
                flush=True,
            )
        plans = asyncio.run(_plans(database.url)) if database.pg_name else {}
    finally:
        asyncio.run(delete_topology(amqp_url, names, ["search"]))
        database.drop()
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "database": backend,
        "threads": size,
        "seed_seconds": round(seconds, 1),
        "count_per_query": count,
        "target_p50_ms": TARGET_MS,
        "queries": measured,
        "plans": plans,
    }


def table(result: dict[str, Any]) -> str:
    serial = all("db_serial_p50_ms" in q for q in result["queries"].values())
    lines = [
        f"list_threads with search on {result['database']}, {result['threads']:,} threads, page of 20, "
        f"1 command in flight (target p50 < {TARGET_MS:.0f} ms)",
        f"{'query':16} {'matches':>9} {'bus p50':>9} {'bus p99':>9} {'db p50':>9} {'db p99':>9}"
        + (f" {'serial p50':>10}" if serial else ""),
    ]
    for label, q in result["queries"].items():
        matches = "" if q["matches"] is None else f"{q['matches']:,}"
        lines.append(
            f"{label:16} {matches:>9} {q['bus_p50_ms']:9.2f} {q['bus_p99_ms']:9.2f} "
            f"{q['db_p50_ms']:9.2f} {q['db_p99_ms']:9.2f}" + (f" {q['db_serial_p50_ms']:10.2f}" if serial else "")
        )
    if serial:
        lines.append("serial p50: the query at the database with max_parallel_workers_per_gather = 0")
    worst = max(max(q["bus_p50_ms"], q["db_p50_ms"]) for q in result["queries"].values())
    lines.append(f"worst p50 {worst:.2f} ms: {'within' if worst < TARGET_MS else 'OVER'} the target")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL URL: a fresh database there; default SQLite")
    parser.add_argument("--threads", type=int, default=1_000_000)
    parser.add_argument("--count", type=int, default=300, help="commands per query over the bus")
    parser.add_argument("--out", type=Path, default=Path("docs/bench"), help="folder for the JSON and the table")
    args = parser.parse_args(argv)
    started = time.strftime("%Y%m%d-%H%M%S")
    loadgen = LoadGenerator(args.amqp_url).start()
    try:
        result = run(loadgen, args.amqp_url, args.threads, args.count, args.database_url)
    finally:
        loadgen.stop()
    summary = table(result)
    print("\n" + summary)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"search-{result['database']}-{started}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    command = "python -m bench.search " + " ".join(argv if argv is not None else sys.argv[1:])
    stem.with_suffix(".txt").write_text(f"{command}\n\n{summary}\n")
    print(f"wrote {stem}.json and .txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
