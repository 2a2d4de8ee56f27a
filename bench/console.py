"""Issue 17's speed: the console's ``/artifacts`` with a filter and ``/artifacts/<id>`` (lineage of depth 3) at
1,000,000 artifacts, each under 300 ms of server time (p50).

The artifacts are seeded directly (``bench.seeding``: Core bulk inserts into a fresh database the worker
migrated), every table a registration writes filled as it fills them: the row with its manifest text (the
reply's JSON, revision 0008), ``search_text``, labels, ``artifact_inputs`` (revision 0014) and the trace's
usage. The shape: 20,000 traces of 50 artifacts, ten creators, eight types, ten steps per trace; half public,
three in ten ``trace``, two in ten ``private``, owned by their creator; labels ``risk_level`` (one of three),
``region`` (one of 90) and the trace's client ``inn`` (one per trace); one in ten a new version of an earlier
one of its trace (``supersedes``, some chains of three); each with 0-3 ``context.input_artifacts`` among the
twelve before it in its trace, so a lineage of depth 3 both ways has a few dozen nodes, part of them hidden
from a reader who is neither their owner nor in their trace. One in a hundred ``failed``, all of them ``trace``
(the same dice): the console's reader, who sees public artifacts only, gets an empty ``status failed`` page,
its walk having read every failed row (the filter's worst case).

Measured, one request in flight:

- over the bus (the load generator, as ``bench-agent``, an ordinary agent): ``list_artifacts`` (a page of 50,
  the console's) with each console filter, and ``get_lineage`` (both ways, depth 3) from artifacts in the
  middle of traces in the middle of the table;
- through the console (``console.app`` served by uvicorn in its own process, acting as the broker user
  ``guest`` as ``storage-worker console`` does): ``GET /artifacts?<filter>`` and ``GET /artifacts/<id>``,
  the ``Server-Timing: app`` duration (the issue's figure) and the wall time the HTTP client saw; once as a
  reader (public artifacts only) and once with ``guest`` in ``STORAGE_ADMINS`` (every artifact readable: the
  lineage walks on through every node).

    python -m bench.console [--database-url postgresql+asyncpg://postgres@127.0.0.1/postgres] [--artifacts N]
        [--keep DIR [--seed-only]] [--bus-only]

writes ``console-<database>-<time>.json`` and ``.txt`` to ``--out`` (default docs/bench). Not run in CI.
``--keep DIR`` keeps the seeded data in ``DIR`` (the SQLite file, or the name of the PostgreSQL database made
in ``--database-url``'s server, and the files): a later run with the same ``DIR`` migrates it to the checkout's
revision and measures without seeding again (``--seed-only``: seed and stop). Drop the database and remove
``DIR`` when done.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench import ours
from bench.commands import AGENT, READ_TRACE, Workload
from bench.common import Names, ServerProcess, delete_topology, host_label, host_line, serve_until_terminated
from bench.loadgen import LoadGenerator, Run
from bench.seeding import BulkLoad, bulk_load
from bench.systems import Database, is_postgres

TARGET_MS = 300.0
TRACE_SIZE = 50
WINDOW = 12
"""An artifact's inputs are among the ``WINDOW`` artifacts registered before it in its trace."""
CREATORS = (AGENT, *(f"agent-{n}" for n in range(1, 10)))
TYPES = ("report", "table", "chart", "summary", "transcript", "embedding", "dataset", "plan")
RISKS = ("low", "medium", "high")
INPUT_COUNTS = (0, 1, 2, 3, 3, 3)
START = datetime(2024, 1, 1, tzinfo=UTC)
SPACING = timedelta(seconds=30)
PAGE = 50
"""The console's page size (``STORAGE_CONSOLE_PAGE_SIZE``'s default)."""
ROOTS = 50
"""Distinct artifacts whose lineage is asked for, in turn."""
CONSOLE_USER = "guest"
DEFAULT_AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
MASK = (1 << 64) - 1


