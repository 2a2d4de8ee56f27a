"""Case 3: the broker itself is SIGKILLed and restarted three times during 5,000 registrations.

A private RabbitMQ node (never the machine's shared one) carries the traffic; at three random moments it
is killed and, after a short outage, started again on the same data directory. The worker must get its
consumer back within 30 s of each restart (checked on the node with ``rabbitmqctl list_consumers``), and
every command the client reported as sent or buffered must take effect exactly once in the end.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from tests.support.client_load import ClientLoad, client_for
from tests.support.private_broker import BrokerError, PrivateBroker
from tests.support.requirements import require_rabbitmq_server
from tests.support.store_view import StoreView
from tests.support.tally import Tally
from tests.support.worker_process import SpawnWorker

pytestmark = pytest.mark.faults

COMMANDS = 5000
RESTARTS = 3
CONSUMER_BACK_S = 30.0
SETTLE_S = 180.0


async def test_broker_killed_three_times_every_sent_or_buffered_command_takes_effect_once(
    spawn_worker: SpawnWorker, tmp_path: Path
) -> None:
    """Agents keep registering while the broker dies three times; the worker reconnects within 30 s each
    time and every command the client sent or buffered is registered exactly once."""
    require_rabbitmq_server()
    tally = Tally("case3 broker SIGKILL x3")
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    kill_after = sorted(rng.sample(range(COMMANDS // 10, COMMANDS * 8 // 10), RESTARTS))
    outages = [round(rng.uniform(0.5, 3.0), 2) for _ in range(RESTARTS)]
    consumer_back: list[float] = []
    restart_s: list[float] = []

    async with PrivateBroker(tmp_path / "rabbit") as broker:
        worker = await spawn_worker(amqp_url=broker.amqp_url)
        async with client_for(worker.env, tmp_path / "buffer") as client:
            load = ClientLoad(client, COMMANDS, tag="broker")
            tally.commands = COMMANDS

            async def breaker() -> None:
                for threshold, outage in zip(kill_after, outages, strict=True):
                    await load.answered(threshold)
                    await broker.kill()
                    tally.kills += 1
                    await asyncio.sleep(outage)  # the outage itself: nothing to wait for but time
                    restart_s.append(await broker.start())
                    try:
                        consumer_back.append(await broker.wait_for_consumer(worker.queue, CONSUMER_BACK_S))
                    except BrokerError as exc:
                        tally.unexpected.append(str(exc))

            await asyncio.wait_for(asyncio.gather(load.run(), breaker()), SETTLE_S * 3)
            emptied = await load.settle(time.monotonic() + SETTLE_S)
            if emptied is None:
                tally.unexpected.append(f"the client's buffer still holds commands {SETTLE_S:.0f}s after the load")
        # What the broker still holds for the worker (re-sent copies, replays) must be drained before the audit.
        await _queue_drained(broker, worker.queue)
        figures = load.audit(tally, StoreView(worker.folder / "storage.db"))
        counts = await broker.queue_counts(worker.dlq)
    tally.figures.update(
        figures,
        kill_after=kill_after,
        outages_s=outages,
        broker_restart_s=[round(s, 1) for s in restart_s],
        consumer_back_s=[round(s, 1) for s in consumer_back],
        dead_lettered=counts["messages_ready"],
        worker_restarts=len(worker.runs) - 1,
        seed=seed,
    )
    tally.check()
    assert tally.kills == RESTARTS and len(consumer_back) == RESTARTS


async def _queue_drained(broker: PrivateBroker, queue: str, timeout_s: float = 60) -> None:
    """Wait until the command queue is empty and nothing is unacked (the worker finished what it holds)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = await broker.queue_counts(queue)
        if counts["messages_ready"] == 0 and counts["messages_unacknowledged"] == 0:
            return
        await asyncio.sleep(0.5)
