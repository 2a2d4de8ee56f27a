"""Case 1: 5,000 registrations through the client while the worker is SIGKILLed five times.

The kills land at random moments (after a random number of answered calls), each followed by an
immediate restart on the same database and files. Commands the dead worker held come back from the
broker; calls whose reply was lost are retried by the client with the same idempotency key. Every
command must be answered within 120 s of the last restart, every artifact registered exactly once with
its file in place, and nothing may end in the dead-letter queue.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from tests.support.client_load import ClientLoad, client_for
from tests.support.store_view import StoreView
from tests.support.tally import Tally
from tests.support.worker_process import SpawnWorker

pytestmark = pytest.mark.faults

COMMANDS = 5000
KILLS = 5
ANSWER_WITHIN_S = 120.0
CALL_TIMEOUT_S = 30.0


async def test_worker_sigkilled_five_times_loses_and_repeats_nothing(
    spawn_worker: SpawnWorker, lean_bus_for, tmp_path
) -> None:
    """An agent registering 5,000 artifacts while the worker is killed five times gets every one
    registered exactly once, within two minutes of the last restart."""
    tally = Tally("case1 worker SIGKILL x5")
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    kill_after = sorted(rng.sample(range(COMMANDS // 20, COMMANDS * 9 // 10), KILLS))
    worker = await spawn_worker()
    restarts: list[float] = []
    last_restart = time.monotonic()

    # Commands carry an expiration of one call timeout: generous, so a restart under load never lets one
    # expire in the queue (it would be dead-lettered, and this case wants the DLQ empty).
    async with client_for(worker.env, tmp_path / "buffer", call_timeout_s=CALL_TIMEOUT_S) as client:
        load = ClientLoad(client, COMMANDS, tag="kills")
        tally.commands = COMMANDS

        async def killer() -> None:
            nonlocal last_restart
            for threshold in kill_after:
                await load.answered(threshold)
                await worker.kill()
                tally.kills += 1
                restarts.append(await worker.start())
                last_restart = time.monotonic()

        await asyncio.wait_for(asyncio.gather(load.run(), killer()), ANSWER_WITHIN_S * 4)
        emptied = await load.settle(last_restart + ANSWER_WITHIN_S)
    answered_s = max(load.finished or 0, emptied or float("inf")) - last_restart
    if emptied is None or answered_s > ANSWER_WITHIN_S:
        tally.unexpected.append(f"not every command answered within {ANSWER_WITHIN_S:.0f}s of the last restart")

    figures = load.audit(tally, StoreView(worker.folder / "storage.db"))
    bus = await lean_bus_for(worker)
    dead = await bus.drain_queue(worker.dlq)
    tally.unexpected += [f"dead-lettered: {m.body[:100]!r}" for m in dead]
    tally.figures.update(
        figures,
        kill_after=kill_after,
        restart_mean_s=sum(restarts) / max(1, len(restarts)),
        answered_after_last_restart_s=answered_s,
        dlq=len(dead),
        seed=seed,
    )
    tally.check()
    assert tally.kills == KILLS
