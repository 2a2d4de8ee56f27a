"""CONTROL signals: ``ctl.{all,storage,<node>}.{pause,resume,shutdown,config,stop}`` from an admin broker identity
steer the node; from anyone else they are logged and dropped, and nothing is ever answered."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import aio_pika
import pytest

from contracts import CONTROL_TYPE, CleanupScope, ControlData, ControlEnvelope, ControlScope, control_routing_key
from service.bootstrap import StorageNode
from service.maintenance import cleanup
from service.transport.worker import Worker
from tests.support.broker import ADMIN_AMQP, broker_user
from tests.support.broker_users import broker_account
from tests.support.bus import Bus, error, output
from tests.support.operating import NodeEvents, http_get
from tests.support.worker_process import WorkerProcess, worker_env
from tests.support.workers import delete_topology, make_settings, running

SETTLE_S = 10.0


async def send_signal(
    amqp_url: str, exchange: str, target: str, scope: ControlScope, *, as_user: bool = True, reason: str = "test"
) -> None:
    """Publish one CONTROL signal as the URL's broker user (``user_id`` set, the broker checks it) or as nobody."""
    async with await aio_pika.connect(amqp_url) as conn:
        channel = await conn.channel(publisher_confirms=True)
        ctl = ControlEnvelope(source="ops-test", data=ControlData(reason=reason))
        await (await channel.get_exchange(exchange)).publish(
            aio_pika.Message(
                ctl.to_json_bytes(),
                message_id=ctl.id,
                type=CONTROL_TYPE,
                priority=255,
                content_type="application/json",
                user_id=broker_user(amqp_url) if as_user else None,
            ),
            routing_key=control_routing_key(target, scope),
        )


def node(worker: Worker) -> StorageNode:
    return cast(StorageNode, worker)


async def until(check: Callable[[], bool], within_s: float = SETTLE_S) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "the worker did not react in time"
        await asyncio.sleep(0.02)


async def obeyed_after(worker: Worker, send: Callable[[], Awaitable[None]]) -> list[ControlScope]:
    """Send, then a harmless admin ``resume`` as a marker: once the marker is obeyed, everything before it was read."""
    seen = len(node(worker).control.obeyed)
    await send()
    s = worker.settings
    await send_signal(s.amqp_url, s.exchange, s.node_name, ControlScope.RESUME, reason="marker")
    await until(lambda: node(worker).control.obeyed[seen:][-1:] == [ControlScope.RESUME])
    return node(worker).control.obeyed[seen:-1]


@pytest.fixture
async def beating(amqp_url: str, database_url: str, storage_root: Path) -> AsyncIterator[tuple[Worker, NodeEvents]]:
    settings = make_settings(
        amqp_url, database_url, storage_root, heartbeat_interval_s=0.2, metrics_port=0, metrics_host="127.0.0.1"
    )
    async with NodeEvents(amqp_url, settings.exchange) as events, running(settings) as worker:
        yield worker, events


async def heartbeat_status(events: NodeEvents, wanted: str) -> None:
    for _ in range(50):
        body, _ = await events.next("evt.node.heartbeat")
        if body["data"]["event_data"]["status"] == wanted:
            return
    raise AssertionError(f"no heartbeat said {wanted}")


async def test_pause_holds_commands_until_resume(beating: tuple[Worker, NodeEvents]) -> None:
    """``ctl.<node>.pause``: commands wait in the queue, heartbeats and /healthz say paused; ``ctl.storage.resume``
    answers them."""
    worker, events = beating
    s = worker.settings
    async with Bus.of(s) as bus:
        await send_signal(s.amqp_url, s.exchange, s.node_name, ControlScope.PAUSE)
        await until(lambda: worker.paused)
        pending = asyncio.ensure_future(bus.call("ping", timeout=30))
        await heartbeat_status(events, "paused")
        metrics = node(worker).operations.metrics
        assert metrics is not None and metrics.port is not None
        status, _, body = await http_get(metrics.port, "/healthz")
        assert (status, json.loads(body)["status"], json.loads(body)["paused"]) == (200, "paused", True)
        await asyncio.sleep(0.5)
        assert not pending.done(), "a paused node answered a command"
        await send_signal(s.amqp_url, s.exchange, "storage", ControlScope.RESUME)
        assert output(await pending)["node"] == s.node_name
        await heartbeat_status(events, "ready")


