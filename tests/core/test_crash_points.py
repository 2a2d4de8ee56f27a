"""Case 2: the worker dies right after a commit (before the reply) and right after a reply (before the ack).

50 crashes at each point, through the fault hooks of ``service/faults.py``. The worker runs with prefetch
1, so every crash leaves exactly one command committed and unanswered (or answered and unacked); the
restarted worker gets it again from the broker and must answer from its inbox: one effect per command,
and every copy of a reply equal to the first.
"""

from __future__ import annotations

import json
import signal

import pytest

from tests.support.fault_commands import file_matches, first_result, register_commands, same_reply
from tests.support.store_view import StoreView
from tests.support.tally import Tally
from tests.support.worker_process import SpawnWorker

pytestmark = pytest.mark.faults

CRASHES = 50
EXIT_TIMEOUT_S = 60
REPLY_TIMEOUT_S = 60


@pytest.mark.parametrize("point", ["after_commit", "after_reply"])
async def test_crash_between_commit_reply_and_ack_keeps_one_effect_and_one_reply(
    point: str, spawn_worker: SpawnWorker, lean_bus_for
) -> None:
    """A worker killed 50 times between commit, reply and ack still registers each artifact once and
    answers every copy of a command with the same reply."""
    tally = Tally(f"case2 crash {point}")
    first_faults = point
    # A restarted worker first answers the redelivered command again; with after_reply it must let that
    # reply pass and die on the next one, or it would loop on the same message.
    again_faults = f"{point}@1" if point == "after_reply" else point
    worker = await spawn_worker(faults=first_faults, STORAGE_PREFETCH="1")
    bus = await lean_bus_for(worker)
    commands = register_commands(worker.storage_root, CRASHES, tag=point)
    tally.commands = len(commands)
    await bus.publish_many((c.id, c.body) for c in commands)

    restart_s: list[float] = []
    for crash in range(CRASHES):
        code = await worker.wait_exit(EXIT_TIMEOUT_S)
        fired = worker.current.count(f"fault hook {point} fired")
        if code != -signal.SIGKILL or fired != 1:
            tally.unexpected.append(f"run {crash}: exit {code}, hook fired {fired}x")
        else:
            tally.kills += 1
        restart_s.append(await worker.start(faults=again_faults if crash < CRASHES - 1 else ""))
    missing = await bus.wait_replies([c.id for c in commands], REPLY_TIMEOUT_S)
    tally.lost += sorted(missing)

    # Every command sent once more after recovery: the answer must be the stored one, not a new effect.
    resend_cids = {f"again-{c.id}": c for c in commands}
    await bus.publish_many((cid, c.body) for cid, c in resend_cids.items())
    tally.lost += sorted(await bus.wait_replies(resend_cids, REPLY_TIMEOUT_S))

    expected_copies = 2 if point == "after_reply" else 1
    store = StoreView(worker.folder / "storage.db")
    rows = store.artifacts()
    inbox = store.inbox_ids("register_artifact")
    for c in commands:
        replies = bus.replies.get(c.id, [])
        again = bus.replies.get(f"again-{c.id}", [])
        if (first := first_result(tally, c.id, replies)) is None:
            continue
        if first["data"]["output"]["registered"] is not True:
            tally.duplicated.append(f"{c.id}: executed again (registered=false)")
        if len(replies) != expected_copies:
            tally.unexpected.append(f"{c.id}: {len(replies)} replies, expected {expected_copies}")
        if not all(same_reply(first, r) for r in replies[1:] + again):
            tally.unexpected.append(f"{c.id}: a replayed reply differs from the first")
        stored = store.stored_reply(c.id)
        if stored is None or stored[0] != first["id"] or json.loads(stored[1]) != first["data"]:
            tally.unexpected.append(f"{c.id}: the reply sent is not the one committed in the inbox")
        if inbox[c.id] != 1:
            tally.duplicated.append(f"{c.id}: {inbox[c.id]} inbox records")
        row = rows.get(c.artifact_id)
        if row is None:
            tally.lost.append(f"{c.id}: artifact {c.artifact_id} not registered")
        elif not file_matches(row[0], row[1]) or row[2] != "completed":
            tally.unexpected.append(f"{c.id}: artifact file missing or wrong at {row[0]} ({row[2]})")
    extra = set(rows) - {c.artifact_id for c in commands}
    tally.unexpected += sorted(extra)
    dead = await bus.drain_queue(worker.dlq)
    tally.unexpected += [f"dead-lettered: {m.body[:80]!r}" for m in dead]
    tally.figures.update(
        restarts=len(restart_s),
        restart_mean_s=sum(restart_s) / len(restart_s),
        artifacts=len(rows),
        replies=sum(len(v) for v in bus.replies.values()),
    )
    tally.check()
    assert tally.kills == CRASHES
