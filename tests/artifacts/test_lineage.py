"""get_lineage: inputs and versions walked both ways, bounded, and blind to what the requester may not read.

The graph of a report: two sources feed an analysis, the analysis feeds a summary, and a second version
supersedes the analysis. A stranger's private artifact in that graph shows as ``hidden`` and the walk does not
go through it; an input that was never registered is hidden alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from buffer import StorageClient
from contracts import ArtifactManifest, EdgeKind, HiddenNode, LineageDirection, RegisterArtifactOutput
from service.store.engine import schema
from service.store.engine.db import create_engine
from tests.support.bus import Bus, error, output
from tests.support.client import client_settings
from tests.support.wire import register
from tests.support.workers import Workers

BOB = {"requester_id": "bob", "requester_trace_id": "trace-1"}
MALLORY = {"requester_id": "mallory", "requester_trace_id": "mallory-trace"}
NEVER_REGISTERED = "art_00000000-0000-4000-8000-00000000dead"


def _inputs(*ids: str) -> dict[str, Any]:
    return {"context": {"input_artifacts": list(ids)}}


async def _graph(bus: Bus, root: Path) -> dict[str, str]:
    """source_a, source_b → analysis → summary; analysis_v2 supersedes analysis. Bob's, visible to the trace."""
    a, _ = await register(bus, root, b"source a", command_context=BOB)
    b, _ = await register(bus, root, b"source b", command_context=BOB)
    analysis, _ = await register(bus, root, b"analysis", command_context=BOB, **_inputs(a["id"], b["id"], a["id"]))
    summary, _ = await register(bus, root, b"summary", command_context=BOB, **_inputs(analysis["id"]))
    v2, _ = await register(bus, root, b"analysis v2", command_context=BOB, supersedes=analysis["id"], version=2)
    return {"a": a["id"], "b": b["id"], "analysis": analysis["id"], "summary": summary["id"], "v2": v2["id"]}


def _edges(out: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(e["from"], e["to"], e["kind"]) for e in out["edges"]}


def _ids(out: dict[str, Any]) -> set[str]:
    return {node["id"] for node in out["nodes"]}


async def _lineage(bus: Bus, artifact_id: str, context: dict[str, str] = BOB, **params: Any) -> dict[str, Any]:
    return output(await bus.call("get_lineage", {"artifact_id": artifact_id, **params}, context=context))


async def test_both_ways_from_the_middle(workers: Workers, storage_root: Path) -> None:
    _, bus = await workers.start()
    g = await _graph(bus, storage_root)
    out = await _lineage(bus, g["analysis"])
    assert out["nodes"][0]["id"] == g["analysis"] and out["nodes"][0]["checksum"].startswith("sha256:")
    assert _ids(out) == set(g.values())
    assert _edges(out) == {
        (g["a"], g["analysis"], "input"),
        (g["b"], g["analysis"], "input"),
        (g["analysis"], g["summary"], "input"),
        (g["analysis"], g["v2"], "supersedes"),
    }
    assert out["truncated"] is False


async def test_direction_and_depth_bound_the_walk(workers: Workers, storage_root: Path) -> None:
    _, bus = await workers.start()
    g = await _graph(bus, storage_root)
    one_up = await _lineage(bus, g["summary"], direction="upstream", depth=1)
    assert _ids(one_up) == {g["summary"], g["analysis"]}
    assert _edges(one_up) == {(g["analysis"], g["summary"], "input")}
    two_up = await _lineage(bus, g["summary"], direction="upstream", depth=2)
    assert _ids(two_up) == {g["summary"], g["analysis"], g["a"], g["b"]}
    down = await _lineage(bus, g["a"], direction="downstream")
    assert _ids(down) == {g["a"], g["analysis"], g["summary"], g["v2"]}
    assert (g["analysis"], g["v2"], "supersedes") in _edges(down)


async def test_what_the_requester_may_not_read_is_hidden_and_not_walked_through(
    workers: Workers, storage_root: Path
) -> None:
    """Mallory's private artifact, made from a public one, sits between Bob's: Bob sees only its id, and
    neither the public artifact behind it nor anything else about it; an unregistered input is hidden too."""
    _, bus = await workers.start()
    behind, _ = await register(
        bus, storage_root, b"public but only behind", visibility="public", command_context=MALLORY
    )
    secret, _ = await register(
        bus, storage_root, b"mallory's", visibility="private", command_context=MALLORY, **_inputs(behind["id"])
    )
    mine, _ = await register(
        bus, storage_root, b"bob's", visibility="public", command_context=BOB, **_inputs(secret["id"], NEVER_REGISTERED)
    )
    derived, _ = await register(
        bus, storage_root, b"mallory derived", visibility="private", command_context=MALLORY, **_inputs(mine["id"])
    )
    out = await _lineage(bus, mine["id"], depth=5)
    hidden = [node for node in out["nodes"] if node.get("hidden")]
    assert sorted(hidden, key=lambda n: n["id"]) == sorted(
        [
            {"id": secret["id"], "hidden": True},
            {"id": NEVER_REGISTERED, "hidden": True},
            {"id": derived["id"], "hidden": True},
        ],
        key=lambda n: n["id"],
    )
    assert behind["id"] not in _ids(out), "the walk went on through a node Bob may not read"
    assert _edges(out) == {
        (secret["id"], mine["id"], "input"),
        (NEVER_REGISTERED, mine["id"], "input"),
        (mine["id"], derived["id"], "input"),
    }
    # Mallory, who may read all of it, sees the whole chain
    assert {behind["id"], secret["id"], mine["id"], derived["id"]} <= _ids(await _lineage(bus, mine["id"], MALLORY))


