"""``list_artifacts`` over a growing table: the keyset listing with filters must cost the same at 1,000
artifacts as at 1,000,000.

The table is seeded directly (SQLAlchemy Core bulk inserts into a fresh SQLite file, the worker stopped),
with the shape a busy deployment has: many traces of 50 artifacts, ten producing agents, four types,
half of them public, labels on every row. Between sizes the worker restarts on the grown file and the
load generator measures each query at 1 command in flight (latency) and 10 (throughput).
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, insert, select

from bench import ours
from bench.commands import AGENT, READ_TRACE, Workload
from bench.common import Names, ServerProcess, delete_topology
from bench.loadgen import LoadGenerator, Run

TRACE_SIZE = 50
AGENTS = (AGENT, *(f"agent-{n}" for n in range(1, 10)))
TYPES = ("report", "table", "chart", "log")
CHUNK = 20_000
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
        "manifest": manifest,
    }
    return row, [{"artifact_id": artifact_id, "key": k, "value": v} for k, v in labels.items()]


def seed(db_file: Path, upto: int) -> int:
    """Grow the artifacts table to ``upto`` rows with Core bulk inserts; returns the rows now there."""
    from service.store.models import Artifact, ArtifactLabel

    artifacts, labels = Artifact.__table__, ArtifactLabel.__table__
    engine = create_engine(f"sqlite:///{db_file}")
    try:
        with engine.begin() as conn:
            have = int(conn.execute(select(func.count()).select_from(artifacts)).scalar_one())
        for start in range(have, upto, CHUNK):
            rows, label_rows = [], []
            for i in range(start, min(start + CHUNK, upto)):
                row, its_labels = _row(i)
                rows.append(row)
                label_rows.extend(its_labels)
            with engine.begin() as conn:
                conn.execute(insert(artifacts), rows)
                conn.execute(insert(labels), label_rows)
        return max(have, upto)
    finally:
        engine.dispose()


async def _db_p50(db_file: Path, filters: dict[str, Any], repeat: int = 50) -> float:
    """The worker's own query for one page (store.list_page), timed without the bus: its p50 in ms."""
    from contracts import ListArtifactsParams
    from service.identity import Requester
    from service.store import artifacts as store
    from service.store.engine.db import create_engine

    engine = create_engine(f"sqlite+aiosqlite:///{db_file}")
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


def run(loadgen: LoadGenerator, amqp_url: str, sizes: tuple[int, ...], count: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="mindbus-bench-list-"))
    (folder / "files" / "temp").mkdir(parents=True)
    db_file = folder / "storage.db"
    names = Names.fresh("list")
    values = ours.settings_for(amqp_url, names, f"sqlite+aiosqlite:///{db_file}", (folder / "files").as_uri(), "list")
    points: list[dict[str, Any]] = []
    try:
        ServerProcess(ours.main, values, name="bench-list-schema").start().stop()  # the worker makes the schema
        for size in sizes:
            print(f"list_artifacts over {size} artifacts: seeding", flush=True)
            seed(db_file, size)
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
                measured[label]["db_p50_ms"] = asyncio.run(_db_p50(db_file, filters))
            points.append({"artifacts": size, "db_bytes": db_file.stat().st_size, "queries": measured})
            print("  at the database: " + ", ".join(f"{k} {v['db_p50_ms']:.2f} ms" for k, v in measured.items()))
    finally:
        asyncio.run(delete_topology(amqp_url, names))
        shutil.rmtree(folder, ignore_errors=True)
    return {"trace_size": TRACE_SIZE, "count_per_query": count, "points": points}
