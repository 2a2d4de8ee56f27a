"""Change events over the real broker (issue 21): every committed write is one ``evt.storage.<kind>`` EVENT.

An agent bound to ``evt.storage.#`` sees each write once, in commit order, as pointers only (ids, trace,
version, visibility; never content, metadata or owner), with the change id as the envelope id; what it
missed it gets from ``changes_since``. A write that does not commit (refused, rolled back, a repeat)
tells nothing.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

from contracts import topology
from service.faults import parse
from tests.support.artifacts import manifest_for
from tests.support.bus import Bus, error, output
from tests.support.change_events import Events, change_events
from tests.support.wire import ADMIN_AMQP
from tests.support.workers import Workers

ALICE = {"requester_id": "alice", "requester_trace_id": "trace-ev"}
SECRETS = ("do not tell", "private words", "remembered secret", "alice")
"""What no event may carry: labels, message content, a memory value, the owner."""


async def _admin_changes(bus: Bus, **params: Any) -> list[dict[str, Any]]:
    """Every change in the log, as an admin reads it through ``changes_since``."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = output(await bus.call("changes_since", {"cursor": cursor, **params}, amqp=ADMIN_AMQP))
        found += page["changes"]
        cursor = page["cursor"]
        if page["next_cursor"] is None:
            return found


async def _quiet(events: Events, count: int) -> None:
    """``count`` events arrived, and no more come in a moment."""
    await events.arrived(count)
    await asyncio.sleep(0.5)
    assert len(events.seen) == count, [e.routing_key for e in events.seen[count:]]