async def test_signals_reach_all_storage_and_the_named_node_only(worker: Worker) -> None:
    """``ctl.all.*`` and ``ctl.storage.*`` reach every storage node; ``ctl.<other>.*`` does not reach this one."""
    s = worker.settings
    assert (
        await obeyed_after(worker, lambda: send_signal(s.amqp_url, s.exchange, "other-node", ControlScope.PAUSE)) == []
    )
    assert not worker.paused
    await send_signal(s.amqp_url, s.exchange, "all", ControlScope.PAUSE)
    await until(lambda: worker.paused)
    await send_signal(s.amqp_url, s.exchange, "storage", ControlScope.RESUME)
    await until(lambda: not worker.paused)


async def test_a_signal_from_an_agent_that_is_no_admin_is_dropped(
    worker: Worker, amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A real broker user who is not an admin, and a signal without any user_id: logged, dropped, unanswered."""
    s = worker.settings
    caplog.set_level(logging.WARNING, logger="service.ops.control")
    with broker_account(amqp_url, "ctl-agent") as (agent, agent_url):

        async def hostile() -> None:
            await send_signal(agent_url, s.exchange, "all", ControlScope.PAUSE)
            await send_signal(amqp_url, s.exchange, s.node_name, ControlScope.SHUTDOWN, as_user=False)

        assert await obeyed_after(worker, hostile) == []
    assert not worker.paused and not worker.stop_requested.is_set()
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert any(repr(agent) in line for line in dropped) and any("None" in line for line in dropped)
    async with Bus.of(s) as bus:
        assert output(await bus.call("ping"))["node"] == s.node_name


async def test_config_rereads_the_live_settings(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    """``config`` applies a new admin list, log level and cleanup interval from the environment, nothing else."""
    s = worker.settings
    monkeypatch.setenv("STORAGE_ADMINS", f"{broker_user(s.amqp_url)},ops-two")
    monkeypatch.setenv("STORAGE_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("STORAGE_CLEANUP_INTERVAL", "0.2")
    monkeypatch.setenv("STORAGE_MAX_FILE_BYTES", "1234")  # not live: stays
    runs = node(worker).maintenance.runs
    config = send_signal(s.amqp_url, s.exchange, s.node_name, ControlScope.CONFIG)
    assert await obeyed_after(worker, lambda: config) == [ControlScope.CONFIG]
    assert s.admins == {broker_user(s.amqp_url), "ops-two"}
    assert logging.getLogger().level == logging.DEBUG
    assert s.max_file_bytes != 1234
    async with asyncio.timeout(10):
        await node(worker).maintenance.wait_for_run(runs)
    logging.getLogger().setLevel(logging.INFO)


async def test_stop_cancels_a_running_cleanup(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    """``stop`` cancels the cleanup in progress: its caller gets CANCELLED with what was done, the worker goes on."""
    s = worker.settings
    started = asyncio.Event()

    async def endless(ctx: Any) -> int:
        started.set()
        await asyncio.sleep(3600)
        return 0

    monkeypatch.setitem(cleanup.SCOPES, CleanupScope.INBOX, endless)
    async with Bus.of(s) as bus:
        running_cleanup = asyncio.ensure_future(
            bus.call("cleanup", {"scopes": ["expired_memory", "inbox"]}, amqp=ADMIN_AMQP)
        )
        async with asyncio.timeout(SETTLE_S):
            await started.wait()
        await send_signal(s.amqp_url, s.exchange, s.node_name, ControlScope.STOP)
        failed = error(await asyncio.wait_for(running_cleanup, SETTLE_S))
        assert failed["code"] == "CANCELLED"
        assert failed["details"]["counts"] == {"expired_memory": 0} and failed["details"]["stopped"] == ["inbox"]
        assert output(await bus.call("ping"))["node"] == s.node_name


async def test_shutdown_stops_the_process_gracefully(amqp_url: str, tmp_path: Path) -> None:
    """``storage-worker signal shutdown`` (``ctl.<node>.shutdown``) ends ``storage-worker run`` as SIGTERM would."""
    process = WorkerProcess(worker_env(amqp_url, tmp_path), tmp_path)
    try:
        await process.start()
        sender = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service.cli",
            "signal",
            "shutdown",
            "--reason",
            "maintenance window",
            env={**os.environ, **process.env},
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
        )
        said, _ = await sender.communicate()
        assert sender.returncode == 0 and f"ctl.{process.node_name}.shutdown" in said.decode()
        assert await process.wait_exit(30) == 0
        assert process.current.count("maintenance window") == 1
        assert process.current.count("stopped") >= 1
    finally:
        await process.kill()
        await delete_topology(process)
