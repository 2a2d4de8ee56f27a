"""Case 6: SIGTERM under load.

The worker is stopped while thousands of commands wait. A graceful stop must: stop taking messages (the
prefetched, in-flight ones and the few delivered before the cancel arrives complete after the signal),
finish those within ``STORAGE_SHUTDOWN_GRACE``, leave nothing delivered-but-unacked (such a message would
come back from the broker marked *redelivered*), and exit 0. The commands it did not take run once after a restart.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.fault_commands import register_commands, reply_kind
from tests.support.private_broker import PrivateBroker
from tests.support.store_view import StoreView
from tests.support.tally import Tally
from tests.support.worker_process import SpawnWorker

pytestmark = pytest.mark.faults

COMMANDS = 3000
PREFETCH = 100
GRACE_S = 10.0
EXIT_MARGIN_S = 5.0
"""Closing the connection and the stores after the in-flight commands are done."""
REPLY_TIMEOUT_S = 180


async def test_sigterm_under_load_finishes_in_flight_and_exits_zero(
    spawn_worker: SpawnWorker, lean_bus_for, fault_broker: PrivateBroker
) -> None:
    """An operator's SIGTERM stops the worker within the grace period with exit code 0, without losing,
    repeating or stranding a single command."""
    tally = Tally("case6 sigterm under load")
    worker = await spawn_worker(STORAGE_PREFETCH=str(PREFETCH), STORAGE_SHUTDOWN_GRACE=str(GRACE_S))
    bus = await lean_bus_for(worker)
    commands = register_commands(worker.storage_root, COMMANDS, tag="sigterm")
    tally.commands = len(commands)
    # Publishing goes on while the signal lands: a worker faster than the publisher would otherwise have
    # answered nearly everything before it, with nothing left waiting to show that it stopped taking work.
    publishing = asyncio.ensure_future(bus.publish_many((c.id, c.body) for c in commands))
    await bus.wait_answered(PREFETCH * 2, REPLY_TIMEOUT_S)

    answered_before = len(bus.replies)
    signalled = time.monotonic()
    signalled_at = datetime.now(UTC)
    code = await worker.terminate(timeout_s=GRACE_S + 30)
    stop_s = time.monotonic() - signalled
    await publishing
    # Counted by the reply's own time (when the worker finished the command), not by its arrival: replies
    # still on their way to the agent at the signal are work done before it.
    answered_after = sum(1 for replies in bus.replies.values() if replies and _made_at(replies[0]) >= signalled_at)
    counts = await fault_broker.queue_counts(worker.queue)
    left = await bus.drain_queue(worker.queue)
    redelivered = [m for m in left if m.redelivered]
    unanswered = {c.id for c in commands if not bus.replies.get(c.id)}
    left_ids = {m.correlation_id for m in left}

    if code != 0:
        tally.unexpected.append(f"exit code {code}")
    if stop_s > GRACE_S + EXIT_MARGIN_S:
        tally.unexpected.append(f"stop took {stop_s:.1f}s, grace is {GRACE_S:.0f}s")
    # In flight at the signal (at most the prefetch), plus the few the broker delivered, one per ack, until
    # the consumer's cancel reached it (the worker cancels first thing on SIGTERM).
    if answered_after > 2 * PREFETCH:
        tally.unexpected.append(f"{answered_after} commands completed after SIGTERM, prefetch is {PREFETCH}")
    tally.unexpected += [f"left unacked, came back redelivered: {m.correlation_id}" for m in redelivered]
    tally.lost += sorted(unanswered - left_ids)
    tally.duplicated += sorted(left_ids - unanswered)
    if not left:
        tally.unexpected.append("the worker drained the whole queue: it did not stop taking messages")
    if counts["messages_unacknowledged"] or counts["consumers"]:
        tally.unexpected.append(f"after the exit the broker still counts {counts}")

    # What it did not take is still there for the next worker, and runs exactly once.
    await worker.start()
    await bus.publish_many((m.correlation_id or "", m.body) for m in left)
    tally.lost += sorted(await bus.wait_replies([c.id for c in commands], REPLY_TIMEOUT_S))
    rows = StoreView(worker.folder / "storage.db").artifact_ids()
    for c in commands:
        replies = bus.replies.get(c.id, [])
        if len(replies) > 1:
            tally.duplicated.append(f"{c.id}: answered {len(replies)} times")
        if replies and (reply_kind(replies[0]) != "RESULT" or not replies[0]["data"]["output"]["registered"]):
            tally.unexpected.append(f"{c.id}: {replies[0]['data']}")
        if rows[c.artifact_id] != 1:
            tally.lost.append(f"{c.id}: {rows[c.artifact_id]} artifact rows")
    tally.figures.update(
        stop_s=stop_s,
        exit_code=code,
        answered_before_sigterm=answered_before,
        completed_after_sigterm=answered_after,
        left_in_queue=len(left),
        redelivered=len(redelivered),
        unacked_after_exit=counts["messages_unacknowledged"],
        consumers_after_exit=counts["consumers"],
    )
    tally.check()


def _made_at(reply: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(reply["time"])
