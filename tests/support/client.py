"""Settings that point a StorageClient at a test worker, with millisecond retries."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from buffer import ReplayReport, StorageClient
from service.transport.worker import Worker

FAST_RETRIES: dict[str, Any] = {"retries": 3, "retry_initial_s": 0.01, "retry_multiplier": 2.0, "heartbeat_s": 3600}


def client_settings(worker: Worker, buffer_dir: Path, **overrides: Any) -> dict[str, Any]:
    """StorageClient keyword arguments for an agent of ``worker``: same broker, exchange and storage root."""
    values: dict[str, Any] = {
        "amqp_url": worker.settings.amqp_url,
        "exchange": worker.settings.exchange,
        "storage_root": worker.settings.storage_root,
        "buffer_dir": buffer_dir,
        "agent_id": "agent-test",
        "call_timeout_s": 5.0,
        **FAST_RETRIES,
    }
    values.update(overrides)
    return values


def replay_emptied(storage: StorageClient) -> asyncio.Event:
    """Set once a replay pass has sent something and left nothing in the buffer."""
    emptied = asyncio.Event()

    def observe(report: ReplayReport) -> None:
        if report.sent and report.remaining == 0:
            emptied.set()

    storage.on_replay.append(observe)
    return emptied
