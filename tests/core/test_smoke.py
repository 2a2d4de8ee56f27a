"""The first things an agent does: ping the worker, register an artifact, read it back; and every action is served."""

from __future__ import annotations

import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

from contracts import ACTIONS, topology
from tests.support.artifacts import manifest_for
from tests.support.broker import ADMIN_AMQP
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


async def test_every_served_action_has_a_handler(bus: Bus, storage_root: Path) -> None:
    """Every action of the contract, sent with minimal valid params, is answered with a RESULT: none is
    UNIMPLEMENTED or refused as malformed (sent as an admin, so the admin actions run too)."""
    manifest = manifest_for(storage_root, b"served")
    item = {"namespace": ["smoke"], "key": "k"}
    minimal: dict[str, dict[str, Any]] = {
        "ping": {},
        "get_stats": {},
        "register_artifact": {"manifest": manifest},
        "get_artifact": {"artifact_id": manifest["id"]},
        "get_artifact_uri": {"artifact_id": manifest["id"]},
        "get_lineage": {"artifact_id": manifest["id"]},
        "list_artifacts": {},
        "delete_artifact": {"artifact_id": manifest["id"]},
        "restore_artifact": {"artifact_id": manifest["id"]},
        "save_thread": {"thread_id": "smoke-thread"},
        "get_thread": {"thread_id": "smoke-thread"},
        "get_thread_info": {"thread_id": "smoke-thread"},
        "list_threads": {},
        "delete_thread": {"thread_id": "smoke-thread"},
        "restore_thread": {"thread_id": "smoke-thread"},
        "put_memory": {**item, "value": {"v": 1}},
        "get_memory": item,
        "search_memory": {},
        "list_namespaces": {},
        "delete_memory": item,
        "cleanup": {"dry_run": True},
        "changes_since": {},
    }
    assert set(minimal) == set(ACTIONS), "give each action of the contract its minimal params here"
    answers = {action: await bus.call(action, params, amqp=ADMIN_AMQP) for action, params in minimal.items()}
    not_served = {action: reply["data"] for action, reply in answers.items() if reply["type"] != "ai.team.result"}
    assert not_served == {}
