"""Quorum command queues on a real three-node RabbitMQ cluster (private nodes, never the shared broker).

The deployment the tests build: the topology is declared through node 1, so node 1 leads the quorum queues
(RabbitMQ places a new quorum queue's leader on the node its declaring client is connected to); the worker
(a real process, ``STORAGE_QUEUE_TYPE=quorum``) is connected to node 2 and the agent's client to node 3.
Commands then cross the cluster both ways. Killing node 1 with 2,000 writes in flight takes the leader away
from under the load: another member must lead within seconds, the worker (whose own node lives on) must
keep its consumer and its connection, and every write must take effect exactly once, the client's retries
deduplicated by the worker's inbox.

What this does not cover: a worker whose own node dies. ``AMQP_URL`` names one node and the worker
reconnects to that node only, so it waits for it to come back (or for a load balancer in front of the
cluster to send it elsewhere); see docs/operating.md, "Classic or quorum command queues".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from faststream.rabbit import RabbitBroker

from buffer import StorageClient
from contracts import RegisterArtifactOutput
from service.settings import Settings
from service.transport import topology as declared
from tests.support.client_load import ClientLoad, client_for
from tests.support.databases import BACKENDS, postgres_database, sqlite_url
from tests.support.private_broker import PrivateBroker, PrivateCluster
from tests.support.requirements import require_postgres, require_rabbitmq_server
from tests.support.store_rows import read_store
from tests.support.tally import Tally
from tests.support.worker_process import WorkerProcess, worker_env

pytestmark = [pytest.mark.cluster, pytest.mark.faults]

WRITES = 2000
KILL_AFTER = 200
"""Writes answered before the leader is killed: the other 1,800 are in flight (queued or being handled)."""
PREFETCH = 50
CONSUMER_BACK_S = 30.0
SETTLE_S = 120.0
CALL_TIMEOUT_S = 30.0
"""Long enough that a call outlives the failover and the backlog behind it; shorter ones retry (deduplicated)."""


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PrivateCluster]:
    """One cluster for the module; each test finds all three members running (``heal``)."""
    require_rabbitmq_server()
    async with PrivateCluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@dataclass
class Deployment:
    cluster: PrivateCluster
    worker: WorkerProcess
    client: StorageClient
    settings: Settings
    """The worker's settings (its names; ``amqp_url`` is node 1's, where the topology was declared)."""

    @property
    def leader_node(self) -> PrivateBroker:
        return self.cluster.nodes[0]


@asynccontextmanager
async def deployed(cluster: PrivateCluster, database_url: str, folder: Path) -> AsyncIterator[Deployment]:
    """Topology declared through node 1, worker on node 2, client on node 3; all stopped on the way out."""
    await cluster.heal()
    leader, worker_node, client_node = cluster.nodes
    env = worker_env(
        worker_node.amqp_url,
        folder / "worker",
        DATABASE_URL=database_url,
        STORAGE_QUEUE_TYPE="quorum",
        STORAGE_MIGRATE_ON_START="true",
        STORAGE_PREFETCH=str(PREFETCH),
        STORAGE_COMMAND_LOG="false",
    )
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        amqp_url=leader.amqp_url,
        exchange=env["STORAGE_EXCHANGE"],
        queue=env["STORAGE_QUEUE"],
        dlq=env["STORAGE_DLQ"],
        queue_type="quorum",
    )
    await _declare(settings)
    assert await cluster.leader(settings.queue) is leader, "setup: node 1 should lead the queue it declared"
    async with WorkerProcess(env, folder / "worker") as worker:
        await worker.start()
        client = client_for({**env, "AMQP_URL": client_node.amqp_url}, folder / "buffer", call_timeout_s=CALL_TIMEOUT_S)
        async with client:
            yield Deployment(cluster, worker, client, settings)


async def _declare(settings: Settings) -> None:
    broker = RabbitBroker(settings.amqp_url, logger=None)
    await broker.connect()
    try:
        await declared.declare(broker, settings)
    finally:
        await broker.stop()


async def test_commands_flow_through_the_cluster(cluster: PrivateCluster, tmp_path: Path) -> None:
    """An agent on node 3 uploads, reads and pings a worker on node 2 through a queue node 1 leads."""
    async with deployed(cluster, sqlite_url(tmp_path), tmp_path) as d:
        answered = await d.client.ping()
        uploaded = await d.client.upload_artifact(b"across the cluster", artifact_type="report", filename="a.txt")
        assert isinstance(uploaded, RegisterArtifactOutput) and uploaded.registered
        got = await d.client.get_artifact(uploaded.artifact_id)
        assert got.manifest.checksum == uploaded.checksum
        assert await cluster.consumers(d.settings.queue) == 1
        assert answered.node == d.settings.node_name


@pytest.mark.parametrize("backend", BACKENDS)
async def test_killing_the_queue_leader_under_load_loses_and_duplicates_nothing(
    cluster: PrivateCluster, tmp_path: Path, backend: str
) -> None:
    """2,000 uploads are sent at once; after the first 200 answers the node leading the command queue is
    SIGKILLed. Another member leads within seconds, commands flow to the same consumer again well within
    30 s, and in the end each of the 2,000 artifacts is registered exactly once, its file in place."""
    async with _database(backend, tmp_path) as url, deployed(cluster, url, tmp_path) as d:
        tally = Tally(f"cluster leader SIGKILL ({backend})")
        tally.commands = WRITES
        load = ClientLoad(d.client, WRITES, tag="cluster", concurrency=WRITES)
        figures: dict[str, object] = {}

        async def kill_the_leader() -> None:
            await load.answered(KILL_AFTER)
            results = load.count_of(RegisterArtifactOutput)
            figures["in_flight_at_kill"] = WRITES - len(load.outcomes)
            killed_at = time.monotonic()
            await cluster.kill(d.leader_node)
            tally.kills += 1
            figures["new_leader_s"], new_leader = await _new_leader(cluster, d.settings.queue, killed_at)
            figures["new_leader"] = new_leader.node.split("@")[0]
            # Past the commands the worker held at the kill (its prefetch) and replies already on their way,
            # every further answer is of a command delivered after the kill: the consumer is back.
            figures["consumer_back_s"] = await _answers_beyond(load, results + 2 * PREFETCH, killed_at)

        await asyncio.wait_for(asyncio.gather(load.run(), kill_the_leader()), SETTLE_S * 2)
        if await load.settle(time.monotonic() + SETTLE_S) is None:
            tally.unexpected.append(f"the client's buffer still holds commands {SETTLE_S:.0f}s after the load")
        consumers = await cluster.consumers(d.settings.queue)
        worker_alive = d.worker.pid is not None and len(d.worker.runs) == 1
        audit = load.audit(tally, await read_store(url))
    tally.figures.update(figures, **audit, consumers_after=consumers)
    tally.check()
    assert worker_alive, "the worker process restarted or died: its own node was never killed"
    assert consumers == 1
    assert isinstance(figures["consumer_back_s"], float) and figures["consumer_back_s"] < CONSUMER_BACK_S
    assert audit["artifacts"] == WRITES


async def _new_leader(cluster: PrivateCluster, queue: str, since: float) -> tuple[float, PrivateBroker]:
    """Seconds from ``since`` until a surviving member leads ``queue``, and that member."""
    while (leader := await cluster.leader(queue)) is None:
        if time.monotonic() - since > CONSUMER_BACK_S:
            raise AssertionError(f"no member leads {queue} {CONSUMER_BACK_S:.0f}s after the leader's SIGKILL")
        await asyncio.sleep(0.05)
    return round(time.monotonic() - since, 2), leader


async def _answers_beyond(load: ClientLoad, results: int, since: float) -> float:
    """Seconds from ``since`` until the client holds more than ``results`` RESULT answers (or all of them)."""
    while load.count_of(RegisterArtifactOutput) <= min(results, WRITES - 1):
        if time.monotonic() - since > CONSUMER_BACK_S:
            return round(time.monotonic() - since, 2)  # reported, and the test fails on it
        await asyncio.sleep(0.05)
    return round(time.monotonic() - since, 2)


@asynccontextmanager
async def _database(backend: str, folder: Path) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield sqlite_url(folder)
        return
    await require_postgres()
    async with postgres_database() as url:
        yield url
