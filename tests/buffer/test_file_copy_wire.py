"""An outage longer than the worker's temp/ window, against the real worker: the buffered upload still lands."""

from __future__ import annotations

import os
import time
from pathlib import Path

from buffer import Buffered, CallTimeout, Replayer, StorageClient
from buffer.restage import StorageFiles
from buffer.rpc import Reply, RpcTransport
from contracts import CommandEnvelope
from service.transport.worker import Worker
from tests.support.client import client_settings

TWO_HOURS_S = 2 * 3600


def staged_path(out: Buffered) -> Path:
    return Path(out.params["manifest"]["uri"].removeprefix("file://"))


async def run_temp_orphans(worker: Worker, tmp_path: Path, staged: Path) -> None:
    """Age the staged file past the hour and let the worker's own temp_orphans cleanup move it to orphans/."""
    old = time.time() - TWO_HOURS_S
    os.utime(staged, (old, old))
    admin = client_settings(worker, tmp_path / "admin-buffer", user_id=True)  # the broker's user: an admin
    async with StorageClient(**admin) as storage:
        cleaned = await storage.cleanup(scopes=["temp_orphans"])
    assert cleaned.counts.get("temp_orphans") == 1, cleaned.counts
    assert not staged.exists()


async def test_upload_buffered_longer_than_the_temp_window_is_registered_once_with_its_bytes(
    worker: Worker, buffer_dir: Path, tmp_path: Path, closed_amqp_url: str
) -> None:
    """An upload buffered while the broker was unreachable, whose staged file the worker's temp_orphans moved to
    orphans/ during a two-hour outage, is registered exactly once on replay with the right bytes at its
    permanent URI; the buffer ends empty, nothing failed and no temp file is left."""
    data = os.urandom(200_000)
    down = client_settings(worker, buffer_dir, amqp_url=closed_amqp_url, connect_timeout_s=2.0)
    async with StorageClient(**down, trace_id="trace-long-outage") as storage:
        out = await storage.upload_artifact(data, artifact_type="report", filename="result.bin")
    assert isinstance(out, Buffered) and out.file_copy is not None
    artifact_id = out.params["manifest"]["id"]
    staged = staged_path(out)
    await run_temp_orphans(worker, tmp_path, staged)

    async with StorageClient(**client_settings(worker, buffer_dir), trace_id="trace-long-outage") as storage:
        report = await storage.replay()
        status = await storage.status()
        assert status.pending == 0 and status.failed == [] and status.quarantined == 0, (report, status)
        listed = [m async for m in storage.iter_artifacts(trace_id="trace-long-outage")]
        got = await storage.get_artifact(artifact_id)
    assert [m.id for m in listed] == [artifact_id]
    assert got.manifest.status == "completed" and "/artifacts/" in got.manifest.uri
    assert Path(got.manifest.uri.removeprefix("file://")).read_bytes() == data
    assert list(staged.parent.iterdir()) == []
    assert list(buffer_dir.joinpath("pending").iterdir()) == []


async def test_lost_reply_then_long_outage_registers_once_and_leaves_no_duplicate(
    worker: Worker, buffer_dir: Path, tmp_path: Path, closed_amqp_url: str
) -> None:
    """A replay the worker executed but whose reply was lost, then replayed again once the temp file is gone: the
    file is put back, the worker answers with the stored reply (one artifact), and the duplicate is removed."""
    data = b"executed once, reply lost"
    down = client_settings(worker, buffer_dir, amqp_url=closed_amqp_url, connect_timeout_s=2.0)
    async with StorageClient(**down, trace_id="trace-lost-reply") as storage:
        out = await storage.upload_artifact(data, artifact_type="report", filename="r.txt")
        buffer = storage.buffer
    assert isinstance(out, Buffered)
    staged = staged_path(out)
    files = StorageFiles(worker.settings.storage_root)
    transport = RpcTransport(worker.settings.amqp_url, worker.settings.exchange, connect_timeout_s=5.0)
    try:

        async def send(envelope: CommandEnvelope) -> Reply:
            return await transport.call(envelope, routing_key="cmd.storage.any", timeout_s=10.0, expire=False)

        async def send_and_lose_the_reply(envelope: CommandEnvelope) -> Reply:
            await send(envelope)
            raise CallTimeout(envelope.data.action, 10.0)

        first = await Replayer(buffer, send_and_lose_the_reply, files).run()
        assert first.stopped is not None and first.remaining == 1
        assert not staged.exists()  # the worker registered it and moved the file to artifacts/
        second = await Replayer(buffer, send, files).run()
        assert (second.sent, second.remaining) == (1, 0) and buffer.counters.restaged == 1
    finally:
        await transport.close()
    assert not staged.exists(), "the file put back for the replay is a duplicate and is removed"
    async with StorageClient(**client_settings(worker, tmp_path / "reader"), trace_id="trace-lost-reply") as reader:
        listed = [m async for m in reader.iter_artifacts(trace_id="trace-lost-reply")]
    assert [m.id for m in listed] == [out.params["manifest"]["id"]]
    assert Path(listed[0].uri.removeprefix("file://")).read_bytes() == data


async def test_replay_after_a_stored_not_found_still_registers_once(
    worker: Worker, buffer_dir: Path, tmp_path: Path, closed_amqp_url: str
) -> None:
    """A queued copy of the buffered envelope that the worker ran while the file was away left a stored NOT_FOUND
    for its idempotency key; replay puts the file back and registers it under a new envelope, once."""
    data = b"the worker said not found once"
    down = client_settings(worker, buffer_dir, amqp_url=closed_amqp_url, connect_timeout_s=2.0)
    async with StorageClient(**down, trace_id="trace-stored-404") as storage:
        out = await storage.upload_artifact(data, artifact_type="report", filename="r.txt")
        [entry] = storage.buffer.entries()
        item = storage.buffer.load(entry)
    assert isinstance(out, Buffered) and item is not None
    await run_temp_orphans(worker, tmp_path, staged_path(out))
    transport = RpcTransport(worker.settings.amqp_url, worker.settings.exchange, connect_timeout_s=5.0)
    try:
        queued = await transport.call(item.envelope, routing_key="cmd.storage.any", timeout_s=10.0, expire=False)
    finally:
        await transport.close()
    assert queued.type == "ai.team.error" and queued.data.error.code == "NOT_FOUND"  # type: ignore[union-attr]

    async with StorageClient(**client_settings(worker, buffer_dir), trace_id="trace-stored-404") as storage:
        report = await storage.replay()
        status = await storage.status()
        listed = [m async for m in storage.iter_artifacts(trace_id="trace-stored-404")]
    assert status.pending == 0 and status.failed == [], (report, status)
    assert [m.id for m in listed] == [out.params["manifest"]["id"]]
    assert Path(listed[0].uri.removeprefix("file://")).read_bytes() == data
