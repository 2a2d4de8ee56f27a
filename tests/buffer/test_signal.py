"""``StorageClient.signal``: an operator's program pauses and resumes storage nodes over the bus."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from buffer import StorageClient
from service.transport.worker import Worker
from tests.support.bus import Bus, output
from tests.support.client import client_settings


async def _paused(worker: Worker, within_s: float = 10.0) -> None:
    for _ in range(int(within_s / 0.02)):
        if worker.paused:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the node did not pause")


async def test_a_client_pauses_and_resumes_its_node(worker: Worker, tmp_path: Path) -> None:
    """As an admin broker user: ``signal("pause", target=<node>)`` holds commands, ``signal("resume")`` (every
    storage node) lets them through; the routing keys are the MindBus ones."""
    s = worker.settings
    async with StorageClient(**client_settings(worker, tmp_path / "buffer")) as operator, Bus.of(s) as bus:
        assert await operator.signal("pause", target=s.node_name, reason="test") == f"ctl.{s.node_name}.pause"
        await _paused(worker)
        waiting = asyncio.ensure_future(bus.call("ping", timeout=30))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        assert await operator.signal("resume") == "ctl.storage.resume"
        assert output(await waiting)["node"] == s.node_name


async def test_a_signal_to_no_valid_target_is_refused_before_sending(worker: Worker, tmp_path: Path) -> None:
    async with StorageClient(**client_settings(worker, tmp_path / "buffer")) as operator:
        with pytest.raises(ValueError, match="ControlScope"):
            await operator.signal("reboot")
        with pytest.raises(ValueError, match="node name"):
            await operator.signal("pause", target="a.b")
    assert not worker.paused
