"""MindBus registry participation: the node announces itself, beats with its load, and says goodbye."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contracts import EventEnvelope, PingOutput, PingParams, make_command
from service.core.actions import Action
from service.core.context import HandlerContext
from service.handlers import ACTIONS
from service.ops.registry import capabilities
from service.transport.worker import Worker
from tests.support.bus import Bus, output
from tests.support.databases import sqlite_url
from tests.support.operating import NodeEvents
from tests.support.workers import delete_topology, make_settings, running


@pytest.fixture
async def events_and_worker(amqp_url: str, tmp_path: Path) -> AsyncIterator[tuple[NodeEvents, Worker]]:
    """A listener bound to ``evt.node.#`` first, then a worker beating every 0.2 s on the same exchange."""
    root = tmp_path / "files"
    root.mkdir()
    settings = make_settings(amqp_url, sqlite_url(tmp_path), root, heartbeat_interval_s=0.2)
    async with NodeEvents(amqp_url, settings.exchange) as events, running(settings) as worker:
        yield events, worker


async def test_registered_event_carries_the_node_passport(events_and_worker: tuple[NodeEvents, Worker]) -> None:
    """A registry watching the bus learns the node's type, capabilities, queue and routing keys on start."""
    events, worker = events_and_worker
    body, message = await events.next("evt.node.registered")
    envelope = EventEnvelope.model_validate(body)
    passport = envelope.data.event_data
    s = worker.settings
    assert envelope.source == s.node_name
    assert passport["node_type"] == "storage"
    assert {"artifact_storage", "file_storage"} <= set(passport["capabilities"])
    assert passport["queue"] == s.queue
    assert passport["routing_keys"] == ["cmd.storage.any", f"cmd.storage.{s.node_name}"]
    assert passport["version"]
    assert set(passport["actions"]) == set(ACTIONS)
    assert message.routing_key == "evt.node.registered"
    assert message.priority == 10
    assert int(message.delivery_mode) == 2
    assert message.content_type == "application/json"
    assert message.message_id == envelope.id


async def test_heartbeat_counts_in_flight_and_total_tasks(
    events_and_worker: tuple[NodeEvents, Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a command is being executed the heartbeat shows it in flight; afterwards it is in the total."""
    events, worker = events_and_worker
    release = asyncio.Event()
    entered = asyncio.Event()
    real = ACTIONS["ping"]

    async def held_ping(params: PingParams, ctx: HandlerContext) -> PingOutput:
        entered.set()
        await release.wait()
        return await real.handler(params, ctx)

    monkeypatch.setitem(ACTIONS, "ping", Action(real.spec, held_ping))  # type: ignore[index]
    bus = await Bus(worker.settings.amqp_url, worker.settings.exchange, worker.settings.dlq).open()
    try:
        envelope = make_command("ping", source="agent-test")
        reply = await bus.publish(envelope.to_json_bytes(), correlation_id=envelope.id)
        assert reply is not None
        await asyncio.wait_for(entered.wait(), 15)
        busy, message = await events.next("evt.node.heartbeat")
        while busy["data"]["event_data"]["current_tasks"] != 1:  # a beat may have been on its way already
            busy, message = await events.next("evt.node.heartbeat")
        assert message.priority == 5
        assert busy["data"]["event_data"]["total_tasks"] == 0
        release.set()
        output(await asyncio.wait_for(reply, 15))
        idle, _ = await events.next("evt.node.heartbeat")
        while idle["data"]["event_data"]["total_tasks"] != 1:
            idle, _ = await events.next("evt.node.heartbeat")
        assert idle["data"]["event_data"]["current_tasks"] == 0
    finally:
        release.set()
        await bus.close()


async def test_stop_publishes_deregistered_with_graceful_shutdown(amqp_url: str, tmp_path: Path) -> None:
    """When the worker stops (SIGTERM), the registry is told it left on purpose, and no beat follows."""
    settings = make_settings(amqp_url, sqlite_url(tmp_path), tmp_path, heartbeat_interval_s=0.2)
    async with NodeEvents(amqp_url, settings.exchange) as events, running(settings) as worker:
        await events.next("evt.node.registered")
        await worker.stop()
        body, message = await events.next("evt.node.deregistered")
        assert body["data"]["event_data"]["reason"] == "GracefulShutdown"
        assert body["data"]["event_data"]["node_id"] == settings.node_name
        assert message.priority == 10
        assert worker.operations.registry is not None
        assert worker.operations.registry._heartbeat is None


def test_capabilities_follow_the_served_actions() -> None:
    """A node that serves threads and memory says so; one that serves only artifacts does not claim them."""
    assert capabilities(["register_artifact", "get_artifact"]) == ["artifact_storage", "file_storage"]
    full = capabilities(["register_artifact", "save_thread", "put_memory"])
    assert full == ["artifact_storage", "file_storage", "thread_storage", "memory_storage"]


async def test_registry_can_be_turned_off(amqp_url: str, tmp_path: Path) -> None:
    """With STORAGE_NODE_REGISTRY=false the worker serves commands without announcing itself."""
    settings = make_settings(amqp_url, sqlite_url(tmp_path), tmp_path, node_registry=False)
    async with NodeEvents(amqp_url, settings.exchange) as events, running(settings) as worker:
        assert worker.operations.registry is None
        async with Bus.of(settings) as bus:
            output(await bus.call("ping"))
        assert events.received.empty()


async def test_sigterm_to_the_cli_worker_deregisters_and_exits_zero(amqp_url: str, tmp_path: Path) -> None:
    """``storage-worker run`` told SIGTERM (as ``docker stop`` does) says goodbye on the bus and exits 0."""
    settings = make_settings(amqp_url, sqlite_url(tmp_path), tmp_path)
    events = await NodeEvents(amqp_url, settings.exchange).open()
    env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        "STORAGE_EXCHANGE": settings.exchange,
        "STORAGE_QUEUE": settings.queue,
        "STORAGE_DLQ": settings.dlq,
        "DATABASE_URL": settings.database_url,
        "STORAGE_ROOT": settings.storage_root,
        "STORAGE_CLEANUP_INTERVAL": "0",
    }
    log_file = (tmp_path / "worker.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "run", env=env, cwd=tmp_path, stdout=log_file, stderr=log_file
    )  # fmt: skip
    try:
        registered, _ = await events.next("evt.node.registered", within_s=60)
        assert registered["data"]["event_data"]["queue"] == settings.queue
        process.send_signal(signal.SIGTERM)
        farewell, _ = await events.next("evt.node.deregistered", within_s=30)
        assert farewell["data"]["event_data"]["reason"] == "GracefulShutdown"
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log_file.close()
        await events.close()
        await delete_topology(settings)
