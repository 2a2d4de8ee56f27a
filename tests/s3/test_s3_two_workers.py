"""The production shape: two workers, one PostgreSQL, one S3 bucket, racing duplicates of registrations."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from service.transport.worker import Worker
from tests.support.artifacts import new_artifact_id
from tests.support.bus import Bus, output
from tests.support.workers import make_settings, running_together

ARTIFACTS = 120
RETRIED = 40  # of which re-sent under a new envelope id (no key): answered already_exists


@pytest.fixture
async def pool(amqp_url: str, pg_url: str, s3_root: str, tmp_path: Path) -> AsyncIterator[list[Worker]]:
    first = make_settings(amqp_url, pg_url, tmp_path).model_copy(update={"storage_root": s3_root, "node_name": "s3-a"})
    async with running_together(first, first.model_copy(update={"node_name": "s3-b"})) as workers:
        yield workers


async def test_two_workers_on_s3_register_each_artifact_once(pool: list[Worker], s3_root: str, agent_fs: Any) -> None:
    """Every upload registered through two workers lands once under artifacts/, temp/ ends empty, no errors."""
    settings = pool[0].settings
    handled: dict[str, int] = {}
    for worker in pool:
        name = worker.settings.node_name
        worker.on_outcome.append(lambda _o, _t, name=name: handled.update({name: handled.get(name, 0) + 1}))
    bus = await Bus(settings.amqp_url, settings.exchange, settings.dlq).open()
    try:
        calls = []
        manifests = []
        for i in range(ARTIFACTS):
            data = f"object {i} {uuid.uuid4()}".encode()
            uri = f"{s3_root}/temp/{uuid.uuid4().hex}.txt"
            agent_fs.pipe(uri, data)
            manifest = {
                "id": new_artifact_id(),
                "trace_id": "trace-pool",
                "created_by": "agent-test",
                "artifact_type": "report",
                "uri": uri,
                "size_bytes": len(data),
                "checksum": "sha256:" + hashlib.sha256(data).hexdigest(),
            }
            manifests.append(manifest)
            params = {"manifest": manifest}
            calls.append(bus.call("register_artifact", params, context={"requester_id": "agent-test"}, timeout=120))
            if i < RETRIED:  # the agent re-sends at once, under a new envelope: the two race on two workers
                calls.append(bus.call("register_artifact", params, context={"requester_id": "agent-test"}, timeout=120))
        replies = [output(reply) for reply in await asyncio.gather(*calls)]
    finally:
        await bus.close()

    assert len(replies) == ARTIFACTS + RETRIED
    assert len(handled) == 2, f"both workers took commands: {handled}"
    registered = [r["artifact_id"] for r in replies if r["registered"]]
    assert sorted(registered) == sorted(m["id"] for m in manifests), "each artifact registered exactly once"
    assert sum(r["already_exists"] for r in replies) == RETRIED
    placed = agent_fs.find(f"{s3_root}/artifacts")
    assert len(placed) == ARTIFACTS and agent_fs.find(f"{s3_root}/temp") == []
    for reply in replies:
        assert agent_fs.exists(reply["uri"])
