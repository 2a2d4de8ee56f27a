"""Case 7: the same 1,000 commands published three times each, shuffled, so copies race each other.

At-least-once delivery means an agent (or the broker, after a lost ack) may hand the worker the same
envelope again, even while the first copy is still being executed. The inbox must turn every copy after
the first into the stored reply: exactly 1,000 effects, and the three replies of a command identical.
"""

from __future__ import annotations

import random

import pytest

from tests.support.fault_commands import first_result, register_commands, same_reply
from tests.support.store_view import StoreView
from tests.support.tally import Tally
from tests.support.worker_process import SpawnWorker

pytestmark = pytest.mark.faults

COMMANDS = 1000
COPIES = 3
REPLY_TIMEOUT_S = 180


async def test_same_command_published_three_times_takes_effect_once(spawn_worker: SpawnWorker, lean_bus_for) -> None:
    """An agent whose 1,000 commands each arrive three times sees 1,000 artifacts and three identical
    replies per command."""
    tally = Tally("case7 triple delivery")
    worker = await spawn_worker()
    bus = await lean_bus_for(worker)
    commands = register_commands(worker.storage_root, COMMANDS, tag="triple")
    copies = [(f"{c.id}#{k}", c.body) for c in commands for k in range(COPIES)]
    seed = random.randrange(1 << 30)
    random.Random(seed).shuffle(copies)
    tally.commands = len(commands)
    await bus.publish_many(copies)
    tally.lost += sorted(await bus.wait_replies([cid for cid, _ in copies], REPLY_TIMEOUT_S))

    store = StoreView(worker.folder / "storage.db")
    rows = store.artifact_ids()
    inbox = store.inbox_ids("register_artifact")
    registered_true = 0
    for c in commands:
        replies = [r for k in range(COPIES) for r in bus.replies.get(f"{c.id}#{k}", [])]
        if len(replies) > COPIES:
            tally.duplicated.append(f"{c.id}: {len(replies)} replies to {COPIES} copies")
        if (first := first_result(tally, c.id, replies)) is None:
            continue
        registered_true += sum(1 for r in replies if r["data"]["output"]["registered"] is True)
        if any(r["data"]["output"]["already_exists"] for r in replies):
            tally.duplicated.append(f"{c.id}: a copy was executed again (already_exists)")
        if not all(same_reply(first, r) for r in replies[1:]):
            tally.unexpected.append(f"{c.id}: the copies got different replies")
        if rows[c.artifact_id] != 1:
            tally.lost.append(f"{c.id}: artifact rows {rows[c.artifact_id]}")
        if inbox[c.id] != 1:
            tally.duplicated.append(f"{c.id}: {inbox[c.id]} inbox records")
    effects = sum(rows.values())
    if effects != COMMANDS:
        tally.unexpected.append(f"{effects} artifacts for {COMMANDS} commands")
    dead = await bus.drain_queue(worker.dlq)
    tally.unexpected += [f"dead-lettered: {m.body[:80]!r}" for m in dead]
    tally.figures.update(
        published=len(copies), effects=effects, replies=sum(len(v) for v in bus.replies.values()), seed=seed
    )
    tally.check()
    assert registered_true == COMMANDS * COPIES