def _mix(i: int) -> int:
    """splitmix64: the artifact's dice, the same on every run."""
    z = (i + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def artifact_id(i: int) -> str:
    h = f"{_mix(i):016x}{_mix(i ^ 0x5DEECE66D):016x}"
    return f"art_{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def trace_of(i: int) -> str:
    return f"trace-{i // TRACE_SIZE:05d}"


def inn_of(trace: int) -> str:
    """The trace's client: one INN per trace, a label as rare as a trace."""
    return f"77{_mix(trace + 7) % 100_000_000:08d}"


def _older(j: int) -> int | None:
    """The position in its trace of the version artifact ``j`` supersedes: one in ten, 49 -> 39 -> 34."""
    if j == 49:
        return 39
    return j - 5 if j % 10 == 9 else None


def _first_version(j: int) -> tuple[int, int]:
    """The first version's position and ``j``'s version number."""
    version = 1
    while (older := _older(j)) is not None:
        j, version = older, version + 1
    return j, version


def visibility_of(i: int) -> str:
    roll = _mix(i) % 10
    return "public" if roll < 5 else "trace" if roll < 8 else "private"


def creator_of(i: int) -> str:
    base = i - i % TRACE_SIZE + _first_version(i % TRACE_SIZE)[0]
    return CREATORS[(_mix(base) >> 8) % len(CREATORS)]


def inputs_of(i: int) -> list[int]:
    """The artifacts ``i`` names as inputs: 0-3 of the ``WINDOW`` before it in its trace."""
    j, h = i % TRACE_SIZE, _mix(i) >> 20
    window = list(range(max(0, j - WINDOW), j))
    chosen: list[int] = []
    for _ in range(min(len(window), INPUT_COUNTS[h % len(INPUT_COUNTS)])):
        h //= len(INPUT_COUNTS)
        chosen.append(window.pop(h % len(window)))
        h //= 16
    return [i - j + k for k in sorted(chosen)]


def _artifact(i: int, storage_root: str) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """Artifact ``i``'s row, labels and input ids, as ``register_artifact`` writes them."""
    from contracts import ArtifactManifest
    from service.store.search import search_text

    j, h = i % TRACE_SIZE, _mix(i)
    base = i - j + _first_version(j)[0]
    kind = _mix(base)
    older = _older(j)
    created = START + SPACING * i
    trace, artifact = trace_of(i), artifact_id(i)
    status = "failed" if h % 100 == 17 else "completed"
    labels = {
        "risk_level": RISKS[(h >> 12) % len(RISKS)],
        "region": f"{(h >> 16) % 90:02d}",
        "inn": inn_of(i // TRACE_SIZE),
    }
    inputs = [artifact_id(k) for k in inputs_of(i)]
    creator = CREATORS[(kind >> 8) % len(CREATORS)]
    manifest = ArtifactManifest(
        id=artifact,
        version=_first_version(j)[1],
        supersedes=artifact_id(i - j + older) if older is not None else None,
        trace_id=trace,
        step_id=f"step-{_first_version(j)[0] // 5}",
        created_by=creator,
        created_at=created,
        artifact_type=TYPES[(kind >> 16) % len(TYPES)],
        content_type="application/json",
        uri=f"{storage_root}/artifacts/{trace}/{artifact}.json",
        size_bytes=1024 + (h >> 24) % 200_000,
        checksum=f"sha256:{_mix(i + 1):016x}{_mix(i + 2):016x}{_mix(i + 3):016x}{_mix(i + 4):016x}",
        status=status,
        retention="infinite",
        owner=creator,
        visibility=visibility_of(i),
        context={"model_name": "gpt-4o", "prompt_version": f"v{h % 5}", "input_artifacts": inputs},
        labels=labels,
    )
    row = {
        "id": artifact,
        "version": manifest.version,
        "supersedes": manifest.supersedes,
        "trace_id": trace,
        "step_id": manifest.step_id,
        "created_by": creator,
        "created_at": created,
        "artifact_type": manifest.artifact_type,
        "uri": manifest.uri,
        "size_bytes": manifest.size_bytes,
        "checksum": manifest.checksum,
        "status": status,
        "owner": creator,
        "visibility": manifest.visibility.value,
        "expires_at": None,
        "registered_at": created + timedelta(milliseconds=200),
        "manifest": manifest.model_dump_json(),
        "search_text": search_text(labels.values()),
        "failure_reason": "missing" if status == "failed" else None,
    }
    return row, labels, inputs


def _rows(storage_root: str) -> Callable[[int, int], list[list[dict[str, Any]]]]:
    """Artifacts ``start``..``stop`` (whole traces) as rows of artifacts, labels, inputs and trace usage."""

    def rows(start: int, stop: int) -> list[list[dict[str, Any]]]:
        artifacts, labels, inputs = [], [], []
        usage: dict[str, dict[str, Any]] = {}
        for i in range(start, stop):
            row, its_labels, its_inputs = _artifact(i, storage_root)
            artifacts.append(row)
            labels.extend(
                {"artifact_id": row["id"], "key": k, "value": v, "created_at": row["created_at"]}
                for k, v in its_labels.items()
            )
            inputs.extend({"artifact_id": row["id"], "input_id": input_id} for input_id in its_inputs)
            trace = usage.setdefault(row["trace_id"], {"trace_id": row["trace_id"], "artifacts": 0, "size_bytes": 0})
            trace["artifacts"] += 1
            trace["size_bytes"] += row["size_bytes"]
        return [artifacts, labels, inputs, list(usage.values())]

    return rows


def place_recent_files(files: Path, size: int) -> None:
    """The files of the newest day of registrations (and a little more), empty: the worker's start-up recovery
    checks that day's completed artifacts for their file and would mark those without one ``failed``."""
    recent = int(timedelta(hours=25) / SPACING)
    for i in range(max(0, size - recent), size):
        folder = files / "artifacts" / trace_of(i)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{artifact_id(i)}.json").touch()


async def seed(url: str, upto: int, storage_root: str) -> float:
    """Grow the artifacts table to ``upto`` rows (a multiple of the chunk keeps traces whole); the seconds."""
    from service.store.models import Artifact, ArtifactInput, ArtifactLabel, TraceUsage

    tables = (Artifact.__table__, ArtifactLabel.__table__, ArtifactInput.__table__, TraceUsage.__table__)
    load = BulkLoad(Artifact.__table__, tables, _rows(storage_root), trigram_indexes=("ix_artifacts_search_text_trgm",))
    return await bulk_load(url, load, upto)


async def _seeded(url: str) -> int:
    """The artifacts a kept database holds (none before the worker first migrated it)."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text("SELECT count(*) FROM artifacts"))).scalar_one())
    except DBAPIError:  # no table yet
        return 0
    finally:
        await engine.dispose()


# --- what is asked -------------------------------------------------------------------------------------------


def _middle(size: int) -> int:
    """The first artifact of the trace in the middle of the table."""
    return (size // 2) - (size // 2) % TRACE_SIZE


def list_queries(size: int) -> dict[str, dict[str, Any]]:
    """``list_artifacts`` filters, as the console sends them for its filter form."""
    middle = _middle(size)
    day = START + SPACING * middle
    return {
        "no filter": {},
        "trace": {"trace_id": trace_of(middle)},
        "trace+latest": {"trace_id": trace_of(middle), "latest_only": True},
        "type+creator": {"artifact_type": "chart", "created_by": "agent-3"},
        "step": {"step_id": "step-3"},
        "label common": {"labels": {"risk_level": "high"}},
        "label rare": {"labels": {"inn": inn_of(middle // TRACE_SIZE)}},
        "time range": {"created_after": _iso(day), "created_before": _iso(day + timedelta(days=1))},
        "latest_only": {"latest_only": True},
        "status failed": {"status": "failed"},
    }


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def lineage_roots(size: int) -> list[str]:
    """Public artifacts from the middle of ``ROOTS`` traces around the table's middle: readable by every
    requester measured, with inputs above them and derived artifacts below."""
    traces = size // TRACE_SIZE
    first = max(0, traces // 2 - ROOTS // 2)
    roots = []
    for trace in range(first, min(traces, first + ROOTS)):
        for j in range(25, TRACE_SIZE):
            i = trace * TRACE_SIZE + j
            if visibility_of(i) == "public":
                roots.append(artifact_id(i))
                break
    return roots


def console_url(filters: dict[str, Any]) -> str:
    """The console's address for a listing with ``filters`` (its form's field names)."""
    params: list[tuple[str, str]] = []
    for key, value in filters.items():
        if key == "labels":
            params.extend(("label", f"{k}={v}") for k, v in value.items())
        elif key == "latest_only":
            params.append(("latest_only", "1"))
        else:
            params.append((key, str(value)))
    return "/artifacts" + (f"?{urlencode(params)}" if params else "")


# --- over the bus ----------------------------------------------------------------------------------------


def measure_bus(loadgen: LoadGenerator, exchange: str, size: int, count: int) -> dict[str, dict[str, Any]]:
    """Each listing and the lineage through the load generator, 1 command in flight, as ``bench-agent``."""
    measured: dict[str, dict[str, Any]] = {}
    workloads = {
        label: ("list_artifacts", {"limit": PAGE, **filters}, ()) for label, filters in list_queries(size).items()
    }
    workloads["lineage depth 3"] = ("get_lineage", {"direction": "both", "depth": 3}, tuple(lineage_roots(size)))
    for label, (action, filters, ids) in workloads.items():
        loadgen.run(Run(exchange, Workload(action, count=20, filters=filters, artifact_ids=ids), 1))  # warm
        latency = loadgen.run(Run(exchange, Workload(action, count=count, filters=filters, artifact_ids=ids), 1))
        if latency["errors"]:
            raise RuntimeError(f"{action} {label} failed: {latency['first_error']}")
        measured[label] = {"p50_ms": latency["p50_ms"], "p99_ms": latency["p99_ms"], "mean_ms": latency["mean_ms"]}
        print(f"  bus {label:16} p50 {latency['p50_ms']:7.2f} ms  p99 {latency['p99_ms']:7.2f} ms", flush=True)
    return measured


async def _shapes(amqp_url: str, exchange: str, storage_root: str, size: int) -> dict[str, Any]:
    """What the figures are of: rows on each first page, nodes (hidden ones too) and edges of each lineage."""
    from buffer import StorageClient
    from contracts import HiddenNode, ListArtifactsParams

    pages = {}
    with tempfile.TemporaryDirectory(prefix="mindbus-bench-console-") as scratch:
        client = StorageClient(
            amqp_url=amqp_url,
            exchange=exchange,
            agent_id=AGENT,
            storage_root=storage_root,
            buffer_dir=Path(scratch),
            trace_id=READ_TRACE,
        )
        async with client:
            for label, filters in list_queries(size).items():
                params = ListArtifactsParams.model_validate({**filters, "limit": PAGE})
                page = await client.list_artifacts(**{k: getattr(params, k) for k in filters}, limit=PAGE)
                pages[label] = len(page.artifacts)
            nodes, hidden, edges = [], [], []
            for root in lineage_roots(size):
                graph = await client.get_lineage(root, direction="both", depth=3)
                nodes.append(len(graph.nodes))
                hidden.append(sum(isinstance(node, HiddenNode) for node in graph.nodes))
                edges.append(len(graph.edges))
    return {
        "page_rows": pages,
        "lineage": {
            "roots": len(nodes),
            "nodes_mean": round(statistics.fmean(nodes), 1),
            "nodes_max": max(nodes),
            "hidden_mean": round(statistics.fmean(hidden), 1),
            "edges_mean": round(statistics.fmean(edges), 1),
        },
    }


# --- through the console -----------------------------------------------------------------------------------


async def _start_console(values: dict[str, Any]) -> Callable[[], Awaitable[None]]:
    import uvicorn

    from console.app import create_app
    from console.settings import ConsoleSettings

    app = create_app(ConsoleSettings(**values))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=values["port"], log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the console stopped before it started")
        await asyncio.sleep(0.05)

    async def stop() -> None:
        server.should_exit = True
        await task

    return stop


def console_main(values: dict[str, Any], ready: Connection) -> None:
    """Process body: the console app served by uvicorn until SIGTERM."""
    serve_until_terminated(lambda: _start_console(values), ready)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _server_ms(header: str | None) -> float:
    """The ``app`` duration of a ``Server-Timing`` header."""
    for metric in (header or "").split(","):
        name, _, params = metric.strip().partition(";")
        if name == "app":
            for param in params.split(";"):
                key, _, value = param.strip().partition("=")
                if key == "dur":
                    return float(value)
    raise RuntimeError(f"no app duration in Server-Timing: {header!r}")


def _error_of(page: str) -> str:
    """The console's error page in a line: its title and ``#error-message``."""
    title = re.search(r"<title>(.*?)</title>", page, re.S)
    message = re.search(r'id="error-message"[^>]*>(.*?)<', page, re.S)
    return " ".join(html.unescape(m.group(1).strip()) for m in (title, message) if m) or page[:200]


def _percentiles(timings: list[float]) -> dict[str, float]:
    ordered = sorted(timings)
    return {
        "p50_ms": ordered[len(ordered) // 2],
        "p95_ms": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
    }


def measure_console(base: str, size: int, count: int) -> dict[str, dict[str, Any]]:
    """Each console URL ``count`` times, one at a time: the server's own time and the client's."""
    import httpx

    paths: dict[str, list[str]] = {label: [console_url(filters)] for label, filters in list_queries(size).items()}
    paths["artifact + lineage 3"] = [f"/artifacts/{root}" for root in lineage_roots(size)]
    measured = {}
    with httpx.Client(base_url=base, timeout=60) as http:
        for label, urls in paths.items():
            server, wall, errors = [], [], []
            for n in range(count + 10):
                started = time.perf_counter()
                response = http.get(urls[n % len(urls)])
                took = (time.perf_counter() - started) * 1000
                if response.status_code != 200:  # counted and timed: an error page is what the user waited for
                    errors.append(f"GET {urls[n % len(urls)]}: {response.status_code} {_error_of(response.text)}")
                    print(f"  console {label}: {errors[-1]}", flush=True)
                if n >= 10:  # the first ten warm the path
                    server.append(_server_ms(response.headers.get("server-timing")))
                    wall.append(took)
            app, seen = _percentiles(server), _percentiles(wall)
            measured[label] = {
                "errors": len(errors),
                "first_error": errors[0] if errors else None,
                "app_p50_ms": app["p50_ms"],
                "app_p95_ms": app["p95_ms"],
                "app_p99_ms": app["p99_ms"],
                "wall_p50_ms": seen["p50_ms"],
                "wall_p95_ms": seen["p95_ms"],
                "bytes": len(response.content),
            }
            print(
                f"  console {label:20} app p50 {app['p50_ms']:7.1f} ms  p99 {app['p99_ms']:7.1f} ms  "
                f"wall p50 {seen['p50_ms']:7.1f} ms",
                flush=True,
            )
    return measured


def _console_ready() -> bool:
    """The console's artifact pages exist (they are written after this benchmark was)."""
    try:
        from console.pages import artifacts
    except ImportError:
        return False
    return bool(artifacts.routes)


def run_console(amqp_url: str, names: Names, worker_values: dict[str, object], size: int, count: int, admin: bool):
    """A worker (``guest`` an admin or not) and the console beside it; the console's figures."""
    values = {**worker_values, "admins": CONSOLE_USER if admin else ""}
    worker = ServerProcess(ours.main, values, name="bench-console-worker").start()
    try:
        port = _free_port()
        settings = {
            "amqp_url": amqp_url,
            "exchange": names.exchange,
            "queue": names.queue,
            "dlq": names.dlq,
            "port": port,
            "admins": CONSOLE_USER if admin else "",
        }
        console = ServerProcess(console_main, settings, name="bench-console").start()
        try:
            return measure_console(f"http://127.0.0.1:{port}", size, count)
        finally:
            console.stop()
    finally:
        worker.stop()


# --- the run ----------------------------------------------------------------------------------------------


def _data(kept: Path | None, database_url: str | None) -> tuple[Path, Database, bool]:
    """The seeded data's folder and database, and whether they outlive the run.

    ``kept``: a folder that holds them between runs (the SQLite file and the files, or the name of the
    PostgreSQL database in ``postgresql-database``), grown to the size asked for and migrated by the worker
    to the checkout's revision on each run; without it a temporary folder and database, removed at the end.
    """
    if kept is None:
        folder = Path(tempfile.mkdtemp(prefix="mindbus-bench-console-"))
        (folder / "files" / "temp").mkdir(parents=True)
        return folder, Database.fresh(folder, database_url), False
    (kept / "files" / "temp").mkdir(parents=True, exist_ok=True)
    if not is_postgres(database_url):
        return kept, Database.fresh(kept, None), True
    assert database_url is not None
    record = kept / "postgresql-database"
    if not record.exists():
        record.write_text(Database.fresh(kept, database_url).url + "\n")
    return kept, Database(record.read_text().strip()), True


def run(
    loadgen: LoadGenerator,
    amqp_url: str,
    size: int,
    count: int,
    database_url: str | None,
    *,
    kept: Path | None = None,
    console: bool = True,
    measure: bool = True,
) -> dict[str, Any]:
    folder, database, keep = _data(kept, database_url)
    names = Names.fresh("console")
    storage_root = (folder / "files").as_uri()
    values = ours.settings_for(amqp_url, names, database.url, storage_root, "console")
    backend = "postgresql" if is_postgres(database_url) else "sqlite"
    result: dict[str, Any] = {"database": backend, "artifacts": size, "count_per_query": count, "page": PAGE}
    result["host"] = host_label()
    try:
        if keep:  # the files of what an earlier run seeded first: the worker's start-up recovery looks for them
            place_recent_files(folder / "files", asyncio.run(_seeded(database.url)))
        started = time.perf_counter()
        # the worker migrates (a kept database: the revisions since, which may rewrite a table of millions)
        ServerProcess(ours.main, values, name="bench-console-schema").start(timeout_s=3600).stop()
        result["migrate_seconds"] = round(time.perf_counter() - started, 1)
        print(f"console on {backend}: migrated in {result['migrate_seconds']:.1f} s", flush=True)
        print(f"  seeding up to {size:,} artifacts", flush=True)
        result["seed_seconds"] = round(asyncio.run(seed(database.url, size, storage_root)), 1)
        place_recent_files(folder / "files", size)
        print(f"  seeded in {result['seed_seconds']:.0f} s", flush=True)
        if not measure:
            return result
        worker = ServerProcess(ours.main, values, name="bench-console-worker").start()
        try:
            result["shape"] = asyncio.run(_shapes(amqp_url, names.exchange, storage_root, size))
            print(f"  shape: {result['shape']}", flush=True)
            result["bus"] = measure_bus(loadgen, names.exchange, size, count)
        finally:
            worker.stop()
        result["console"] = {}
        if console and _console_ready():
            for who, admin in (("reader", False), ("admin", True)):
                print(f"  console as {CONSOLE_USER} ({who})", flush=True)
                result["console"][who] = run_console(amqp_url, names, values, size, count, admin)
        else:
            print("  the console's artifact pages not measured: over the bus only", flush=True)
    finally:
        asyncio.run(delete_topology(amqp_url, names, ["console"]))
        if not keep:
            database.drop()
            shutil.rmtree(folder, ignore_errors=True)
    return result


def table(result: dict[str, Any]) -> str:
    shape = result.get("shape", {})
    rows, lineage = shape.get("page_rows", {}), shape.get("lineage", {})
    lines = [
        f"the console's queries on {result['database']}, {result['artifacts']:,} artifacts, page of {result['page']}, "
        f"1 request in flight (target: server time p50 < {TARGET_MS:.0f} ms)",
        host_line(result["host"]),
        f"migrated in {result.get('migrate_seconds', 0):.0f} s, seeded in {result['seed_seconds']:.0f} s (to the size "
        f"asked for); lineage: both ways, depth 3, {lineage.get('roots')} roots, "
        f"{lineage.get('nodes_mean')} nodes on average (max {lineage.get('nodes_max')}, "
        f"{lineage.get('hidden_mean')} hidden from bench-agent), {lineage.get('edges_mean')} edges",
        "",
        "over the bus (list_artifacts / get_lineage as bench-agent, an ordinary agent):",
        f"{'query':22} {'rows':>5} {'p50 ms':>8} {'p99 ms':>8}",
    ]
    for label, q in result["bus"].items():
        lines.append(f"{label:22} {rows.get(label, ''):>5} {q['p50_ms']:8.2f} {q['p99_ms']:8.2f}")
    worst = max(q["p50_ms"] for q in result["bus"].values())
    for who, measured in result.get("console", {}).items():
        lines += [
            "",
            f"through the console as {CONSOLE_USER} ({who}): Server-Timing app, and the HTTP client's wall time",
            f"{'page':22} {'app p50':>8} {'app p95':>8} {'app p99':>8} {'wall p50':>9} {'wall p95':>9} {'bytes':>8}",
        ]
        for label, q in measured.items():
            lines.append(
                f"{label:22} {q['app_p50_ms']:8.1f} {q['app_p95_ms']:8.1f} {q['app_p99_ms']:8.1f} "
                f"{q['wall_p50_ms']:9.1f} {q['wall_p95_ms']:9.1f} {q['bytes']:8,}"
            )
            if q["errors"]:
                lines.append(f"  {q['errors']} error pages, the first: {q['first_error']}")
            worst = max(worst, q["app_p50_ms"])
    if not result.get("console"):
        lines += ["", "the console's pages were not measured (--bus-only)"]
    failed = sum(q["errors"] for measured in result.get("console", {}).values() for q in measured.values())
    verdict = "within" if worst < TARGET_MS and not failed else "OVER" if worst >= TARGET_MS else "errors beside"
    lines += ["", f"worst p50 {worst:.1f} ms: {verdict} the target" + (f" ({failed} error pages)" if failed else "")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL URL: a fresh database there; default SQLite")
    parser.add_argument("--artifacts", type=int, default=1_000_000)
    parser.add_argument("--count", type=int, default=200, help="requests per query, over the bus and the console")
    parser.add_argument("--out", type=Path, default=Path("docs/bench"), help="folder for the JSON and the table")
    parser.add_argument("--keep", type=Path, default=None, help="a folder keeping the seeded data for the next run")
    parser.add_argument("--bus-only", action="store_true", help="leave the console's pages out")
    parser.add_argument("--seed-only", action="store_true", help="seed (into --keep) and stop: nothing measured")
    args = parser.parse_args(argv)
    started = time.strftime("%Y%m%d-%H%M%S")
    loadgen = LoadGenerator(args.amqp_url).start()
    try:
        result = run(
            loadgen,
            args.amqp_url,
            args.artifacts,
            args.count,
            args.database_url,
            kept=args.keep,
            console=not args.bus_only,
            measure=not args.seed_only,
        )
        if args.seed_only:
            print(f"seeded: {result['artifacts']:,} artifacts on {result['database']}")
            return 0
    finally:
        loadgen.stop()
    summary = table(result)
    print("\n" + summary)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"console-{result['database']}-{started}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    command = "python -m bench.console " + " ".join(argv if argv is not None else sys.argv[1:])
    stem.with_suffix(".txt").write_text(f"{command}\n\n{summary}\n")
    print(f"wrote {stem}.json and .txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
