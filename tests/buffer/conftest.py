"""Client fixtures: a buffer folder, and a broker URL nothing answers."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest


@pytest.fixture
def buffer_dir(tmp_path: Path) -> Path:
    return tmp_path / "buffer"


@pytest.fixture
def closed_amqp_url() -> str:
    """An AMQP URL on a local port nothing listens on: the broker is unreachable."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"amqp://guest:guest@127.0.0.1:{port}/"
