"""Class 10: ``timeout_seconds`` never leaves a committed artifact without its file.

An agent sets ``timeout_seconds: 1`` on a registration while the worker's single writer is busy. Whatever
the reply, what it says must be true: DEADLINE_EXCEEDED means nothing was committed and the upload is still
in ``temp/``; SUCCESS means the file is in ``artifacts/``. A retry with the same idempotency key never
reports SUCCESS for a file that does not exist.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

import service.store.artifacts as artifact_store
from service.transport.worker import Worker
from tests.support.artifacts import manifest_for
from tests.support.bus import Bus, error, output
from tests.support.wire import path_of
from tests.support.workers import Workers

pytestmark = pytest.mark.security

ALICE = {"requester_id": "alice", "requester_trace_id": "trace-1"}


async def writer_idle(worker: Worker) -> None:
    """Wait until everything queued before now has run in the writer (a no-op job goes through after it)."""

    async def noop(conn: AsyncConnection) -> None:
        return None

    assert worker.services is not None
    await worker.services.writer.submit(noop)


async def check_the_reply_tells_the_truth(
    bus: Bus, worker: Worker, manifest: dict[str, Any], data: bytes, reply: dict[str, Any], key: str
) -> str:
    """DEADLINE_EXCEEDED ⇒ no row and the upload untouched; SUCCESS ⇒ the file in place; a retry never lies."""
    await writer_idle(worker)
    staged = path_of(manifest["uri"])
    stored = await bus.call("get_artifact", {"artifact_id": manifest["id"]}, context=ALICE)
    if reply["type"] == "ai.team.error":
        assert error(reply)["code"] == "DEADLINE_EXCEEDED", reply["data"]
        assert error(stored)["code"] == "NOT_FOUND", "DEADLINE_EXCEEDED, yet the registration committed"
        assert staged.read_bytes() == data, "DEADLINE_EXCEEDED, yet the upload left temp/"
        outcome = "deadline"
    else:
        placed = path_of(output(reply)["uri"])
        assert placed.is_relative_to(worker.settings.storage_root.removeprefix("file://"))
        assert placed.read_bytes() == data, "SUCCESS, yet the file is not in artifacts/"
        assert output(stored)["manifest"]["status"] == "completed"
        outcome = "success"
    retry = output(await bus.call("register_artifact", {"manifest": manifest}, context=ALICE, idempotency_key=key))
    assert path_of(retry["uri"]).read_bytes() == data, "the retry reported SUCCESS for a file that does not exist"
    return outcome


async def test_a_deadline_that_runs_out_while_the_write_waits_commits_nothing(workers: Workers) -> None:
    """The writer is held for 3 s; a 1 s registration is DEADLINE_EXCEEDED, commits nothing, leaves the upload."""
    worker, bus = await workers.start()
    assert worker.services is not None
    root = Path(worker.settings.storage_root.removeprefix("file://"))
    data = f"held behind a busy writer {uuid.uuid4()}".encode()
    manifest = manifest_for(root, data)
    key = str(uuid.uuid4())

    async def hog(conn: AsyncConnection) -> None:
        await asyncio.sleep(3)

    held = asyncio.ensure_future(worker.services.writer.submit(hog))
    await asyncio.sleep(0.2)
    started = asyncio.get_running_loop().time()
    reply = await bus.call(
        "register_artifact", {"manifest": manifest}, context=ALICE, idempotency_key=key, timeout_seconds=1
    )
    answered_after = asyncio.get_running_loop().time() - started
    await held
    assert await check_the_reply_tells_the_truth(bus, worker, manifest, data, reply, key) == "deadline"
    assert answered_after < 2.5, "DEADLINE_EXCEEDED is answered when the deadline passes, not when the writer frees"


async def test_a_write_that_started_in_time_runs_to_its_end(workers: Workers, monkeypatch: pytest.MonkeyPatch) -> None:
    """The write starts at once and takes 2 s in the writer: the 1 s deadline cannot cut it: SUCCESS, file in place."""
    original = artifact_store.insert_artifact

    async def slow_insert(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(2)
        return await original(*args, **kwargs)

    monkeypatch.setattr(artifact_store, "insert_artifact", slow_insert)
    worker, bus = await workers.start()
    root = Path(worker.settings.storage_root.removeprefix("file://"))
    data = f"a slow commit {uuid.uuid4()}".encode()
    manifest = manifest_for(root, data)
    key = str(uuid.uuid4())
    reply = await bus.call(
        "register_artifact", {"manifest": manifest}, context=ALICE, idempotency_key=key, timeout_seconds=1
    )
    assert await check_the_reply_tells_the_truth(bus, worker, manifest, data, reply, key) == "success"