async def test_a_root_the_requester_may_not_read_answers_as_get_artifact(workers: Workers, storage_root: Path) -> None:
    _, bus = await workers.start()
    secret, _ = await register(bus, storage_root, b"private", visibility="private", command_context=MALLORY)
    for artifact_id in (secret["id"], NEVER_REGISTERED):
        refused = error(await bus.call("get_lineage", {"artifact_id": artifact_id}, context=BOB))
        as_get = error(await bus.call("get_artifact", {"artifact_id": artifact_id}, context=BOB))
        assert (refused["code"], refused["details"]) == (as_get["code"], as_get["details"])
        assert "mallory" not in str(refused)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"depth": 0}, "depth"),
        ({"depth": 11}, "depth"),
        ({"depth": "3; drop table"}, "depth"),
        ({"direction": "sideways"}, "direction"),
        ({"artifact_id": "../../etc/passwd"}, "artifact_id"),
        ({"artifact_id": NEVER_REGISTERED, "extra": 1}, "extra"),
    ],
)
async def test_bad_input_is_invalid_argument(workers: Workers, params: dict[str, Any], field: str) -> None:
    _, bus = await workers.start()
    refused = error(await bus.call("get_lineage", {"artifact_id": NEVER_REGISTERED, **params}, context=BOB))
    assert refused["code"] == "INVALID_ARGUMENT" and field in str(refused), refused


async def test_a_walk_past_the_reply_limit_is_truncated(workers: Workers, storage_root: Path) -> None:
    """40 inputs of ~600 bytes each do not fit a 16 KiB reply: the reply is cut, says so, and stays valid."""
    _, bus = await workers.start(max_reply_bytes=16 * 1024)
    sources = [(await register(bus, storage_root, f"source {i}".encode(), command_context=BOB))[0] for i in range(40)]
    made, _ = await register(
        bus, storage_root, b"made of forty", command_context=BOB, **_inputs(*(s["id"] for s in sources))
    )
    out = await _lineage(bus, made["id"], direction="upstream")
    assert out["truncated"] is True
    assert 1 < len(out["nodes"]) < 41 and out["nodes"][0]["id"] == made["id"]
    assert all(e["from"] in _ids(out) and e["to"] in _ids(out) for e in out["edges"])


async def test_the_client_gets_typed_nodes(workers: Workers, storage_root: Path, tmp_path: Path) -> None:
    """Through the client library: manifests as ArtifactManifest, the unreadable input as HiddenNode."""
    worker, bus = await workers.start()
    secret, _ = await register(bus, storage_root, b"private", visibility="private", command_context=MALLORY)
    settings = client_settings(worker, tmp_path / "buffer", agent_id="bob")
    async with StorageClient(**settings, trace_id="trace-1") as storage:
        source = await storage.upload_artifact(b"input", artifact_type="dataset", filename="in.csv")
        assert isinstance(source, RegisterArtifactOutput)
        inputs = [source.artifact_id, secret["id"]]
        made = await storage.upload_artifact(
            b"output", artifact_type="report", filename="out.md", ai_context={"input_artifacts": inputs}
        )
        assert isinstance(made, RegisterArtifactOutput)
        got = await storage.get_lineage(made.artifact_id, direction=LineageDirection.UPSTREAM, depth=1)
    kinds = {node.id: type(node) for node in got.nodes}
    assert kinds == {made.artifact_id: ArtifactManifest, source.artifact_id: ArtifactManifest, secret["id"]: HiddenNode}
    assert {(e.from_, e.to, e.kind) for e in got.edges} == {
        (source.artifact_id, made.artifact_id, EdgeKind.INPUT),
        (secret["id"], made.artifact_id, EdgeKind.INPUT),
    }


async def test_the_migration_indexes_the_inputs_already_registered(
    workers: Workers, storage_root: Path, database_url: str
) -> None:
    """Revision 0014 fills artifact_inputs from the stored manifests: undone and redone, the walk is the same."""
    worker, bus = await workers.start()
    g = await _graph(bus, storage_root)
    before = _edges(await _lineage(bus, g["analysis"]))
    await workers.stop(worker)
    engine = create_engine(database_url)
    try:
        await schema.downgrade(engine, "0013")
        await schema.migrate(engine)
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT count(*) FROM artifact_inputs"))).scalar_one()
    finally:
        await engine.dispose()
    assert rows == 3, "analysis names a twice and b once, summary names analysis: three distinct edges"
    _, bus = await workers.start()
    assert _edges(await _lineage(bus, g["analysis"])) == before
