"""``storage-worker top``: the live view's screen, its sources, and one run of the command."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from buffer.spill import SpillBuffer
from contracts import make_command
from service.cli.top import BufferState, QueueDepth, Sampler, Snapshot, read_buffer, render, top
from service.settings import Settings
from service.transport.worker import Worker
from tests.support.bus import Bus, error, output
from tests.support.workers import Outcomes, make_settings


def _snapshot(at: float, pings: float, not_found: float, latency_sum: float, queue: int) -> Snapshot:
    return Snapshot(
        at=at,
        commands={("ping", "OK"): pings, ("get_artifact", "NOT_FOUND"): not_found, ("get_artifact", "OK"): 5},
        latency_sum={"ping": latency_sum, "get_artifact": 0.5},
        latency_count={"ping": pings, "get_artifact": 5 + not_found},
        gauges={"storage_database_up": 1, "storage_broker_up": 0, "storage_in_flight_commands": 3},
        node="storage-primary",
        queue=QueueDepth(queue, 1),
        dlq=QueueDepth(2, 0),
        buffer=BufferState(pending=4, pending_bytes=2048, failed=1, quarantined=0, oldest_age_s=300),
    )


def test_screen_shows_rates_errors_latency_queue_and_buffer() -> None:
    """Between two refreshes the screen shows commands/s per action, errors, mean latency, queue trend, buffer."""
    before = _snapshot(1000.0, pings=10, not_found=1, latency_sum=0.010, queue=50)
    after = _snapshot(1002.0, pings=30, not_found=5, latency_sum=0.050, queue=10)
    screen = render(before, after, buffer_dir=Path("/agents/a/buffer"))
    lines = screen.splitlines()
    ping = next(line for line in lines if line.startswith("ping"))
    assert ping.split() == ["ping", "10.0", "0.0", "2.0", "30", "0"]  # 20 pings in 2 s, 40 ms / 20 = 2 ms
    get = next(line for line in lines if line.startswith("get_artifact"))
    assert get.split()[:3] == ["get_artifact", "2.0", "2.0"]  # 4 NOT_FOUND in 2 s
    assert next(line for line in lines if line.startswith("all ")).split() == ["all", "12.0"]
    assert "errors by code: NOT_FOUND 5" in screen
    assert "broker DOWN" in screen and "database up" in screen and "in flight 3" in screen
    assert "queue: 10 messages (-20.0/s), 1 consumers" in screen
    assert "dead letters: 2 messages (+0.0/s), 0 consumers" in screen
    assert "buffer /agents/a/buffer: 4 pending (2.0 KiB, oldest 5m old), 1 failed, 0 quarantined" in screen
    assert lines.index(ping) < lines.index(get)  # busiest action first


def test_first_screen_has_totals_and_says_rates_come_next() -> None:
    """Right after start there is no interval yet: totals show, rates are zero, and the header says why."""
    screen = render(None, _snapshot(1000.0, pings=7, not_found=0, latency_sum=0.07, queue=0))
    assert "rates from the next refresh on" in screen
    ping = next(line for line in screen.splitlines() if line.startswith("ping"))
    assert ping.split() == ["ping", "0.0", "0.0", "10.0", "7", "0"]


def test_unreadable_sources_are_named_not_hidden() -> None:
    """When the metrics or the broker cannot be read, the screen says so instead of showing zeros as facts."""
    current = Snapshot(at=1.0, problems=["metrics at http://x/metrics: refused"])
    screen = render(None, current, buffer_dir=Path("/b"))
    assert "(no commands yet)" in screen
    assert "queue: unknown" in screen
    assert "buffer /b: not readable" in screen
    assert "! metrics at http://x/metrics: refused" in screen


def test_buffer_count_reads_the_client_buffer_directory(tmp_path: Path) -> None:
    """Commands spilled by the agent's client are counted as pending, whatever else lies in the directory."""
    spill = SpillBuffer(tmp_path / "buffer").open()
    for n in range(3):
        spill.spill(make_command("save_thread", {"thread_id": f"t{n}", "messages": []}, source="agent"))
    state = read_buffer(tmp_path / "buffer")
    assert state.pending == 3
    assert state.pending_bytes > 0
    assert state.oldest_age_s is not None and state.oldest_age_s >= 0
    assert (state.failed, state.quarantined) == (0, 0)


@pytest.fixture
def settings(amqp_url: str, database_url: str, storage_root: Path) -> Settings:
    return make_settings(amqp_url, database_url, storage_root, metrics_port=0, metrics_host="127.0.0.1")


def _metrics_url(worker: Worker) -> str:
    assert worker.operations.metrics is not None
    return f"http://127.0.0.1:{worker.operations.metrics.port}/metrics"


async def test_sampler_reads_a_running_worker(worker: Worker, bus: Bus, tmp_path: Path) -> None:
    """Against a live worker the sampler sees its commands, its queue with one consumer and the buffer."""
    outcomes = Outcomes(worker)
    for _ in range(4):
        output(await bus.call("ping"))
    error(await bus.call("get_artifact", {"artifact_id": "art_00000000-0000-0000-0000-000000000000"}))
    await outcomes.wait(5)
    (tmp_path / "buffer").mkdir()
    sampler = Sampler(worker.settings, _metrics_url(worker), tmp_path / "buffer")
    try:
        snapshot = await sampler.sample()
    finally:
        await sampler.close()
    assert snapshot.problems == []
    assert snapshot.commands[("ping", "OK")] == 4
    assert snapshot.commands[("get_artifact", "NOT_FOUND")] == 1
    assert snapshot.node == worker.settings.node_name
    assert snapshot.queue == QueueDepth(0, 1)
    assert snapshot.dlq is not None and snapshot.dlq.consumers == 0
    assert snapshot.buffer is not None and snapshot.buffer.pending == 0


async def test_top_once_prints_one_screen(worker: Worker, bus: Bus, capsys: pytest.CaptureFixture[str]) -> None:
    """``storage-worker top --once`` prints a single plain screen (no escape codes) and exits 0."""
    outcomes = Outcomes(worker)
    output(await bus.call("ping"))
    await outcomes.wait(1)
    args = argparse.Namespace(metrics_url=_metrics_url(worker), buffer_dir=None, interval=0.05, once=True)
    assert await top(args, worker.settings) == 0
    screen = capsys.readouterr().out
    assert "\x1b[" not in screen
    assert screen.count("storage-worker top") == 1
    assert any(line.startswith("ping") for line in screen.splitlines())
    assert "queue: 0 messages" in screen


async def test_missing_queue_is_reported_as_unknown(amqp_url: str, tmp_path: Path) -> None:
    """Pointed at a queue that does not exist, the sampler reports it unknown and creates nothing."""
    settings = make_settings(amqp_url, "sqlite+aiosqlite:///unused.db", tmp_path)
    sampler = Sampler(settings, None, None)
    try:
        snapshot = await sampler.sample()
        assert snapshot.queue is None and snapshot.dlq is None
        again = await sampler.sample()  # the connection survives the closed channels
        assert again.queue is None
    finally:
        await sampler.close()
    assert any("STORAGE_METRICS_PORT" in p for p in snapshot.problems)


def test_missing_buffer_directory_means_nothing_buffered(tmp_path: Path) -> None:
    """Before the client's first spill its directory does not exist: the view shows 0 pending, not an error."""
    state = read_buffer(tmp_path / "never-created")
    assert (state.pending, state.failed, state.quarantined, state.oldest_age_s) == (0, 0, 0, None)
