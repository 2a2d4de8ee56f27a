"""``list_artifacts`` over a growing table: the keyset listing with filters must cost the same at 1,000
artifacts as at 1,000,000.

The table is seeded directly (SQLAlchemy Core bulk inserts into a fresh SQLite file or PostgreSQL database,
the worker stopped), with the shape a busy deployment has: many traces of 50 artifacts, ten producing
agents, four types, half of them public, labels on every row, one in twenty marked failed after it was
registered. Between sizes the worker restarts on the grown database and the load generator measures each
query at 1 command in flight (latency) and 10 (throughput); then the worker's own query is timed alone.

    python -m bench.scaling [--database-url postgresql+asyncpg://postgres@localhost/postgres] [--sizes ...]

writes ``scaling-<time>.json`` and ``.txt`` to ``--out`` (default docs/bench). Flat: the p50 at the largest
size within 1.5 times the p50 at the smallest.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from bench import ours
from bench.commands import AGENT, READ_TRACE, Workload
from bench.common import Names, ServerProcess, delete_topology
from bench.loadgen import LoadGenerator, Run
from bench.systems import Database, is_postgres

TRACE_SIZE = 50
AGENTS = (AGENT, *(f"agent-{n}" for n in range(1, 10)))
TYPES = ("report", "table", "chart", "log")
CHUNK = 20_000
DEFAULT_AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
START = datetime(2025, 1, 1, tzinfo=UTC)


def queries(size: int) -> dict[str, dict[str, Any]]:
    """The filters measured; the trace is the newest one, so it exists at every size.

    Each finds rows the requester may read. A filter that matches only rows it may not read has to look at
    every match to prove the page empty: that costs in proportion to the matches, at any table size.
    """
    return {
        "trace_id": {"trace_id": f"trace-{(size - 1) // TRACE_SIZE}"},
        "type+label": {"artifact_type": "report", "labels": {"risk_level": "high"}},
        "created_by+status": {"created_by": "agent-2", "status": "completed"},
        "no filter": {},
    }


def _row(i: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Artifact ``i`` and its labels, its manifest stored as the worker stores it (the reply's JSON text)."""
    from contracts import ArtifactManifest

    artifact_id = f"art_{uuid.UUID(int=i + 1, version=4)}"
    owner = AGENTS[i % len(AGENTS)]
    created = START + timedelta(seconds=i)
    checksum = "sha256:" + hashlib.sha256(artifact_id.encode()).hexdigest()
    trace = f"trace-{i // TRACE_SIZE}"
    labels = {"risk_level": "high" if i % 3 == 0 else "low", "inn": f"77{i % 1000:08d}"}
    manifest = {
        "id": artifact_id,
        "version": 1,
        "trace_id": trace,
        "step_id": f"step-{i % 7}",
        "created_by": owner,
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "artifact_type": TYPES[i % len(TYPES)],
        "content_type": "application/json",
        "uri": f"file:///data/artifacts/{trace}/{artifact_id}.json",
        "size_bytes": 1024,
        "checksum": checksum,
        "status": "completed",
        "retention": "infinite",
        "owner": owner,
        "visibility": "public" if i % 2 == 0 else "trace",
        "labels": labels,
    }
    row = {
        "id": artifact_id,
        "version": 1,
        "supersedes": None,
        "trace_id": trace,
        "step_id": manifest["step_id"],
        "created_by": owner,
        "created_at": created,
        "artifact_type": manifest["artifact_type"],
        "uri": manifest["uri"],
        "size_bytes": 1024,
        "checksum": checksum,
        "status": "completed" if i % 20 else "failed",
        "owner": owner,
        "visibility": manifest["visibility"],
        "expires_at": None,
        "registered_at": created,
        "manifest": ArtifactManifest.model_validate(manifest).model_dump_json(),
    }
    return row, [{"artifact_id": artifact_id, "key": k, "value": v, "created_at": created} for k, v in labels.items()]


async def seed(url: str, upto: int) -> int:
    """Grow the artifacts table to ``upto`` rows with Core bulk inserts; returns the rows now there.

    On PostgreSQL the tables are vacuumed and analysed afterwards, as autovacuum would have done in a
    deployment that grew to that size: the planner sees the table as it is.
    """
    from service.store.models import Artifact, ArtifactLabel

    artifacts, labels = Artifact.__table__, ArtifactLabel.__table__
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            have = int((await conn.execute(select(func.count()).select_from(artifacts))).scalar_one())
        for start in range(have, upto, CHUNK):
            rows, label_rows = [], []
            for i in range(start, min(start + CHUNK, upto)):
                row, its_labels = _row(i)
                rows.append(row)
                label_rows.extend(its_labels)
            async with engine.begin() as conn:
                await conn.execute(insert(artifacts), rows)
                await conn.execute(insert(labels), label_rows)
        if is_postgres(url):
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("VACUUM ANALYZE artifacts"))
                await conn.execute(text("VACUUM ANALYZE artifact_labels"))
        return max(have, upto)
    finally:
        await engine.dispose()


async def _pg_bytes(url: str) -> int:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text("SELECT pg_database_size(current_database())"))).scalar_one())
    finally:
        await engine.dispose()


