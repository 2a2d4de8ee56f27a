"""One command's path without a broker: how a delivery is settled and what the inbox keeps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import make_command
from service.core.context import Services
from service.core.pipeline import Delivery, Pipeline, Settle
from service.handlers import ACTIONS
from service.store import artifacts as artifact_store
from service.store.engine.db import create_engine
from service.store.engine.writer import SingleWriter
from tests.support.artifacts import manifest_for


def reply_data(body: bytes | None) -> dict:
    assert body is not None
    return json.loads(body)["data"]  # type: ignore[no-any-return]


async def test_refused_bodies_are_rejected_valid_ones_acked(services: Services) -> None:
    """Garbage is answered and rejected (to the DLQ); a valid command is acked; no reply_to means no reply."""
    pipeline = Pipeline(services, ACTIONS)
    garbage = await pipeline.process(Delivery(b"not json", reply_to="q", correlation_id="c"))
    assert garbage.settle is Settle.REJECT and garbage.code == "INVALID_ARGUMENT"
    assert reply_data(garbage.body)["error"]["code"] == "INVALID_ARGUMENT"
    ping = make_command("ping", source="a").to_json_bytes()
    answered = await pipeline.process(Delivery(ping, reply_to="q"))
    assert answered.settle is Settle.ACK and reply_data(answered.body)["output"]["node"] == "storage-primary"
    silent = await pipeline.process(Delivery(ping))
    assert silent.settle is Settle.ACK and silent.body is None and silent.code == "OK"


async def test_retryable_failures_are_not_stored_so_a_retry_can_succeed(
    services: Services, storage_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write the database failed (UNAVAILABLE) is not kept in the inbox: the same envelope later runs for real."""
    manifest = manifest_for(storage_root, b"retry me")
    body = make_command("register_artifact", {"manifest": manifest}, source="a").to_json_bytes()
    armed = [True]
    insert_artifact = artifact_store.insert_artifact

    async def disk_error_once(conn: AsyncConnection, *args: Any, **kwargs: Any) -> bool:
        if armed:
            armed.clear()
            raise OperationalError("INSERT INTO artifacts", {}, Exception("disk I/O error"))
        return await insert_artifact(conn, *args, **kwargs)

    monkeypatch.setattr(artifact_store, "insert_artifact", disk_error_once)
    failed = await Pipeline(services, ACTIONS).process(Delivery(body, reply_to="q"))
    assert not armed, "the injected failure fired"
    error = reply_data(failed.body)["error"]
    assert (error["code"], error["retryable"]) == ("UNAVAILABLE", True)
    assert failed.settle is Settle.ACK, "the reply told the sender to retry; the message is not requeued"
    assert Path(manifest["uri"].removeprefix("file://")).exists(), "nothing moved before the commit"

    retried = await Pipeline(services, ACTIONS).process(Delivery(body, reply_to="q"))
    assert reply_data(retried.body)["output"]["registered"] is True
    assert reply_data(retried.body) != reply_data(failed.body)


async def test_a_database_that_is_down_is_unavailable(services: Services, storage_root: Path) -> None:
    """With the database unreachable a write is answered UNAVAILABLE (retryable), and acked."""
    manifest = manifest_for(storage_root, b"nowhere to go")
    body = make_command("register_artifact", {"manifest": manifest}, source="a").to_json_bytes()
    down = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")
    writer = SingleWriter(down)
    await writer.start()
    try:
        outage = Services(settings=services.settings, engine=down, writer=writer, files=services.files)
        failed = await Pipeline(outage, ACTIONS).process(Delivery(body, reply_to="q"))
    finally:
        await writer.stop()
        await down.dispose()
    error = reply_data(failed.body)["error"]
    assert (error["code"], error["retryable"]) == ("UNAVAILABLE", True)
    assert failed.settle is Settle.ACK
