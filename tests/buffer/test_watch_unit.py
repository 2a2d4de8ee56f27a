"""``watch`` and ``wait_for_artifact`` against a fake transport: bind first, catch up, live, once each, gaps mended."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from buffer import ChangeWatch, OutOfRange, StorageClient, SyncStorageClient, Unavailable, WaitTimeout, watching
from buffer.rpc import Reply
from contracts import Change, ChangeKind, CommandEnvelope
from tests.support.fake_transport import FakeTransport, result

REGISTERED = ChangeKind.ARTIFACT_REGISTERED


@dataclass
class FakeLog:
    """A worker's change log and artifact listing, answering ``changes_since`` and ``list_artifacts``."""

    changes: list[Change] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)
    """Raised by the next calls, one each, before answering again."""
    oldest_kept: int = 0
    listed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, kind: ChangeKind = REGISTERED, trace_id: str = "trace-w", **fields: Any) -> Change:
        change = Change(
            change_id=len(self.changes) + 1,
            kind=kind,
            occurred_at=fields.pop("occurred_at", datetime.now(UTC)),
            node="storage-primary",
            trace_id=trace_id,
            artifact_id=f"art_{uuid.uuid4()}",
            **fields,
        )
        self.changes.append(change)
        return change

    def __call__(self, env: CommandEnvelope) -> Reply | Exception:
        if self.failures:
            return self.failures.pop(0)
        params = env.data.params
        if env.data.action == "list_artifacts":
            self.listed.set()
            wanted = {k: v for k, v in params.items() if k in ("trace_id", "artifact_type")}
            found = [a for a in self.artifacts if all(a.get(k) == v for k, v in wanted.items())]
            return result({"artifacts": found[: params["limit"]], "count": min(len(found), params["limit"])})
        assert env.data.action == "changes_since", env.data.action
        after = int(params.get("cursor") or 0)
        if after < self.oldest_kept:
            return OutOfRange("cursor older than kept")
        limit = params.get("limit", 100)
        page: list[Change] = []
        position = after
        for change in self.changes[after:]:
            if len(page) == limit:
                break
            position = change.change_id
            if params.get("kinds") and change.kind not in params["kinds"]:
                continue
            if params.get("trace_id") and change.trace_id != params["trace_id"]:
                continue
            page.append(change)
        more = position < len(self.changes)
        return result(
            {
                "changes": [c.model_dump(mode="json") for c in page],
                "count": len(page),
                "cursor": str(position),
                "next_cursor": str(position) if more else None,
            }
        )


def client_for(tmp_path: Path, log: FakeLog) -> tuple[StorageClient, FakeTransport]:
    transport = FakeTransport(log)
    client = StorageClient(
        transport=lambda s, on_event: transport,
        buffer_dir=tmp_path / "buf",
        storage_root=(tmp_path / "root").as_uri(),
        call_timeout_s=2.0,
        heartbeat_s=3600,
        retries=0,
        agent_id="agent-unit",
    )
    return client, transport


def live(transport: FakeTransport, change: Change, *, event_id: str | None = None) -> None:
    transport.publish(change.kind.routing_key, change.model_dump(mode="json"), event_id=event_id)


async def take(watch: ChangeWatch, count: int) -> list[int]:
    async with asyncio.timeout(5):
        return [(await anext(watch)).change_id for _ in range(count)]


async def nothing_more(watch: ChangeWatch) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await anext(watch)


async def test_catch_up_then_live_once_each_in_order(tmp_path: Path) -> None:
    """From a cursor: the queue is bound before the first page, every change after the cursor comes once in
    order over several pages, a live copy of a caught-up change is dropped, then new live changes come."""
    log = FakeLog()
    for _ in range(5):
        log.add()
    client, transport = client_for(tmp_path, log)
    async with client, client.watch(cursor=1, trace_id="trace-w", page_size=2) as watch:
        assert transport.log[0] == "subscribe evt.storage.#"
        live(transport, log.changes[4])  # published while catching up: the overlap
        newer = log.add()
        live(transport, newer)
        assert await take(watch, 5) == [2, 3, 4, 5, 6]
        assert transport.log.count("changes_since") == 3
        await nothing_more(watch)
        assert watch.cursor == "6"


async def test_live_events_are_filtered_by_trace_and_kind_and_duplicates_dropped(tmp_path: Path) -> None:
    """From now: no catch-up call; another trace's change, another kind and a redelivered copy never come."""
    log = FakeLog()
    client, transport = client_for(tmp_path, log)
    async with client, client.watch(kinds=["artifact_registered"], trace_id="trace-w") as watch:
        assert transport.subscriptions[0].routing_keys == ("evt.storage.artifact_registered",)
        mine = log.add()
        live(transport, log.add(trace_id="trace-other"))
        live(transport, mine, event_id=str(mine.change_id))
        live(transport, mine, event_id=str(mine.change_id))
        transport.subscriptions[0].deliver(b'{"not": "an event"}')
        thread = log.add(ChangeKind.THREAD_SAVED)
        transport.publish(REGISTERED.routing_key, thread.model_dump(mode="json"))  # mislabelled: kind decides
        later = log.add()
        live(transport, later)
        assert await take(watch, 2) == [mine.change_id, later.change_id]
        await nothing_more(watch)
        assert watch.duplicates == 1
    assert "changes_since" not in transport.log
    assert transport.subscriptions[0].closed


