"""Quotas per trace (issue 20, item 5): STORAGE_TRACE_MAX_ARTIFACTS / STORAGE_TRACE_MAX_BYTES.

An agent that fills its trace gets a final RESOURCE_EXHAUSTED naming the limit and the trace's usage (never
another trace's), the trace's one quota warning arrives on the bus at 80%, a replayed envelope is not counted
twice, deleted-by-expiry artifacts free their share, and two workers on one PostgreSQL count exactly.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from sqlalchemy import insert, select

from buffer import StorageClient
from contracts import RegisterArtifactOutput, ResourceExhausted, make_command, topology, utc_now
from service.startup.codes import StartupError
from service.startup.settings import load_settings
from service.store.engine.db import create_engine
from service.store.engine.schema import migrate
from service.store.models import Artifact, TraceUsage
from tests.support.artifacts import manifest_for
from tests.support.bus import Bus, error, output
from tests.support.client import client_settings
from tests.support.wire import ADMIN_AMQP
from tests.support.worker_process import WorkerProcess, worker_env
from tests.support.workers import Outcomes, Workers, delete_topology

CONTEXT = {"requester_id": "agent-quota", "requester_trace_id": "trace-q"}


async def _register(bus: Bus, root: Path, data: bytes, trace_id: str = "trace-q", **fields: Any) -> dict[str, Any]:
    """The whole reply of one registration into ``trace_id``."""
    manifest = manifest_for(root, data, trace_id=trace_id, **fields)
    return await bus.call("register_artifact", {"manifest": manifest}, context=CONTEXT)


class Events(list[dict[str, Any]]):
    """EVENT bodies in arrival order (each with its ``_routing_key``), awaitable by count."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    async def arrived(self, count: int, timeout_s: float = 10) -> None:
        async with asyncio.timeout(timeout_s):
            while len(self) < count:
                self.changed.clear()
                await self.changed.wait()


