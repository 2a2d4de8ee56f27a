"""Case 5: one command that always fails inside its handler, among 999 good ones, plus one non-command.

The bad command is a ``delete_artifact`` the worker runs with ``STORAGE_FAULTS=raise_in:delete_artifact``:
its job deletes the row, then raises an unexpected exception inside the writer's transaction. It must get
an ERROR (INTERNAL), its effect must roll back, it must not be retried in a loop, the worker must not
restart, and the 999 ``register_artifact`` commands around it (some in the same write batch) must complete.
A body that is not a command at all goes to the dead-letter queue, once.
"""

from __future__ import annotations

import random

import pytest

from contracts import make_command
from tests.support.fault_commands import register_commands, reply_kind
from tests.support.store_view import StoreView
from tests.support.tally import Tally
from tests.support.worker_process import SpawnWorker

pytestmark = pytest.mark.faults

GOOD = 999
REPLY_TIMEOUT_S = 120


async def test_command_failing_inside_handler_gets_error_and_neighbours_complete(
    spawn_worker: SpawnWorker, lean_bus_for
) -> None:
    """An agent whose command always crashes its handler gets an ERROR, while 999 other commands sent
    around it all complete and the worker keeps running."""
    tally = Tally("case5 poison command")
    worker = await spawn_worker(faults="raise_in:delete_artifact")
    bus = await lean_bus_for(worker)

    victim = register_commands(worker.storage_root, 1, tag="victim")[0]
    await bus.publish(victim.body, victim.id)
    assert not await bus.wait_replies([victim.id], REPLY_TIMEOUT_S), "setup: the victim artifact was not registered"

    good = register_commands(worker.storage_root, GOOD, tag="good")
    bad = make_command("delete_artifact", {"artifact_id": victim.artifact_id}, source="agent-faults")
    stream = [(c.id, c.body) for c in good]
    at = random.randrange(len(stream))
    stream.insert(at, (bad.id, bad.to_json_bytes()))
    tally.commands = len(stream)
    pid = worker.pid
    # In stream order; the bad one as an admin (the broker-validated user_id) so that it reaches its handler.
    await bus.publish_many(stream[:at])
    await bus.publish(bad.to_json_bytes(), bad.id, **bus.admin)
    await bus.publish_many(stream[at + 1 :])
    await bus.publish(b"\x00\xffnot json at all", None, reply=False)
    tally.lost += sorted(await bus.wait_replies([cid for cid, _ in stream], REPLY_TIMEOUT_S))

    for c in good:
        for reply in bus.replies.get(c.id, []):
            if reply_kind(reply) != "RESULT" or not reply["data"]["output"]["registered"]:
                tally.unexpected.append(f"{c.id}: {reply['data']}")
        if len(bus.replies.get(c.id, [])) > 1:
            tally.duplicated.append(f"{c.id}: answered {len(bus.replies[c.id])} times")
    bad_replies = bus.replies.get(bad.id, [])
    if len(bad_replies) > 1:
        tally.duplicated.append(f"bad command answered {len(bad_replies)} times")
    if bad_replies and reply_kind(bad_replies[0]) != "ERROR INTERNAL":
        tally.unexpected.append(f"bad command got {bad_replies[0]['data']}")
    if bad_replies and bad_replies[0]["data"]["error"]["retryable"] is not False:
        tally.unexpected.append("bad command's ERROR says retryable: an agent would loop on it")

    store = StoreView(worker.folder / "storage.db")
    rows = store.artifacts()
    tally.lost += [c.id for c in good if c.artifact_id not in rows]
    if victim.artifact_id not in rows:
        tally.unexpected.append("the failing delete's effect was not rolled back: the victim is gone")
    fired = worker.current.count("fault hook raise_in fired")
    if fired != 1:
        tally.unexpected.append(f"the failing handler ran {fired} times (hot loop)")
    if worker.pid != pid or len(worker.runs) != 1:
        tally.unexpected.append("the worker restarted")
    dead = await bus.drain_queue(worker.dlq)
    if [m.body for m in dead] != [b"\x00\xffnot json at all"]:
        tally.unexpected.append(f"DLQ holds {[m.body[:60] for m in dead]}, expected only the non-command")
    left = await bus.depth(worker.queue)
    if left:
        tally.unexpected.append(f"{left} messages still in the command queue")
    tally.figures.update(
        errors=sum(1 for v in bus.replies.values() for r in v if reply_kind(r) != "RESULT"),
        handler_runs_of_bad=fired,
        dead_lettered=len(dead),
        artifacts=len(rows),
    )
    tally.check()