async def test_a_gap_is_mended_from_the_last_change_yielded(tmp_path: Path) -> None:
    """After a reconnect (GAP), what was committed while the queue was gone comes from catch-up, once."""
    log = FakeLog()
    client, transport = client_for(tmp_path, log)
    async with client, client.watch(trace_id="trace-w") as watch:
        first = log.add()
        live(transport, first)
        assert await take(watch, 1) == [first.change_id]
        missed = [log.add(), log.add()]
        log.add(trace_id="trace-other")
        transport.subscriptions[0].gap()
        live(transport, missed[1])  # after the reconnect the worker still publishes what it had
        after = log.add()
        live(transport, after)
        assert await take(watch, 3) == [missed[0].change_id, missed[1].change_id, after.change_id]
        await nothing_more(watch)
        assert watch.gaps == 1


async def test_a_gap_before_any_event_catches_up_from_the_watch_start(tmp_path: Path) -> None:
    """From now, a reconnect before anything came: changes kept from long before the start are not replayed,
    those since are."""
    log = FakeLog()
    log.add(occurred_at=datetime.now(UTC) - timedelta(hours=1))
    client, transport = client_for(tmp_path, log)
    async with client, client.watch() as watch:
        missed = log.add()
        transport.subscriptions[0].gap()
        assert await take(watch, 1) == [missed.change_id]
        await nothing_more(watch)


async def test_a_worker_away_during_catch_up_is_waited_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From the oldest kept: retryable failures of changes_since delay the catch-up; the changes still come."""
    monkeypatch.setattr(watching, "RETRY_S", (0.01,))
    log = FakeLog()
    log.add()
    log.add()
    log.failures = [Unavailable("worker away"), Unavailable("worker away")]
    client, transport = client_for(tmp_path, log)
    async with client, client.watch(from_oldest=True) as watch:
        assert await take(watch, 2) == [1, 2]
    assert "cursor" not in transport.sent[0].envelope.data.params  # from the oldest the worker keeps


async def test_a_cursor_older_than_kept_raises_out_of_range(tmp_path: Path) -> None:
    log = FakeLog(oldest_kept=3)
    client, _ = client_for(tmp_path, log)
    async with client, client.watch(cursor=1) as watch:
        with pytest.raises(OutOfRange):
            await anext(watch)


async def test_closing_the_client_ends_a_watch(tmp_path: Path) -> None:
    client, _ = client_for(tmp_path, FakeLog())
    await client.start()
    watch = await client.watch().start()
    waiting = asyncio.create_task(anext(watch))
    await asyncio.sleep(0.01)
    await client.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 5)


def manifest(trace_id: str = "trace-w", artifact_type: str = "report") -> dict[str, Any]:
    return {
        "id": f"art_{uuid.uuid4()}",
        "trace_id": trace_id,
        "created_by": "agent-producer",
        "artifact_type": artifact_type,
        "uri": "file:///tmp/x",
        "size_bytes": 1,
        "checksum": "sha256:" + "0" * 64,
    }


async def test_wait_returns_at_once_when_the_input_is_there(tmp_path: Path) -> None:
    log = FakeLog(artifacts=[manifest()])
    client, transport = client_for(tmp_path, log)
    async with client:
        found = await client.wait_for_artifact({"trace_id": "trace-w"}, timeout_s=5, artifact_type="report")
        assert found.id == log.artifacts[0]["id"]
        assert transport.log == ["subscribe evt.storage.artifact_registered", "list_artifacts"]
        sent = transport.sent[0].envelope.data.params
        assert (sent["trace_id"], sent["artifact_type"], sent["limit"]) == ("trace-w", "report", 1)
        assert transport.subscriptions[0].closed


async def test_wait_lists_again_on_each_registration_of_its_trace(tmp_path: Path) -> None:
    """Another trace's registration costs no listing; one in the trace does, and its artifact is returned."""
    log = FakeLog()
    client, transport = client_for(tmp_path, log)
    async with client:
        waiting = asyncio.create_task(client.wait_for_artifact(trace_id="trace-w", timeout_s=5))
        await asyncio.wait_for(log.listed.wait(), 5)
        live(transport, log.add(trace_id="trace-other"))
        await asyncio.sleep(0.05)
        assert transport.log.count("list_artifacts") == 1
        log.artifacts.append(manifest())
        live(transport, log.add())
        found = await asyncio.wait_for(waiting, 5)
        assert found.id == log.artifacts[0]["id"]
        assert transport.log.count("list_artifacts") == 2


async def test_wait_times_out_with_wait_timeout(tmp_path: Path) -> None:
    client, transport = client_for(tmp_path, FakeLog())
    async with client:
        with pytest.raises(WaitTimeout) as raised:
            await client.wait_for_artifact(trace_id="trace-w", artifact_type="plan", timeout_s=0.2)
        assert raised.value.code.value == "DEADLINE_EXCEEDED"
        assert raised.value.details["filter"] == {"trace_id": "trace-w", "artifact_type": "plan"}
        assert transport.subscriptions[0].closed


def test_sync_client_waits_and_watches(tmp_path: Path) -> None:
    log = FakeLog(artifacts=[manifest()])
    transport = FakeTransport(log)
    with SyncStorageClient(
        transport=lambda s, on_event: transport,
        buffer_dir=tmp_path / "buf",
        storage_root=(tmp_path / "root").as_uri(),
        heartbeat_s=3600,
        agent_id="agent-unit",
    ) as storage:
        assert storage.wait_for_artifact(trace_id="trace-w", timeout_s=5).id == log.artifacts[0]["id"]
        log.add()
        log.add()
        changes = storage.watch(cursor=0)
        assert [next(changes).change_id, next(changes).change_id] == [1, 2]
        changes.close()  # type: ignore[attr-defined]
        assert transport.subscriptions[-1].closed
        assert storage.changes_since(1).cursor == "2"
