"""The kill test of the outbox (issue 21): a SIGKILL between commit and publish loses no change event.

Life 1: the publisher stalls before publishing (``stall:before_outbox_publish``) while ``COMMITTED``
registrations commit and are answered; then SIGKILL. Life 2 publishes what life 1 left, then takes
``MORE`` registrations and dies right after the broker confirmed their first events and before their outbox
rows went (``after_outbox_publish@1``): those events are out, and will go out again. Life 3 publishes them
again and answers the rest. A subscriber that drops the ids it has seen must get every registration exactly
once, in commit order (ids growing), and nothing else.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from typing import Any

import pytest

from tests.support.artifacts import manifest_for
from tests.support.bus import Bus, output
from tests.support.change_events import change_events
from tests.support.tally import Tally
from tests.support.worker_process import SpawnWorker
from tests.support.workers import delete_topology

pytestmark = pytest.mark.faults

COMMITTED = 300
MORE = 100
AGENT = {"requester_id": "agent-kill", "requester_trace_id": "trace-kill"}
PUBLISHED_WITHIN_S = 60.0


async def test_no_change_event_is_lost_across_sigkills(spawn_worker: SpawnWorker, database_url: str) -> None:
    tally = Tally("outbox across worker SIGKILL x2")
    worker = await spawn_worker(
        faults="stall:before_outbox_publish", DATABASE_URL=database_url, STORAGE_MIGRATE_ON_START="true"
    )
    bus = await Bus(worker.amqp_url, worker.exchange, worker.dlq).open()
    try:
        async with change_events(worker.amqp_url, worker.exchange) as events:

            async def register(count: int, tag: str) -> list[str]:
                manifests = [manifest_for(worker.storage_root, f"{tag} {i}".encode()) for i in range(count)]
                calls = [bus.call("register_artifact", {"manifest": m}, context=AGENT, timeout=120) for m in manifests]
                replies: list[dict[str, Any]] = await asyncio.gather(*calls)
                return [output(reply)["artifact_id"] for reply in replies]

            first = await register(COMMITTED, "first")  # every one committed and answered
            await asyncio.sleep(0.5)
            assert events.seen == [], "the stalled publisher published something"
            await worker.kill()
            tally.kills += 1

            began = time.monotonic()
            restart_s = await worker.start(faults="after_outbox_publish@1")
            await events.arrived(COMMITTED, unique=True, timeout_s=PUBLISHED_WITHIN_S)
            leftovers_s = time.monotonic() - began
            more = asyncio.create_task(register(MORE, "more"))
            await worker.wait_exit(PUBLISHED_WITHIN_S)  # the fault: confirmed, outbox rows not yet deleted
            tally.kills += 1
            await worker.start()
            second = await asyncio.wait_for(more, PUBLISHED_WITHIN_S)
            await events.arrived(COMMITTED + MORE, unique=True, timeout_s=PUBLISHED_WITHIN_S)
            await asyncio.sleep(1.0)  # a late copy has time to show up
    finally:
        await bus.close()
        await delete_topology(worker)

    registered = first + second
    unique = events.unique()
    counts = Counter(event.change["artifact_id"] for event in unique)
    ids = [event.change_id for event in unique]
    tally.commands = len(registered)
    tally.lost = sorted(set(registered) - set(counts))
    tally.duplicated = sorted(artifact for artifact, n in counts.items() if n > 1)
    tally.unexpected = [f"out of order: {a} then {b}" for a, b in itertools.pairwise(ids) if b <= a]
    tally.unexpected += [e.change["kind"] for e in unique if e.change["kind"] != "artifact_registered"]
    tally.figures.update(
        database=database_url.split(":", 1)[0],
        events_seen=len(events.seen),
        redelivered=len(events.seen) - len(unique),
        restart_s=restart_s,
        leftovers_published_s=leftovers_s,
        after_consuming_s=leftovers_s - restart_s,
    )
    tally.check()
    assert len(events.seen) > len(unique), "the events confirmed before the second kill went out again"