@asynccontextmanager
async def quota_warnings(bus: Bus) -> AsyncIterator[Events]:
    """Every ``evt.storage.quota_warning`` on the worker's exchange, through a queue of the test's own."""
    assert bus.channel is not None and bus.exchange is not None
    queue = await bus.channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(bus.exchange, routing_key=topology.EVT_STORAGE_QUOTA_WARNING)
    received = Events()

    async def on_event(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        received.append({**json.loads(message.body), "_routing_key": message.routing_key})
        received.changed.set()

    tag = await queue.consume(on_event, no_ack=True)
    try:
        yield received
    finally:
        await queue.cancel(tag)


async def test_the_registration_past_the_limit_is_refused_with_the_traces_usage(
    workers: Workers, storage_root: Path
) -> None:
    """Over raw AMQP: three fit, the fourth is RESOURCE_EXHAUSTED (final, reason trace_quota, limit and usage),
    nothing of it is stored and its temp file stays; another trace is not affected; the refusal is the stored
    answer to its envelope."""
    _, bus = await workers.start(trace_max_artifacts=3)
    for i in range(3):
        output(await _register(bus, storage_root, f"fits {i}".encode()))
    manifest = manifest_for(storage_root, b"one too many", trace_id="trace-q")
    envelope = make_command("register_artifact", {"manifest": manifest}, source="agent-test", context=CONTEXT)
    refused = error(await bus.send(envelope.to_json_bytes(), envelope.id))
    assert refused["code"] == "RESOURCE_EXHAUSTED" and refused["retryable"] is False
    assert refused["details"] == {
        "reason": "trace_quota",
        "trace_id": "trace-q",
        "quota": "artifacts",
        "limit": 3,
        "usage": 3,
        "requested": 1,
    }
    assert "trace-q" in refused["message"]
    missing = error(await bus.call("get_artifact", {"artifact_id": manifest["id"]}, context=CONTEXT))
    assert missing["code"] == "NOT_FOUND"
    assert Path(manifest["uri"].removeprefix("file://")).exists(), "a refusal never consumes the upload"
    again = error(await bus.send(envelope.to_json_bytes(), envelope.id))
    assert again == refused, "a replay of the refused envelope gets the stored refusal"

    listed = output(await bus.call("list_artifacts", {"trace_id": "trace-q"}, context=CONTEXT))
    assert listed["count"] == 3
    other = output(await _register(bus, storage_root, b"another trace", trace_id="trace-other"))
    assert other["registered"] is True


async def test_refusals_in_a_burst_never_cost_a_neighbour(workers: Workers, storage_root: Path) -> None:
    """30 registrations at once, half into a trace with room for 4, half into another trace: exactly 4 of the
    first half and all of the second are stored, whatever groups the writer formed of them."""
    _, bus = await workers.start(trace_max_artifacts=4)
    full = [manifest_for(storage_root, f"full {i}".encode(), trace_id="trace-q") for i in range(15)]
    roomy = [manifest_for(storage_root, f"roomy {i}".encode(), trace_id=f"trace-{i}") for i in range(15)]
    interleaved = [m for pair in zip(full, roomy, strict=True) for m in pair]
    replies = await asyncio.gather(
        *(bus.call("register_artifact", {"manifest": m}, context=CONTEXT) for m in interleaved)
    )
    outcomes = [r["type"] == "ai.team.result" for r in replies]
    assert sum(outcomes[0::2]) == 4 and all(outcomes[1::2])
    assert {error(r)["details"]["usage"] for r in replies[0::2] if r["type"] != "ai.team.result"} == {4}


async def test_the_bytes_limit_counts_sizes_and_names_the_bytes(workers: Workers, storage_root: Path) -> None:
    """STORAGE_TRACE_MAX_BYTES=100: 60 + 40 fit exactly, 1 more byte does not; a first file larger than the
    whole limit is refused in a fresh trace with usage 0."""
    _, bus = await workers.start(trace_max_bytes=100)
    output(await _register(bus, storage_root, b"x" * 60))
    over = error(await _register(bus, storage_root, b"y" * 50))
    assert over["code"] == "RESOURCE_EXHAUSTED" and over["retryable"] is False
    assert over["details"] == {
        "reason": "trace_quota",
        "trace_id": "trace-q",
        "quota": "bytes",
        "limit": 100,
        "usage": 60,
        "requested": 50,
    }
    output(await _register(bus, storage_root, b"z" * 40))
    full = error(await _register(bus, storage_root, b"!"))
    assert full["details"]["usage"] == 100 and full["details"]["requested"] == 1
    huge = error(await _register(bus, storage_root, b"h" * 101, trace_id="trace-fresh"))
    assert huge["details"] == {
        "reason": "trace_quota",
        "trace_id": "trace-fresh",
        "quota": "bytes",
        "limit": 100,
        "usage": 0,
        "requested": 101,
    }
    empty = output(await _register(bus, storage_root, b"", trace_id="trace-q"))
    assert empty["registered"] is True, "an empty file adds nothing to a full bytes quota"


async def test_the_warning_is_published_once_when_the_trace_reaches_80_percent(
    workers: Workers, storage_root: Path
) -> None:
    """Limit 5: the 4th registration (80%) publishes one evt.storage.quota_warning EVENT for the trace; the 5th,
    the refused 6th and a trace under 80% publish none."""
    _, bus = await workers.start(trace_max_artifacts=5)
    async with quota_warnings(bus) as events:
        for i in range(3):
            output(await _register(bus, storage_root, f"below {i}".encode()))
            output(await _register(bus, storage_root, f"calm {i}".encode(), trace_id="trace-calm"))
        await asyncio.sleep(0.3)
        assert events == [], "no warning below 80%"
        output(await _register(bus, storage_root, b"the fourth"))
        await events.arrived(1)
        output(await _register(bus, storage_root, b"the fifth"))
        error(await _register(bus, storage_root, b"the sixth"))
        await asyncio.sleep(0.5)
    [event] = events
    assert event["type"] == "ai.team.event" and event["specversion"] == "1.0"
    assert event["_routing_key"] == "evt.storage.quota_warning"
    assert event["subject"] == "trace-q"
    assert event["data"]["event_type"] == "evt.storage.quota_warning"
    assert event["data"]["severity"] == "WARNING"
    warned = event["data"]["event_data"]
    assert {key: warned[key] for key in ("trace_id", "quota", "limit", "usage", "threshold_percent")} == {
        "trace_id": "trace-q",
        "quota": "artifacts",
        "limit": 5,
        "usage": 4,
        "threshold_percent": 80,
    }, "the fields of the warning as it was before it became a change"
    assert warned["kind"] == "quota_warning" and event["id"] == str(warned["change_id"])


async def test_a_replayed_envelope_is_not_counted_twice(workers: Workers, storage_root: Path) -> None:
    """Limit 2: the same accepted envelope sent three times counts once, so a second artifact still fits."""
    _, bus = await workers.start(trace_max_artifacts=2)
    manifest = manifest_for(storage_root, b"sent thrice", trace_id="trace-q")
    envelope = make_command("register_artifact", {"manifest": manifest}, source="agent-test", context=CONTEXT)
    first = output(await bus.send(envelope.to_json_bytes(), envelope.id))
    for _ in range(2):  # one at a time: the agent matches replies by correlation id
        assert output(await bus.send(envelope.to_json_bytes(), envelope.id)) == first
    retry = output(await bus.call("register_artifact", {"manifest": manifest}, context=CONTEXT))
    assert retry["already_exists"] is True, "a new envelope for the same artifact: already there, not counted"
    output(await _register(bus, storage_root, b"the second"))
    third = error(await _register(bus, storage_root, b"the third"))
    assert third["details"]["usage"] == 2


async def test_a_deletion_frees_its_share_and_a_restore_takes_it_back(workers: Workers, storage_root: Path) -> None:
    """Limit 2: deleting one (a tombstone) makes room for one, deleting it again frees nothing more; an admin's
    restore counts it back even past the limit, so the next registration is refused with usage 3."""
    _, bus = await workers.start(trace_max_artifacts=2)
    first = output(await _register(bus, storage_root, b"first"))["artifact_id"]
    output(await _register(bus, storage_root, b"second"))
    assert error(await _register(bus, storage_root, b"no room"))["details"]["usage"] == 2
    for deleted in (True, False):
        gone = output(await bus.call("delete_artifact", {"artifact_id": first}, amqp=ADMIN_AMQP))
        assert gone["deleted"] is deleted
    output(await _register(bus, storage_root, b"in its place"))
    assert error(await _register(bus, storage_root, b"still no room"))["details"]["usage"] == 2
    output(await bus.call("restore_artifact", {"artifact_id": first}, amqp=ADMIN_AMQP))
    assert error(await _register(bus, storage_root, b"over by a restore"))["details"]["usage"] == 3


async def test_expiry_frees_the_quota(workers: Workers, storage_root: Path) -> None:
    """Artifacts removed by their retention (cleanup) leave the trace's usage: new ones fit again."""
    _, bus = await workers.start(trace_max_artifacts=2, cleanup_interval_s=0)
    output(await _register(bus, storage_root, b"short-lived 1", retention="1s"))
    output(await _register(bus, storage_root, b"short-lived 2", retention="1s"))
    assert error(await _register(bus, storage_root, b"no room"))["code"] == "RESOURCE_EXHAUSTED"
    await asyncio.sleep(1.2)
    done = output(await bus.call("cleanup", {"scopes": ["expired_artifacts"]}, amqp=ADMIN_AMQP))
    assert done["counts"]["expired_artifacts"] == 2, done
    for i in range(2):
        output(await _register(bus, storage_root, f"room again {i}".encode()))
    assert error(await _register(bus, storage_root, b"full again"))["details"]["usage"] == 2


async def test_the_client_raises_the_typed_error_and_neither_retries_nor_buffers(
    workers: Workers, tmp_path: Path
) -> None:
    """Through the client library: ResourceExhausted with retryable False and the details; one attempt reached
    the worker, nothing was spilled to the buffer."""
    worker, _ = await workers.start(trace_max_artifacts=2)
    seen = Outcomes(worker)
    async with StorageClient(**client_settings(worker, tmp_path / "buffer"), trace_id="trace-c") as storage:
        for i in range(2):
            fits = await storage.upload_artifact(f"ok {i}".encode(), artifact_type="r")
            assert isinstance(fits, RegisterArtifactOutput)
        with pytest.raises(ResourceExhausted) as refused:
            await storage.upload_artifact(b"no room", artifact_type="r")
        assert refused.value.retryable is False
        assert refused.value.details["reason"] == "trace_quota"
        assert refused.value.details["trace_id"] == "trace-c"
        assert refused.value.details["limit"] == 2 and refused.value.details["usage"] == 2
        assert not storage.buffer.has_pending(), "a final refusal is not buffered for replay"
    await asyncio.sleep(0.2)
    codes = [o.reply.code for o in seen.seen if o.action == "register_artifact" and o.reply is not None]
    assert codes == ["OK", "OK", "RESOURCE_EXHAUSTED"], "the refusal was not retried"


@pytest.mark.parametrize("value", ["0", "-3", "ten", "1.5"])
@pytest.mark.parametrize("name", ["STORAGE_TRACE_MAX_ARTIFACTS", "STORAGE_TRACE_MAX_BYTES"])
def test_a_bad_limit_stops_the_worker_with_one_line(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(StartupError) as refused:
        load_settings()
    line = str(refused.value)
    assert "\n" not in line and name in line, line


async def test_the_migration_counts_the_artifacts_already_there(database_url: str, storage_root: Path) -> None:
    """Revision 0012 backfills every trace's usage from its live artifacts."""
    engine = create_engine(database_url)
    try:
        await migrate(engine, "0011")
        rows = [("trace-a", 10), ("trace-a", 5), ("trace-b", 7)]
        async with engine.begin() as conn:
            for trace_id, size in rows:
                await conn.execute(insert(Artifact.__table__).values(_row(trace_id, size)))
        await migrate(engine)
        async with engine.connect() as conn:
            usage = TraceUsage.__table__
            found = {r.trace_id: (r.artifacts, r.size_bytes) for r in await conn.execute(select(usage))}
        assert found == {"trace-a": (2, 15), "trace-b": (1, 7)}
    finally:
        await engine.dispose()


def _row(trace_id: str, size: int) -> dict[str, Any]:
    now = utc_now()
    artifact_id = f"art_{uuid.uuid4()}"
    return {
        "id": artifact_id,
        "version": 1,
        "trace_id": trace_id,
        "created_by": "agent-test",
        "created_at": now,
        "artifact_type": "report",
        "uri": f"file:///x/{artifact_id}",
        "size_bytes": size,
        "checksum": "sha256:" + "0" * 64,
        "status": "completed",
        "visibility": "trace",
        "registered_at": now,
        "manifest": "{}",
    }


async def test_two_worker_processes_on_postgres_accept_exactly_the_limit(
    amqp_url: str, pg_url: str, tmp_path: Path
) -> None:
    """Two worker processes on one queue and one PostgreSQL, 120 registrations into one trace at once (a third of
    them also sent twice, the twins racing), limit 40: exactly 40 accepted, 80 refused with the limit, both workers
    took part, and the stored usage is the 40 rows."""
    limit, sent = 40, 120
    env = worker_env(
        amqp_url,
        tmp_path,
        DATABASE_URL=pg_url,
        STORAGE_MIGRATE_ON_START="true",
        STORAGE_TRACE_MAX_ARTIFACTS=str(limit),
        STORAGE_PREFETCH="10",
        STORAGE_NODE_REGISTRY="false",
    )
    first, second = WorkerProcess(env, tmp_path), WorkerProcess(env, tmp_path)
    try:
        await first.start()
        await second.start()
        manifests = [
            manifest_for(first.storage_root, f"racing {i}".encode(), trace_id="trace-race") for i in range(sent)
        ]
        envelopes = [
            make_command("register_artifact", {"manifest": m}, source="agent-test", context=CONTEXT) for m in manifests
        ]
        async with Bus(amqp_url, first.exchange, first.dlq) as bus:
            for envelope in envelopes[::3]:  # a third sent twice ahead (a redelivery): the twins race each other
                await bus.publish(envelope.to_json_bytes(), correlation_id=f"twin-{envelope.id}", reply=False)
            replies = await asyncio.gather(*(bus.send(e.to_json_bytes(), e.id, timeout=60) for e in envelopes))
    finally:
        await first.terminate()
        await second.terminate()
        await delete_topology(first)
    accepted = [r for r in replies if r["type"] == "ai.team.result"]
    refused = [error(r) for r in replies if r["type"] != "ai.team.result"]
    assert len(accepted) == limit, first.output() + second.output()
    assert len(refused) == sent - limit
    assert all(e["code"] == "RESOURCE_EXHAUSTED" and e["details"]["limit"] == limit for e in refused)
    assert {e["details"]["usage"] for e in refused} == {limit}
    taken = [sum(run.count("register_artifact ") for run in process.runs) for process in (first, second)]
    assert sum(taken) == sent + len(envelopes[::3]) and min(taken) > 0, f"both workers take part: {taken}"
    engine = create_engine(pg_url)
    try:
        async with engine.connect() as conn:
            stored = (await conn.execute(select(TraceUsage.__table__))).all()
            rows = (await conn.execute(select(Artifact.__table__.c.id).where(Artifact.trace_id == "trace-race"))).all()
    finally:
        await engine.dispose()
    assert [(r.trace_id, r.artifacts) for r in stored] == [("trace-race", limit)]
    assert len(rows) == limit
