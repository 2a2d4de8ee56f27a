"""The first things an agent does: ping the worker, register an artifact, read it back."""

from __future__ import annotations

import uuid
from importlib.metadata import version
from pathlib import Path

from contracts import topology
from tests.support.artifacts import manifest_for
from tests.support.bus import Bus, output
from tests.support.workers import Workers


async def test_ping_answers_with_node_and_version(workers: Workers) -> None:
    """An agent that pings a storage node by its name learns that name and the version installed."""
    name = f"storage-smoke-{uuid.uuid4().hex[:6]}"
    _, bus = await workers.start(node_name=name)
    out = output(await bus.call("ping", routing_key=topology.node_routing_key(name)))
    assert out["node"] == name
    assert out["version"] == version("mindbus-storage")


async def test_register_then_get_returns_same_manifest(bus: Bus, storage_root: Path) -> None:
    """A registered artifact reads back with its permanent URI and completed status."""
    manifest = manifest_for(storage_root, b"hello")
    registered = output(await bus.call("register_artifact", {"manifest": manifest}))
    assert registered["registered"] is True
    got = output(
        await bus.call("get_artifact", {"artifact_id": manifest["id"]}, context={"requester_trace_id": "trace-1"})
    )
    assert got["manifest"]["status"] == "completed"
    assert got["manifest"]["uri"] == registered["uri"]
    assert Path(registered["uri"].removeprefix("file://")).read_bytes() == b"hello"
