"""The client's call path against a fake transport and a fake clock: retries, Buffered, replay, order, upload."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from buffer import (
    BrokerUnavailable,
    Buffered,
    CallTimeout,
    InvalidArgument,
    NotFound,
    StorageClient,
    SyncStorageClient,
    Unavailable,
)
from buffer.rpc import Reply
from contracts import CommandEnvelope, RegisterArtifactOutput
from tests.support.fake_transport import FakeTransport, error, result


class Clock:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def saved(env: CommandEnvelope) -> dict[str, Any]:
    """A plausible save_thread output for the fake worker to return."""
    return {
        "thread_id": env.data.params.get("thread_id", "-"),
        "version": 1,
        "message_ids": [],
        "inserted": 0,
        "updated": 0,
        "trimmed": 0,
    }


@dataclass
class Outage:
    """A fake worker that answers UNAVAILABLE while ``down``, then saves (``answered`` tells it did)."""

    down: bool = True
    answered: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, env: CommandEnvelope) -> Reply | Exception:
        if self.down:
            return Unavailable("down")
        self.answered.set()
        return result(saved(env))


def client_with(
    tmp_path: Path, respond: Callable[[CommandEnvelope], Reply | Exception], **overrides: Any
) -> tuple[StorageClient, FakeTransport, Clock]:
    transport = FakeTransport(respond)
    clock = Clock()
    settings: dict[str, Any] = {
        "buffer_dir": tmp_path / "buf",
        "storage_root": (tmp_path / "root").as_uri(),
        "call_timeout_s": 2.0,
        "heartbeat_s": 3600,
        "agent_id": "agent-unit",
    }
    settings.update(overrides)
    client = StorageClient(transport=lambda s, on_event: transport, sleep=clock.sleep, trace_id="trace-u", **settings)
    return client, transport, clock


async def test_write_to_unreachable_worker_is_buffered_after_the_retries(tmp_path: Path) -> None:
    """A write that cannot be delivered through 3 retries (5, 10, 20 s) comes back Buffered, kept on disk."""
    client, transport, clock = client_with(tmp_path, lambda env: BrokerUnavailable("connection refused"))
    async with client:
        outcome = await client.save_thread("t-1", [{"role": "user", "content": "hi"}])
    assert isinstance(outcome, Buffered)
    assert clock.sleeps == [5.0, 10.0, 20.0]
    assert len(transport.sent) == 4
    envelopes = [s.envelope for s in transport.sent]
    assert len({e.id for e in envelopes}) == 4, "every attempt is a new envelope"
    assert {e.data.idempotency_key for e in envelopes} == {outcome.idempotency_key}
    assert all(s.expire and s.timeout_s == 2.0 for s in transport.sent)
    assert outcome.command_id == envelopes[-1].id and outcome.path.exists()
    assert isinstance(outcome.error, BrokerUnavailable)
    [item] = [client.buffer.load(e) for e in client.buffer.entries()]
    assert item is not None and item.envelope == envelopes[-1]


async def test_read_from_unreachable_worker_raises_after_the_retries(tmp_path: Path) -> None:
    """A read has nothing to keep: after the retries the agent gets the error, and the buffer stays empty."""
    client, transport, clock = client_with(tmp_path, lambda env: CallTimeout("get_thread", 2.0))
    async with client:
        with pytest.raises(CallTimeout) as raised:
            await client.get_thread("t-1")
        assert raised.value.retryable and raised.value.code.value == "DEADLINE_EXCEEDED"
        assert not client.buffer.has_pending()
    assert len(transport.sent) == 4 and clock.sleeps == [5.0, 10.0, 20.0]


async def test_refusal_raises_at_once_and_is_not_buffered(tmp_path: Path) -> None:
    """A write the worker refuses (not retryable) raises its typed error on the first attempt."""
    client, transport, clock = client_with(tmp_path, lambda env: error("NOT_FOUND", "no such thread"))
    async with client:
        with pytest.raises(NotFound) as raised:
            await client.delete_thread("t-404")
        assert not client.buffer.has_pending()
    assert raised.value.details == {"why": "no such thread"}
    assert len(transport.sent) == 1 and clock.sleeps == []


async def test_retry_after_lost_reply_reuses_the_idempotency_key(tmp_path: Path) -> None:
    """After a lost reply the retry carries the same idempotency key, so the worker answers from its inbox."""
    answers: list[Reply | Exception] = [CallTimeout("save_thread", 2.0)]

    def respond(env: CommandEnvelope) -> Reply | Exception:
        return answers.pop(0) if answers else result(saved(env))

    client, transport, clock = client_with(tmp_path, respond)
    async with client:
        out = await client.save_thread("t-2", idempotency_key="my-key-1")
    assert not isinstance(out, Buffered) and out.thread_id == "t-2"
    assert [s.envelope.data.idempotency_key for s in transport.sent] == ["my-key-1", "my-key-1"]
    assert clock.sleeps == [5.0]


async def test_params_are_checked_before_sending(tmp_path: Path) -> None:
    """A malformed argument raises InvalidArgument naming the field, and nothing is sent."""
    client, transport, _ = client_with(tmp_path, lambda env: result())
    async with client:
        with pytest.raises(InvalidArgument) as raised:
            await client.get_artifact("not-an-artifact-id")
    assert raised.value.details["errors"][0]["field"] == "artifact_id"
    assert transport.sent == []


async def test_misspelt_call_option_is_an_error_not_ignored(tmp_path: Path) -> None:
    """A typo in a per-call option (``timeout=`` for ``timeout_s=``) raises TypeError instead of being ignored."""
    client, transport, _ = client_with(tmp_path, lambda env: result())
    async with client:
        with pytest.raises(TypeError, match="timeout"):
            await client.ping(timeout=3)  # type: ignore[call-arg]
    assert transport.sent == []


async def test_while_worker_is_known_down_new_writes_queue_behind_buffered_ones(tmp_path: Path) -> None:
    """Once a write was buffered, the next ones are buffered at once (no new retry wait) and keep their order."""
    client, transport, clock = client_with(tmp_path, lambda env: Unavailable("down"))
    async with client:
        first = await client.save_thread("t-a")
        sent_before = len(transport.sent)
        later = [await client.save_thread(f"t-{i}") for i in range(3)]
        assert all(isinstance(o, Buffered) for o in [first, *later])
        assert len(transport.sent) == sent_before and len(clock.sleeps) == 3
        order = [client.buffer.load(e) for e in client.buffer.entries()]
        assert [i.envelope.data.params["thread_id"] for i in order if i] == ["t-a", "t-0", "t-1", "t-2"]


async def test_replay_after_recovery_sends_original_envelope_without_expiration(tmp_path: Path) -> None:
    """When the worker is back, the buffered command goes out with its original id, no expiration, and is removed."""
    worker = Outage()
    client, transport, _ = client_with(tmp_path, worker)
    async with client:
        buffered = await client.save_thread("t-r")
        assert isinstance(buffered, Buffered)
        worker.down = False
        report = await client.replay()
        assert report.sent == 1 and report.remaining == 0
        replayed = transport.sent[-1]
        assert replayed.envelope.id == buffered.command_id
        assert replayed.expire is False
        assert not client.buffer.has_pending()


async def test_new_write_replays_the_buffer_first_when_the_worker_is_back(tmp_path: Path) -> None:
    """A write made after the worker came back reaches it after the buffered ones, never before them."""
    worker = Outage()
    client, transport, _ = client_with(tmp_path, worker)
    async with client:
        await client.save_thread("t-old")
        worker.down = False
        client._on_worker_event("evt.node.registered")  # the worker announced itself: no longer known down
        await client.save_thread("t-new")
    last_two = [(s.envelope.data.params["thread_id"], s.expire) for s in transport.sent[-2:]]
    assert last_two == [("t-old", False), ("t-new", True)], "the replay of t-old went out before t-new"


async def test_worker_event_triggers_replay_before_the_heartbeat(tmp_path: Path) -> None:
    """A storage node announcing itself makes the client replay at once instead of waiting for its next tick."""
    worker = Outage()
    client, _, _ = client_with(tmp_path, worker, heartbeat_s=3600)
    async with client:
        await client.save_thread("t-e")
        worker.down = False
        client._on_worker_event("evt.node.registered")
        await asyncio.wait_for(worker.answered.wait(), 10)
        report = await client.replay()  # waits for the heartbeat's pass to finish, then finds nothing left
        assert report.sent == 0 and report.remaining == 0


async def test_heartbeat_replays_without_any_call(tmp_path: Path) -> None:
    """With no worker announcement and no new call, the heartbeat alone delivers what was buffered."""
    worker = Outage()
    client, transport, _ = client_with(tmp_path, worker, heartbeat_s=0.05)
    delivered = asyncio.Event()
    client.on_replay.append(lambda report: delivered.set() if report.sent else None)
    async with client:
        buffered = await client.save_thread("t-h")
        worker.down = False
        await asyncio.wait_for(delivered.wait(), 10)
    assert isinstance(buffered, Buffered)
    assert transport.sent[-1].envelope.id == buffered.command_id and not transport.sent[-1].expire


async def test_heartbeat_probes_with_a_ping_before_replaying_into_an_outage(tmp_path: Path) -> None:
    """After a pass that found the worker down, the next heartbeat pings first and sends no buffered command
    (which has no expiration) while the ping goes unanswered."""
    client, transport, _ = client_with(tmp_path, lambda env: Unavailable("down"), heartbeat_s=0.02)
    probes = asyncio.Event()
    client.on_replay.append(lambda report: probes.set() if report.stopped and report.sent == 0 else None)
    async with client:
        buffered = await client.save_thread("t-p")
        assert isinstance(buffered, Buffered)
        for _ in range(3):
            probes.clear()
            await asyncio.wait_for(probes.wait(), 10)
    after_spill = transport.sent[4:]
    assert after_spill and {s.envelope.data.action for s in after_spill} == {"ping"}
    assert all(s.expire for s in after_spill)


async def test_upload_stages_bytes_in_temp_and_registers_a_valid_manifest(tmp_path: Path) -> None:
    """upload_artifact writes the bytes under temp/, and the manifest states their size and sha256."""
    captured: list[CommandEnvelope] = []

    def respond(env: CommandEnvelope) -> Reply:
        captured.append(env)
        manifest = env.data.params["manifest"]
        return result(
            {
                "artifact_id": manifest["id"],
                "registered": True,
                "already_exists": False,
                "uri": manifest["uri"],
                "checksum": manifest["checksum"],
                "manifest": manifest,
            }
        )

    client, _, _ = client_with(tmp_path, respond)
    data = b"quarterly report " * 1000
    async with client:
        out = await client.upload_artifact(data, artifact_type="report", filename="q3.md", labels={"inn": "7701"})
    assert isinstance(out, RegisterArtifactOutput)
    manifest = captured[0].data.params["manifest"]
    staged = Path(manifest["uri"].removeprefix("file://"))
    assert staged.parent == (tmp_path / "root" / "temp").resolve()
    assert staged.read_bytes() == data
    assert manifest["checksum"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert manifest["size_bytes"] == len(data)
    assert manifest["id"].startswith("art_") and staged.name == manifest["id"] + ".md"
    assert manifest["content_type"] == "text/markdown"
    assert manifest["trace_id"] == "trace-u" and manifest["created_by"] == "agent-unit"
    assert captured[0].data.context == {"requester_trace_id": "trace-u"}


async def test_upload_streams_a_local_file(tmp_path: Path) -> None:
    """A local file path is uploaded in chunks with the same checksum as the file."""
    source = tmp_path / "big.bin"
    source.write_bytes(bytes(range(256)) * 20_000)  # 5 MB, several chunks
    seen: list[dict[str, Any]] = []

    def respond(env: CommandEnvelope) -> Reply:
        seen.append(env.data.params["manifest"])
        return error("UNAVAILABLE", "db down", retryable=True)

    client, _, _ = client_with(tmp_path, respond, retries=0)
    async with client:
        out = await client.upload_artifact(source, artifact_type="dataset")
    assert isinstance(out, Buffered), "the worker was down: the registration waits in the buffer"
    assert seen[0]["checksum"] == "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
    assert seen[0]["content_type"] == "application/octet-stream"
    assert Path(seen[0]["uri"].removeprefix("file://")).read_bytes() == source.read_bytes()


async def test_upload_of_missing_file_raises_not_found(tmp_path: Path) -> None:
    """Uploading a path that does not exist fails with NotFound naming it, before anything is sent."""
    client, transport, _ = client_with(tmp_path, lambda env: result())
    async with client:
        with pytest.raises(NotFound) as raised:
            await client.upload_artifact(tmp_path / "nope.txt", artifact_type="report")
    assert raised.value.details["path"].endswith("nope.txt")
    assert transport.sent == []


def test_sync_client_serves_several_threads(tmp_path: Path) -> None:
    """A synchronous agent's threads can call at once through SyncStorageClient and each gets its own answer."""
    transport = FakeTransport(lambda env: result(saved(env)))
    outputs: dict[int, str] = {}

    with SyncStorageClient(transport=lambda s, on_event: transport, buffer_dir=tmp_path / "buf") as storage:

        def work(n: int) -> None:
            out = storage.save_thread(f"thread-{n}")
            assert not isinstance(out, Buffered)
            outputs[n] = out.thread_id

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert outputs == {n: f"thread-{n}" for n in range(8)}
    assert transport.closed
