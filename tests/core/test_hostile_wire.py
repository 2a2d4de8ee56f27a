"""Hostile input on the wire: 1,000 generated messages to a live worker process.

The same strategies as the pipeline-level fuzzing, but through RabbitMQ to ``storage-worker run``: every
message with a ``reply_to`` gets exactly one well-formed RESULT or ERROR, every message that is not a
command lands in the dead-letter queue (and nothing else does), the worker never restarts, and afterwards
it still answers ``ping`` and returns the data seeded before the run unchanged.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from contracts import make_command
from tests.support.fuzz_harness import FORBIDDEN_CODES, is_command, parse_reply
from tests.support.hostile import OUTSIDE_FILE, Case, Paths, cases, stage_into
from tests.support.lean_bus import LeanBus
from tests.support.tally import Tally
from tests.support.worker_process import SpawnWorker

pytestmark = pytest.mark.faults

MESSAGES = 1000
REPLY_TIMEOUT_S = 180
MAX_MESSAGE_BYTES = 1024 * 1024


def generate(paths: Paths, count: int) -> list[Case]:
    """``count`` hostile cases drawn by Hypothesis (generation only: nothing to shrink here)."""
    drawn: list[Case] = []

    @settings(
        max_examples=count,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases(paths))
    def collect(case: Case) -> None:
        drawn.append(case)

    collect()
    return drawn[:count]


async def call(bus: LeanBus, action: str, params: dict[str, Any]) -> dict[str, Any]:
    envelope = make_command(action, params, source="agent-seed")
    await bus.publish(envelope.to_json_bytes(), envelope.id, **bus.admin)
    assert not await bus.wait_replies([envelope.id], REPLY_TIMEOUT_S), f"{action}: no reply"
    reply = bus.replies[envelope.id][-1]
    assert reply["type"] == "ai.team.result", f"{action}: {reply['data']}"
    return reply["data"]["output"]  # type: ignore[no-any-return]


async def seed(bus: LeanBus, root: Path) -> dict[str, Any]:
    data = b"seeded before the hostile run"
    path = root / "temp" / "seed.bin"
    path.write_bytes(data)
    manifest = {
        "id": f"art_{uuid.uuid4()}",
        "trace_id": "trace-seed",
        "created_by": "agent-seed",
        "artifact_type": "report",
        "uri": path.as_uri(),
        "size_bytes": len(data),
        "checksum": "sha256:" + hashlib.sha256(data).hexdigest(),
    }
    name = f"protected-{uuid.uuid4().hex}"
    await call(bus, "register_artifact", {"manifest": manifest})
    await call(bus, "save_thread", {"thread_id": name, "messages": [{"role": "user", "content": "hello"}]})
    await call(bus, "put_memory", {"namespace": [name], "key": "k", "value": {"v": 1}})
    return {
        "get_artifact": {"artifact_id": manifest["id"]},
        "get_thread": {"thread_id": name},
        "get_memory": {"namespace": [name], "key": "k"},
    }


async def test_thousand_hostile_messages_leave_the_worker_serving(spawn_worker: SpawnWorker, lean_bus_for) -> None:
    """After 1,000 hostile messages on the bus the worker still answers ping, never restarted, and the
    data it held before is unchanged."""
    tally = Tally("hostile input (wire)")
    worker = await spawn_worker()
    pid = worker.pid
    bus = await lean_bus_for(worker)
    root = worker.storage_root.resolve()
    outside = worker.folder / OUTSIDE_FILE
    outside.write_bytes(b"outside")
    reads = await seed(bus, root)
    before = {action: await call(bus, action, params) for action, params in reads.items()}

    drawn = [stage_into(case, str(root)) for case in generate(Paths(str(root), str(outside.resolve())), MESSAGES)]
    expected_dead = 0
    waiting: list[str] = []
    for i, case in enumerate(drawn):
        body = case.delivery.body
        if not is_command(body, MAX_MESSAGE_BYTES):
            expected_dead += 1
        cid = f"hostile-{i}"
        await bus.publish(body, cid, reply=bool(case.delivery.reply_to))
        if case.delivery.reply_to:
            waiting.append(cid)
    tally.commands = len(drawn)
    tally.lost += sorted(await bus.wait_replies(waiting, REPLY_TIMEOUT_S))

    codes: dict[str, int] = {}
    for cid in waiting:
        replies = bus.raw.get(cid, [])
        if len(replies) > 1:
            tally.duplicated.append(f"{cid}: {len(replies)} replies")
        for reply in replies:
            try:
                parsed = parse_reply(reply)
            except ValueError as exc:
                tally.unexpected.append(f"{cid}: malformed reply {exc}")
                continue
            code = "OK" if parsed.type == "ai.team.result" else parsed.data.error.code.value
            codes[code] = codes.get(code, 0) + 1
            if code in FORBIDDEN_CODES:
                tally.unexpected.append(f"{cid}: {code} {parsed.data}")
    silent = [f"hostile-{i}" for i, c in enumerate(drawn) if not c.delivery.reply_to]
    tally.unexpected += [f"{cid}: replied without reply_to" for cid in silent if bus.replies.get(cid)]

    pong = await call(bus, "ping", {})
    after = {action: await call(bus, action, params) for action, params in reads.items()}
    tally.unexpected += [f"{action} changed" for action in reads if after[action] != before[action]]
    dead = await bus.drain_queue(worker.dlq)
    if len(dead) != expected_dead:
        tally.unexpected.append(f"{len(dead)} dead-lettered, {expected_dead} messages were not commands")
    if worker.pid != pid or len(worker.runs) != 1:
        tally.unexpected.append("the worker restarted")
    if outside.read_bytes() != b"outside":
        tally.unexpected.append("a file outside the storage root was touched")
    tally.figures.update(
        with_reply_to=len(waiting),
        dead_lettered=len(dead),
        ping_node=pong["node"],
        outcomes=dict(sorted(codes.items(), key=lambda kv: -kv[1])[:8]),
    )
    tally.check()
