"""SIGKILL at random moments while an agent spills and while it replays: nothing it was promised is lost."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from buffer import StorageClient
from service.transport.worker import Worker
from tests.support.agents import agent_process, killed_after
from tests.support.client import client_settings

KILLS = 20

pytestmark = pytest.mark.faults


async def _run_until_killed(args: list[str], delay_s: float) -> None:
    """Start the agent process, wait for ``ready``, let it work ``delay_s``, then SIGKILL it (if still alive)."""
    async with agent_process("tests.support.agent_proc", *args) as proc:
        if not await killed_after(proc, delay_s):
            assert proc.stderr is not None
            stderr = await proc.stderr.read()
            assert proc.returncode == 0, f"agent failed on its own: {stderr.decode()[-2000:]}"


async def test_sigkill_during_spill_and_replay_loses_no_acknowledged_command(
    worker: Worker, buffer_dir: Path, tmp_path: Path, closed_amqp_url: str
) -> None:
    """Killed 20 times at random points while spilling (broker unreachable) or replaying (worker up), the agent
    never loses a command it reported as buffered: even after the worker's temp_orphans moved every staged file
    away (an outage longer than an hour), each one is in the end registered exactly once with its bytes."""
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    ack_log = tmp_path / "acked.txt"
    common = [
        "--exchange", worker.settings.exchange,
        "--storage-root", worker.settings.storage_root,
        "--buffer-dir", str(buffer_dir),
    ]  # fmt: skip
    for kill in range(KILLS):
        if kill % 2 == 0:
            args = ["spill", "--amqp-url", closed_amqp_url, "--ack-log", str(ack_log), *common]
        else:
            args = ["replay", "--amqp-url", worker.settings.amqp_url, *common]
        await _run_until_killed(args, rng.uniform(0.0, 0.4))

    acked = [line for line in ack_log.read_text().split("\n") if line]
    assert len(acked) > KILLS, f"the spilling agents acknowledged only {len(acked)} commands (seed {seed})"
    # A second outage longer than an hour: the worker stops (finishing what it holds; replays the killed agents
    # sent may still wait in its queue) and its temp_orphans moves every staged file away meanwhile.
    await worker.stop()
    temp = Path(worker.settings.storage_root.removeprefix("file://")) / "temp"
    orphans = temp.parent / "orphans" / "temp"
    orphans.mkdir(parents=True, exist_ok=True)
    for staged in temp.iterdir():
        staged.rename(orphans / staged.name)
    await worker.start()

    async with StorageClient(**client_settings(worker, buffer_dir), trace_id="trace-crash") as storage:
        report = await storage.replay()
        assert report.remaining == 0 and report.stopped is None, f"{report} (seed {seed})"
        status = await storage.status()
        assert status.failed == [], f"commands refused on replay: {status.failed} (seed {seed})"
        manifests = [m async for m in storage.iter_artifacts(trace_id="trace-crash", page_size=1000)]
    registered = [m.id for m in manifests]
    assert len(registered) == len(set(registered))
    for manifest in manifests:
        data = Path(manifest.uri.removeprefix("file://")).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == manifest.checksum, f"{manifest.id} (seed {seed})"
    missing = set(acked) - set(registered)
    assert not missing, f"{len(missing)} acknowledged commands were lost (seed {seed})"