async def _db_p50(url: str, filters: dict[str, Any], repeat: int = 200) -> float:
    """The worker's own query for one page (store.list_page), timed without the bus: its p50 in ms."""
    from contracts import ListArtifactsParams
    from service.identity import Requester
    from service.store import artifacts as store
    from service.store.engine.db import create_engine

    engine = create_engine(url)
    params = ListArtifactsParams(**filters, limit=20)
    requester = Requester(id=AGENT, trace_id=READ_TRACE)
    timings = []
    try:
        async with engine.connect() as conn:
            for _ in range(repeat):
                started = time.perf_counter()
                await store.list_page(conn, params, requester)
                timings.append(time.perf_counter() - started)
    finally:
        await engine.dispose()
    return sorted(timings)[len(timings) // 2] * 1000


def run(
    loadgen: LoadGenerator,
    amqp_url: str,
    sizes: tuple[int, ...],
    count: int,
    database_url: str | None = None,
) -> dict[str, Any]:
    """Each size in turn on one growing database: a fresh SQLite file, or a fresh database on the PostgreSQL
    server of ``database_url`` (dropped afterwards)."""
    folder = Path(tempfile.mkdtemp(prefix="mindbus-bench-list-"))
    (folder / "files" / "temp").mkdir(parents=True)
    database = Database.fresh(folder, database_url)
    db_file = folder / "storage.db"
    names = Names.fresh("list")
    values = ours.settings_for(amqp_url, names, database.url, (folder / "files").as_uri(), "list")
    points: list[dict[str, Any]] = []
    try:
        ServerProcess(ours.main, values, name="bench-list-schema").start().stop()  # the worker makes the schema
        for size in sizes:
            print(f"list_artifacts over {size} artifacts: seeding", flush=True)
            seeding = time.perf_counter()
            asyncio.run(seed(database.url, size))
            print(f"  seeded in {time.perf_counter() - seeding:.0f} s", flush=True)
            worker = ServerProcess(ours.main, values, name="bench-list-worker").start()
            try:
                measured: dict[str, Any] = {}
                for label, filters in queries(size).items():
                    workload = Workload("list_artifacts", count=count, filters=filters)
                    loadgen.run(Run(names.exchange, Workload("list_artifacts", count=20, filters=filters), 1))
                    latency = loadgen.run(Run(names.exchange, workload, 1))
                    throughput = loadgen.run(Run(names.exchange, workload, 10))
                    if latency["errors"] or throughput["errors"]:
                        raise RuntimeError(f"list_artifacts {label} failed: {latency['first_error']}")
                    measured[label] = {
                        "p50_ms": latency["p50_ms"],
                        "p99_ms": latency["p99_ms"],
                        "msgs_s_10": throughput["msgs_s"],
                    }
                    print(
                        f"  {label:18} p50 {latency['p50_ms']:6.2f} ms  p99 {latency['p99_ms']:6.2f} ms  "
                        f"{throughput['msgs_s']:6.0f}/s at 10 in flight",
                        flush=True,
                    )
            finally:
                worker.stop()
            for label, filters in queries(size).items():
                measured[label]["db_p50_ms"] = asyncio.run(_db_p50(database.url, filters))
            db_bytes = asyncio.run(_pg_bytes(database.url)) if database.pg_name else db_file.stat().st_size
            points.append({"artifacts": size, "db_bytes": db_bytes, "queries": measured})
            print("  at the database: " + ", ".join(f"{k} {v['db_p50_ms']:.2f} ms" for k, v in measured.items()))
    finally:
        asyncio.run(delete_topology(amqp_url, names, ["list"]))
        database.drop()
        shutil.rmtree(folder, ignore_errors=True)
    backend = "postgresql" if is_postgres(database_url) else "sqlite"
    return {"database": backend, "trace_size": TRACE_SIZE, "count_per_query": count, "points": points}


def flatness(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per filter: the p50 at the largest size over the p50 at the smallest, on the bus and at the database."""
    first, last = result["points"][0]["queries"], result["points"][-1]["queries"]
    return {label: {key: last[label][key] / first[label][key] for key in ("p50_ms", "db_p50_ms")} for label in first}


def table(result: dict[str, Any]) -> str:
    lines = [f"list_artifacts on {result['database']}, p50 ms over the bus (at the database), 1 in flight"]
    labels = list(result["points"][0]["queries"])
    lines.append(f"{'artifacts':>10}  {'MiB':>7}  " + "  ".join(f"{label:>20}" for label in labels))
    for point in result["points"]:
        cells = [f"{q['p50_ms']:7.2f} ({q['db_p50_ms']:6.2f})" for q in (point["queries"][k] for k in labels)]
        lines.append(
            f"{point['artifacts']:>10,}  {point['db_bytes'] / 2**20:7.0f}  " + "  ".join(f"{c:>20}" for c in cells)
        )
    ratios = flatness(result)
    lines.append(
        f"{'largest/smallest':>19}  "
        + "  ".join(f"{ratios[k]['p50_ms']:7.2f} ({ratios[k]['db_p50_ms']:6.2f})".rjust(20) for k in labels)
    )
    lines.append("flat: the ratio of the p50s within 1.5")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL URL (postgresql+asyncpg://...): the run gets a fresh database there; default: SQLite",
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--count", type=int, default=1000, help="commands per query and in-flight level")
    parser.add_argument("--out", type=Path, default=Path("docs/bench"), help="folder for the JSON and the table")
    args = parser.parse_args(argv)
    started = time.strftime("%Y%m%d-%H%M%S")
    loadgen = LoadGenerator(args.amqp_url).start()
    try:
        result = run(loadgen, args.amqp_url, tuple(args.sizes), args.count, args.database_url)
    finally:
        loadgen.stop()
    result["flatness"] = flatness(result)
    summary = table(result)
    print("\n" + summary)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"scaling-{result['database']}-{started}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    command = "python -m bench.scaling " + " ".join(argv if argv is not None else sys.argv[1:])
    stem.with_suffix(".txt").write_text(f"{command}\n\n{summary}\n")
    print(f"wrote {stem}.json and .txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
