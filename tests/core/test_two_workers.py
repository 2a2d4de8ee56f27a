"""Two workers on one queue and one PostgreSQL: duplicates racing each other still have exactly one effect."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from sqlalchemy import func, select

from contracts import make_command, topology
from service.settings import Settings
from service.store import inbox
from service.store.engine.db import create_engine
from service.store.models import Artifact, InboxRecord, Thread, ThreadMessageRow
from service.transport.worker import Worker
from tests.support.artifacts import manifest_for
from tests.support.broker import ADMIN_AMQP
from tests.support.bus import Bus, output
from tests.support.workers import make_settings, running_together

UNIQUE_ARTIFACTS = 1500
ARTIFACT_SAME_ID = 500  # the same envelope published twice
ARTIFACT_SAME_KEY = 250  # the same idempotency key under a new envelope id
ARTIFACT_RETRY_NO_KEY = 250  # the same manifest again, new envelope id, no key: answered already_exists
THREADS = 25
UNIQUE_SAVES = 1500
SAVE_SAME_ID = 500
SAVE_SAME_KEY = 500
TOTAL = (
    UNIQUE_ARTIFACTS
    + ARTIFACT_SAME_ID
    + ARTIFACT_SAME_KEY
    + ARTIFACT_RETRY_NO_KEY
    + UNIQUE_SAVES
    + SAVE_SAME_ID
    + SAVE_SAME_KEY
)
REQUESTER = {"requester_id": "agent-scale"}


@dataclass(frozen=True, slots=True)
class Publish:
    body: bytes
    group: str
    """Publishes of one group must all get the same stored reply."""
    kind: str


@dataclass(slots=True)
class Plan:
    publishes: list[Publish] = field(default_factory=list)
    retry_pairs: list[tuple[str, str]] = field(default_factory=list)
    saves_per_thread: Counter[str] = field(default_factory=Counter)
    unique_save_groups: dict[str, str] = field(default_factory=dict)
    """group → thread id, for the saves that each add one message."""

    def add(self, action: str, params: dict[str, Any], kind: str, group: str | None = None, **data: Any) -> Publish:
        """A new envelope; ``group`` names the command it duplicates (by idempotency key), if any."""
        envelope = make_command(action, params, source="agent-scale", context=REQUESTER, **data)
        publish = Publish(envelope.to_json_bytes(), group or envelope.id, kind)
        self.publishes.append(publish)
        return publish


def build_plan(storage_root: Path) -> Plan:
    """5,000 publishes, every duplicate right behind its original so the two workers take them at once."""
    plan = Plan()
    saves = iter(range(UNIQUE_SAVES))
    for i in range(UNIQUE_ARTIFACTS):
        manifest = manifest_for(storage_root, f"artifact {i} {uuid.uuid4()}".encode(), trace_id=f"trace-{i % 40}")
        key = f"art-key-{i}" if ARTIFACT_SAME_ID <= i < ARTIFACT_SAME_ID + ARTIFACT_SAME_KEY else None
        original = plan.add("register_artifact", {"manifest": manifest}, "artifact", idempotency_key=key)
        if i < ARTIFACT_SAME_ID:
            plan.publishes.append(Publish(original.body, original.group, "artifact:same-id"))
        elif key is not None:
            params = {"manifest": manifest}
            plan.add("register_artifact", params, "artifact:same-key", original.group, idempotency_key=key)
        elif i < ARTIFACT_SAME_ID + ARTIFACT_SAME_KEY + ARTIFACT_RETRY_NO_KEY:
            retry = plan.add("register_artifact", {"manifest": manifest}, "artifact:retry")
            plan.retry_pairs.append((original.group, retry.group))
        _add_save(plan, next(saves))
    for j in saves:
        _add_save(plan, j)
    assert len(plan.publishes) == TOTAL
    return plan


def _add_save(plan: Plan, j: int) -> None:
    thread_id = f"thread-{j % THREADS}"
    params = {"thread_id": thread_id, "messages": [{"id": str(uuid.uuid4()), "role": "user", "content": f"m{j}"}]}
    key = f"save-key-{j}" if SAVE_SAME_ID <= j < SAVE_SAME_ID + SAVE_SAME_KEY else None
    original = plan.add("save_thread", params, "save", idempotency_key=key)
    plan.saves_per_thread[thread_id] += 1
    plan.unique_save_groups[original.group] = thread_id
    if j < SAVE_SAME_ID:
        plan.publishes.append(Publish(original.body, original.group, "save:same-id"))
    elif key is not None:
        plan.add("save_thread", params, "save:same-key", original.group, idempotency_key=key)


@pytest.fixture
async def two_workers(amqp_url: str, pg_url: str, storage_root: Path) -> AsyncIterator[list[Worker]]:
    first = make_settings(amqp_url, pg_url, storage_root, node_name="storage-a")
    async with running_together(first, first.model_copy(update={"node_name": "storage-b"})) as workers:
        yield workers


@pytest.mark.timeout(900)
async def test_two_workers_5000_commands_with_duplicates(
    two_workers: list[Worker], storage_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """5,000 commands with racing duplicates over two workers: one reply per publish, one effect per command."""
    conflicts = Counter[str]()
    record = inbox.record

    async def counting_record(conn: Any, **kwargs: Any) -> bool:
        won = await record(conn, **kwargs)
        if not won:
            conflicts[kwargs["action"]] += 1
        return won

    monkeypatch.setattr(inbox, "record", counting_record)
    handled = Counter[str]()
    for worker in two_workers:
        node = worker.settings.node_name
        worker.on_outcome.append(lambda outcome, _elapsed, node=node: handled.update([node]))

    plan = build_plan(storage_root)
    settings = two_workers[0].settings
    conn = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await conn.channel()
        exchange = await channel.get_exchange(settings.exchange)
        replies = await channel.declare_queue(exclusive=True)
        by_correlation: dict[str, Publish] = {}
        started = time.monotonic()
        for start in range(0, TOTAL, 250):
            batch = []
            for publish in plan.publishes[start : start + 250]:
                correlation_id = str(uuid.uuid4())
                by_correlation[correlation_id] = publish
                message = aio_pika.Message(
                    publish.body,
                    correlation_id=correlation_id,
                    reply_to=replies.name,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    content_type="application/json",
                )
                batch.append(exchange.publish(message, routing_key=topology.ROUTING_KEY_ANY))
            await asyncio.gather(*batch)
        got: dict[str, dict[str, Any]] = {}
        duplicated_replies = 0
        async with asyncio.timeout(600), replies.iterator() as stream:
            async for message in stream:
                await message.ack()
                assert message.correlation_id in by_correlation, "a reply to nothing we sent"
                if message.correlation_id in got:
                    duplicated_replies += 1
                got[message.correlation_id] = json.loads(message.body)
                if len(got) == TOTAL:
                    break
        elapsed = time.monotonic() - started
        listed_artifacts = await _page_all(settings, "list_artifacts", "artifacts", "id")
        listed_threads = await _page_all(settings, "list_threads", "threads", "thread_id")
        while two_workers:  # stop drains: whatever a worker still had to publish is out before stop returns
            await two_workers.pop().stop()
        leftover = (await channel.declare_queue(replies.name, passive=True)).declaration_result.message_count
    finally:
        await conn.close()

    duplicates = TOTAL - UNIQUE_ARTIFACTS - ARTIFACT_RETRY_NO_KEY - UNIQUE_SAVES
    print(
        f"\n{TOTAL} commands ({duplicates} duplicates, {ARTIFACT_RETRY_NO_KEY} re-registrations without key) "
        f"on 2 workers in {elapsed:.1f}s ({TOTAL / elapsed:.0f}/s); replies {len(got)}; per worker {dict(handled)}; "
        f"duplicates resolved by the inbox insert inside the transaction {dict(conflicts)}"
    )
    # every publish answered exactly once, and only with results
    assert len(got) == TOTAL and duplicated_replies == 0 and leftover == 0
    codes = Counter(r["data"]["error"]["code"] for r in got.values() if r["type"] == "ai.team.error")
    assert not codes, f"errors where every command should succeed: {codes}"
    assert len(handled) == 2 and min(handled.values()) > 0, f"one worker did nothing: {handled}"
    assert sum(conflicts.values()) > 0, "no duplicate ever raced its twin: the test did not exercise two workers"

    # all publishes of one command (same id or same key) got the very same stored reply
    by_group: dict[str, set[str]] = defaultdict(set)
    for correlation_id, reply in got.items():
        by_group[by_correlation[correlation_id].group].add(reply["id"] + json.dumps(reply["data"], sort_keys=True))
    assert all(len(seen) == 1 for seen in by_group.values())
    outputs = {by_correlation[c].group: r["data"]["output"] for c, r in got.items()}
    for first, retry in plan.retry_pairs:
        assert sorted([outputs[first]["registered"], outputs[retry]["registered"]]) == [False, True]

    # keyset cursors page through everything exactly once, newest first, whichever worker serves a page
    assert len(listed_artifacts) == len(set(listed_artifacts)) == UNIQUE_ARTIFACTS
    assert sorted(listed_threads) == sorted(plan.saves_per_thread)
    await _check_effects(settings, storage_root, plan, outputs, listed_artifacts)


async def _page_all(settings: Settings, action: str, items: str, id_field: str) -> list[str]:
    """Every item of a listing, following next_cursor page by page."""
    bus = await Bus(settings.amqp_url, settings.exchange, settings.dlq).open()
    found: list[str] = []
    cursor = None
    try:
        while True:
            params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            page = output(await bus.call(action, params, amqp=ADMIN_AMQP))
            assert page["count"] == len(page[items])
            found.extend(item[id_field] for item in page[items])
            if (cursor := page["next_cursor"]) is None:
                return found
    finally:
        await bus.close()


async def _check_effects(
    settings: Settings, storage_root: Path, plan: Plan, outputs: dict[str, Any], listed: list[str]
) -> None:
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            artifact_ids = set((await conn.execute(select(Artifact.__table__.c.id))).scalars())
            inbox_rows = (await conn.execute(select(func.count()).select_from(InboxRecord.__table__))).scalar_one()
            threads = {r.id: r for r in await conn.execute(select(Thread.__table__))}
            messages = ThreadMessageRow.__table__
            seqs: dict[str, list[int]] = defaultdict(list)
            for row in await conn.execute(select(messages.c.thread_id, messages.c.seq)):
                seqs[row.thread_id].append(row.seq)
    finally:
        await engine.dispose()

    # one row and one file per artifact; every temp file moved exactly once
    assert len(artifact_ids) == UNIQUE_ARTIFACTS and set(listed) == artifact_ids
    stored = [p for p in (storage_root / "artifacts").rglob("*") if p.is_file()]
    assert sorted(p.stem for p in stored) == sorted(artifact_ids)
    assert not [p for p in (storage_root / "temp").rglob("*") if p.is_file()]
    # one inbox record per executed envelope: duplicates by id or key were answered from it, not recorded
    assert inbox_rows == UNIQUE_ARTIFACTS + ARTIFACT_RETRY_NO_KEY + UNIQUE_SAVES

    # threads: one version and one message per distinct save, in an unbroken sequence
    assert set(threads) == set(plan.saves_per_thread)
    versions: dict[str, list[int]] = defaultdict(list)
    for group, thread_id in plan.unique_save_groups.items():
        versions[thread_id].append(outputs[group]["version"])
    for thread_id, n in plan.saves_per_thread.items():
        row = threads[thread_id]
        assert (row.version, row.message_count, row.next_seq) == (n, n, n), thread_id
        assert sorted(seqs[thread_id]) == list(range(n)), thread_id
        assert sorted(versions[thread_id]) == list(range(1, n + 1)), f"two saves got one version on {thread_id}"