async def test_each_write_is_one_event_with_pointers_only(workers: Workers, storage_root: Path) -> None:
    """Register, save, delete, put, delete, admin delete and restore, then a quota's 80%: one event each, in
    commit order, with the change id as envelope and message id, and nothing an agent may not know."""
    worker, bus = await workers.start(trace_max_artifacts=5, metrics_port=0)
    node = worker.settings.node_name
    thread_id = f"thread-{uuid.uuid4().hex[:8]}"
    async with change_events(bus.url, bus.exchange_name) as events:
        manifest = manifest_for(storage_root, b"body", trace_id="trace-ev", labels={"note": "do not tell"})
        art = manifest["id"]
        output(await bus.call("register_artifact", {"manifest": manifest}, context=ALICE))
        again = output(await bus.call("register_artifact", {"manifest": manifest}, context=ALICE))
        assert again["already_exists"] is True
        messages = [{"role": "user", "content": "private words"}]
        output(await bus.call("save_thread", {"thread_id": thread_id, "messages": messages}, context=ALICE))
        output(await bus.call("delete_thread", {"thread_id": thread_id}, context=ALICE))
        where = {"namespace": ["team", "notes"], "key": "plan"}
        put = {**where, "value": {"text": "remembered secret"}, "visibility": "trace"}
        output(await bus.call("put_memory", put, context=ALICE))
        output(await bus.call("delete_memory", where, context=ALICE))
        output(await bus.call("delete_artifact", {"artifact_id": art}, amqp=ADMIN_AMQP))
        output(await bus.call("restore_artifact", {"artifact_id": art}, amqp=ADMIN_AMQP))
        more = [manifest_for(storage_root, f"more {i}".encode(), trace_id="trace-ev") for i in range(3)]
        for extra in more:  # the 4th live artifact of the trace reaches 80% of 5
            output(await bus.call("register_artifact", {"manifest": extra}, context=ALICE))
        await _quiet(events, 11)

    kinds = [e.change["kind"] for e in events.seen]
    assert kinds == [
        "artifact_registered",
        "thread_saved",
        "thread_deleted",
        "memory_put",
        "memory_deleted",
        "artifact_deleted",
        "artifact_registered",
        "artifact_registered",
        "artifact_registered",
        "artifact_registered",
        "quota_warning",
    ]
    ids = [e.change_id for e in events.seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "commit order, each change once"
    for event in events.seen:
        assert event.routing_key == f"evt.storage.{event.change['kind']}" == event.body["data"]["event_type"]
        assert event.body["type"] == "ai.team.event" and event.body["source"] == node
        assert event.body["id"] == event.message_id == str(event.change_id)
        assert event.priority == topology.PRIORITY_STORAGE_EVENT and event.delivery_mode == 2
        assert event.change["node"] == node and "owner" not in event.change
        assert not any(secret in json.dumps(event.body) for secret in SECRETS), event.body

    registered, saved, deleted_thread, put_item, deleted_item, deleted_art, restored = events.seen[:7]
    assert registered.body["subject"] == art
    pointer = {"artifact_id": art, "trace_id": "trace-ev", "visibility": "trace", "version": 1}
    assert pointer.items() <= registered.change.items() and pointer.items() <= restored.change.items()
    assert pointer.items() <= deleted_art.change.items()
    assert saved.change["thread_id"] == deleted_thread.change["thread_id"] == saved.body["subject"] == thread_id
    assert (saved.change["version"], deleted_thread.change["version"]) == (1, 2)
    assert saved.change["visibility"] == "private" and saved.change["trace_id"] == "trace-ev"
    assert put_item.change["namespace"] == ["team", "notes"] and put_item.change["key"] == "plan"
    assert (put_item.change["version"], deleted_item.change["version"]) == (1, 1)
    assert put_item.body["subject"] == "team/notes/plan"
    warning = events.seen[-1]
    assert warning.body["data"]["severity"] == "WARNING" and warning.body["subject"] == "trace-ev"
    assert {k: warning.change[k] for k in ("trace_id", "quota", "limit", "usage", "threshold_percent")} == {
        "trace_id": "trace-ev",
        "quota": "artifacts",
        "limit": 5,
        "usage": 4,
        "threshold_percent": 80,
    }

    metrics = worker.operations.metrics  # type: ignore[attr-defined]
    for _ in range(100):  # counted once the outbox rows went, just after the broker's confirm
        scraped = await metrics.render()
        if b"storage_events_published_total 11.0" in scraped:
            break
        await asyncio.sleep(0.05)
    assert b"storage_events_published_total 11.0" in scraped and b"storage_outbox_pending 0.0" in scraped

    caught_up = await _admin_changes(bus)
    assert [(c["change_id"], c["kind"]) for c in caught_up] == [(e.change_id, e.change["kind"]) for e in events.seen]
    assert next(c for c in caught_up if c["kind"] == "memory_put") == {**put_item.change, "artifact_id": None,
        "thread_id": None, "quota": None, "limit": None, "usage": None, "threshold_percent": None}  # fmt: skip


async def test_a_write_that_does_not_commit_tells_nothing(workers: Workers, storage_root: Path) -> None:
    """A burst where half the registrations go over a trace's quota and half the saves fail inside their
    transaction: exactly the writes that committed are told, live and in the log, whatever groups they formed."""
    worker, bus = await workers.start(trace_max_artifacts=2)
    assert worker.services is not None
    worker.services.faults.spec = parse("raise_in:save_thread")  # every save fails after doing its work
    async with change_events(bus.url, bus.exchange_name) as events:
        full = [manifest_for(storage_root, f"full {i}".encode(), trace_id="trace-full") for i in range(6)]
        roomy = [manifest_for(storage_root, f"roomy {i}".encode(), trace_id=f"trace-{i}") for i in range(6)]
        saves = [
            {"thread_id": f"t-{uuid.uuid4().hex[:8]}", "messages": [{"role": "user", "content": "x"}]} for _ in range(6)
        ]
        calls = [
            bus.call("register_artifact", {"manifest": m}, context=ALICE)
            for pair in zip(full, roomy, strict=True)
            for m in pair
        ]
        calls += [bus.call("save_thread", params, context=ALICE) for params in saves]
        replies = await asyncio.gather(*calls)
        stored = {r["data"]["output"]["artifact_id"] for r in replies if r["type"] == "ai.team.result"}
        assert len(stored) == 2 + 6, "two fit the full trace, every roomy one fits"
        assert all(error(r)["code"] == "INTERNAL" for r in replies[12:])
        bad = manifest_for(storage_root, b"claimed", trace_id="trace-x") | {"checksum": "sha256:" + "0" * 64}
        assert (
            error(await bus.call("register_artifact", {"manifest": bad}, context=ALICE))["code"] == "INVALID_ARGUMENT"
        )
        stale = {"namespace": ["n"], "key": "k", "value": {}, "expected_version": 3}
        assert error(await bus.call("put_memory", stale, context=ALICE))["code"] == "ABORTED"
        await _quiet(events, 8 + 1)  # and the full trace's quota warning

    told = [e.change for e in events.seen]
    assert {c["artifact_id"] for c in told if c["kind"] == "artifact_registered"} == stored
    assert [c["kind"] for c in told].count("quota_warning") == 1
    assert [(c["change_id"], c["kind"]) for c in await _admin_changes(bus)] == [
        (c["change_id"], c["kind"]) for c in told
    ]
