"""Deleting an artifact keeps a tombstone (issue 20, item 1), on both databases over the real broker.

A deleted artifact is NOT_FOUND with ``details.reason = "deleted"`` for a requester who could read it (anyone
else gets what an unknown id gets), out of every listing and count, skipped by ``latest``; its id stays taken.
``restore_artifact`` (admin) brings it back with its file within ``STORAGE_PURGE_AFTER``; ``purge_deleted``
removes it, file included, after that. Over raw AMQP and through the client library.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from buffer import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, StorageClient
from contracts import RegisterArtifactOutput, make_command
from service.transport.worker import Worker
from tests.support.artifacts import manifest_for, new_artifact_id
from tests.support.bus import Bus, error, output
from tests.support.client import client_settings
from tests.support.maintenance import age_file, ago, artifacts, cleanup, execute
from tests.support.wire import ADMIN_AMQP, path_of, register
from tests.support.workers import Workers

BOB = {"requester_id": "bob", "requester_trace_id": "bob-trace"}
ALICE = {"requester_id": "alice", "requester_trace_id": "alice-trace"}


async def get(bus: Bus, artifact_id: str, context: dict[str, Any] = BOB, **params: Any) -> dict[str, Any]:
    return await bus.call("get_artifact", {"artifact_id": artifact_id, **params}, context=context)


async def delete(bus: Bus, artifact_id: str) -> dict[str, Any]:
    return output(await bus.call("delete_artifact", {"artifact_id": artifact_id}, amqp=ADMIN_AMQP))


async def restore(bus: Bus, artifact_id: str) -> dict[str, Any]:
    return await bus.call("restore_artifact", {"artifact_id": artifact_id}, amqp=ADMIN_AMQP)


async def listed(bus: Bus, context: dict[str, Any] = BOB, **params: Any) -> list[str]:
    return [m["id"] for m in output(await bus.call("list_artifacts", params, context=context))["artifacts"]]


def orphan_of(storage_root: Path, uri: str) -> Path:
    return storage_root / "orphans" / path_of(uri).relative_to(storage_root)


async def test_a_tombstone_is_not_found_with_a_reason_only_for_its_readers(bus: Bus, storage_root: Path) -> None:
    """Bob learns his artifact was deleted; Alice, who may not read it, gets exactly what an unknown id gets.
    Lists, counts and the file skip it; its id stays taken; a replayed registration gets its stored reply."""
    sent = manifest_for(storage_root, b"bob's secret", visibility="private", trace_id="bob-trace")
    envelope = make_command("register_artifact", {"manifest": sent}, source="agent-test", context=BOB)
    first = await bus.send(envelope.to_json_bytes(), envelope.id)
    assert output(first)["registered"] is True
    secret, uri = sent["id"], output(first)["uri"]
    _, kept = await register(bus, storage_root, b"bob's other", visibility="private", command_context=BOB)
    assert (await delete(bus, secret)) == {"artifact_id": secret, "deleted": True}
    assert not path_of(uri).exists() and orphan_of(storage_root, uri).read_bytes() == b"bob's secret"

    for action in ("get_artifact", "get_artifact_uri"):
        own = error(await bus.call(action, {"artifact_id": secret}, context=BOB))
        assert own["code"] == "NOT_FOUND" and own["details"] == {"artifact_id": secret, "reason": "deleted"}
        unknown_id = new_artifact_id()
        unknown = error(await bus.call(action, {"artifact_id": unknown_id}, context=ALICE))
        stranger = error(await bus.call(action, {"artifact_id": secret}, context=ALICE))
        assert stranger == json.loads(json.dumps(unknown).replace(unknown_id, secret)), "as for an unknown id"
        assert stranger["details"] == {"artifact_id": secret} and "deleted" not in json.dumps(stranger)
    latest = error(await get(bus, secret, ALICE, latest=True))
    assert latest["details"] == {"artifact_id": secret}, "latest from a tombstone tells a stranger nothing either"

    assert await listed(bus) == [kept["artifact_id"]]
    assert await listed(bus, latest_only=True, trace_id="bob-trace") == []
    assert secret not in await listed(bus, {"requester_id": "x"}, latest_only=True)
    admin_list = output(await bus.call("list_artifacts", {}, amqp=ADMIN_AMQP))
    assert [m["id"] for m in admin_list["artifacts"]] == [kept["artifact_id"]]
    stats = output(await bus.call("get_stats", amqp=ADMIN_AMQP))
    assert stats["artifacts"]["total"] == 1 and stats["files"] == 1

    again = manifest_for(storage_root, b"bob's secret", id=secret, visibility="private", trace_id="bob-trace")
    taken = error(await bus.call("register_artifact", {"manifest": again}, context=BOB))
    assert taken["code"] == "ALREADY_EXISTS" and taken["details"] == {"artifact_id": secret, "reason": "deleted"}
    bare = error(await bus.call("register_artifact", {"manifest": again}, context=ALICE))
    assert bare["code"] == "ALREADY_EXISTS" and bare["details"] == {"artifact_id": secret}
    replayed = await bus.send(envelope.to_json_bytes(), envelope.id)
    assert output(replayed) == output(first), "a replayed envelope gets the reply it got, from the inbox"
    assert (await delete(bus, secret)) == {"artifact_id": secret, "deleted": False}


async def test_latest_walks_past_deleted_versions(bus: Bus, storage_root: Path) -> None:
    """v1 → v2 (deleted) → v3: latest of v1 is v3. The newest deleted: the newest live one. A deleted version
    may be superseded (the chain goes on past it); restoring it keeps the chain whole."""
    chain = {"visibility": "public", "trace_id": "chain", "command_context": BOB}
    v1, _ = await register(bus, storage_root, b"v1", **chain)
    v2, _ = await register(bus, storage_root, b"v2", supersedes=v1["id"], version=2, **chain)
    v3, _ = await register(bus, storage_root, b"v3", supersedes=v2["id"], version=3, **chain)

    async def latest_of(start: dict[str, Any]) -> str:
        return str(output(await get(bus, start["id"], latest=True))["artifact_id"])

    await delete(bus, v2["id"])
    assert await latest_of(v1) == v3["id"] and await latest_of(v2) == v3["id"]
    assert await listed(bus, trace_id="chain", latest_only=True) == [v3["id"]]
    assert await listed(bus, {"requester_id": "anyone"}, trace_id="chain", latest_only=True) == [v3["id"]]

    await delete(bus, v3["id"])
    assert await latest_of(v1) == v1["id"]
    assert await listed(bus, trace_id="chain", latest_only=True) == [v1["id"]]
    newest_gone = error(await get(bus, v2["id"], latest=True))
    assert newest_gone["code"] == "NOT_FOUND" and newest_gone["details"]["reason"] == "deleted"

    v4, out = await register(bus, storage_root, b"v4", supersedes=v3["id"], version=4, **chain)
    assert out["registered"] is True, "a tombstone may be superseded"
    assert await latest_of(v1) == v4["id"] and await latest_of(v2) == v4["id"]
    assert await listed(bus, trace_id="chain", latest_only=True) == [v4["id"]]

    assert output(await restore(bus, v3["id"]))["restored"] is True
    assert await latest_of(v1) == v4["id"] and await latest_of(v3) == v4["id"]
    assert await listed(bus, trace_id="chain") == [v4["id"], v3["id"], v1["id"]]
    assert await listed(bus, trace_id="chain", latest_only=True) == [v4["id"]]


async def test_an_admin_restores_with_the_client_and_nobody_else_can(worker: Worker, tmp_path: Path) -> None:
    """Through the client library: the row and the file come back (bytes readable at the uri), a second
    restore is FAILED_PRECONDITION; an agent's restore is PERMISSION_DENIED saying nothing of the artifact."""
    async with (
        StorageClient(**client_settings(worker, tmp_path / "bob", agent_id="bob"), trace_id="t-bob") as bob,
        StorageClient(**client_settings(worker, tmp_path / "admin", user_id=True)) as admin,
    ):
        uploaded = await bob.upload_artifact(b"restore me", artifact_type="report", filename="r.txt")
        assert isinstance(uploaded, RegisterArtifactOutput)
        artifact_id = uploaded.artifact_id
        assert (await admin.delete_artifact(artifact_id)).deleted is True
        with pytest.raises(NotFound) as gone:
            await bob.get_artifact(artifact_id)
        assert gone.value.details["reason"] == "deleted"

        for attempt in (artifact_id, new_artifact_id()):
            with pytest.raises(PermissionDenied) as refused:
                await bob.restore_artifact(attempt)
            assert refused.value.details == {"action": "restore_artifact", "requester": "bob"}
        with pytest.raises(NotFound):
            await bob.get_artifact(artifact_id)

        restored = await admin.restore_artifact(artifact_id)
        assert restored.restored is True and restored.manifest == uploaded.manifest
        assert (await bob.get_artifact(artifact_id)).manifest == uploaded.manifest
        link = await bob.get_artifact_uri(artifact_id)
        assert path_of(link.uri).read_bytes() == b"restore me"
        assert [m.id for m in (await bob.list_artifacts(trace_id="t-bob")).artifacts] == [artifact_id]
        with pytest.raises(FailedPrecondition) as live:
            await admin.restore_artifact(artifact_id)
        assert live.value.details == {"artifact_id": artifact_id, "reason": "not_deleted"}
        with pytest.raises(NotFound) as unknown:
            await admin.restore_artifact(new_artifact_id())
        assert "reason" not in unknown.value.details
        with pytest.raises(InvalidArgument):
            await admin.restore_artifact("art_not-an-id")


async def test_restore_refuses_bad_input_and_a_missing_or_changed_file(bus: Bus, storage_root: Path) -> None:
    """Over raw AMQP: a malformed id is INVALID_ARGUMENT naming the field; a file gone from orphans/ or no longer
    the registered bytes is DATA_LOSS, and the artifact stays deleted."""
    for bad in ({}, {"artifact_id": "art_nope"}, {"artifact_id": 7}, {"artifact_id": new_artifact_id(), "x": 1}):
        err = error(await bus.call("restore_artifact", bad, amqp=ADMIN_AMQP))
        assert err["code"] == "INVALID_ARGUMENT", err
        assert [e["field"] for e in err["details"]["errors"]] in (["artifact_id"], ["x"])

    lost, lost_out = await register(bus, storage_root, b"will vanish", command_context=BOB)
    changed, changed_out = await register(bus, storage_root, b"will change", command_context=BOB)
    for manifest in (lost, changed):
        await delete(bus, manifest["id"])
    orphan_of(storage_root, lost_out["uri"]).unlink()
    orphan_of(storage_root, changed_out["uri"]).write_bytes(b"will chang3")
    for manifest, reason in ((lost, "file_missing"), (changed, "corrupted")):
        err = error(await restore(bus, manifest["id"]))
        assert err["code"] == "DATA_LOSS" and err["details"]["reason"] == reason, err
        assert error(await get(bus, manifest["id"]))["details"]["reason"] == "deleted"
    assert orphan_of(storage_root, changed_out["uri"]).exists(), "the changed file stays where it was"


async def test_purge_removes_tombstones_after_the_window(workers: Workers, storage_root: Path) -> None:
    """STORAGE_PURGE_AFTER=1s: past it a restore is NOT_FOUND, purge_deleted removes the row and its file
    (a younger tombstone stays), and the id is free to register again."""
    _, bus = await workers.start(purge_after_s=1)
    old, old_out = await register(bus, storage_root, b"old news", command_context=BOB)
    await delete(bus, old["id"])
    await asyncio.sleep(1.2)
    young, young_out = await register(bus, storage_root, b"fresh", command_context=BOB)
    await delete(bus, young["id"])

    late = error(await restore(bus, old["id"]))
    assert late["code"] == "NOT_FOUND" and late["details"] == {"artifact_id": old["id"], "reason": "purged"}
    assert await cleanup(bus, "purge_deleted", dry_run=True) == {"purge_deleted": 1}
    assert await cleanup(bus, "purge_deleted") == {"purge_deleted": 1}
    assert not orphan_of(storage_root, old_out["uri"]).exists()
    assert orphan_of(storage_root, young_out["uri"]).read_bytes() == b"fresh"
    purged = error(await restore(bus, old["id"]))
    assert purged["code"] == "NOT_FOUND" and purged["details"] == {"artifact_id": old["id"]}
    assert error(await get(bus, old["id"]))["details"] == {"artifact_id": old["id"]}

    again, out = await register(bus, storage_root, b"old news", id=old["id"], command_context=BOB)
    assert out["registered"] is True and out["artifact_id"] == again["id"]
    assert output(await restore(bus, young["id"]))["restored"] is True


async def test_other_cleanup_scopes_leave_a_tombstone_restorable(worker: Worker, bus: Bus, storage_root: Path) -> None:
    """old_orphans keeps a tombstone's file past its week in orphans/ (it deletes other old orphans), and
    missing_files does not mark a tombstone failed for the file that is not at its place."""
    tomb, out = await register(bus, storage_root, b"keep me", command_context=BOB)
    await delete(bus, tomb["id"])
    kept = orphan_of(storage_root, out["uri"])
    stray = storage_root / "orphans" / "artifacts" / "trace-1" / f"{new_artifact_id()}.txt"
    stray.write_bytes(b"nobody's")
    for path in (kept, stray):
        age_file(path, days=8)
    await execute(worker.settings, update(artifacts).values(registered_at=ago(hours=2)))

    counts = await cleanup(bus, "old_orphans", "missing_files", "orphan_files", "expired_artifacts")
    assert counts == {"old_orphans": 1, "missing_files": 0, "orphan_files": 0, "expired_artifacts": 0}
    assert kept.read_bytes() == b"keep me" and not stray.exists()
    restored = output(await restore(bus, tomb["id"]))
    assert restored["manifest"]["status"] == "completed"
    assert output(await get(bus, tomb["id"]))["manifest"]["status"] == "completed"
    assert path_of(out["uri"]).read_bytes() == b"keep me"


async def test_a_delete_whose_file_move_never_ran_still_restores(bus: Bus, storage_root: Path) -> None:
    """A crash between a delete's commit and its move leaves the file at its place: a restore takes it from
    there, and two restores at once give one restored artifact and one FAILED_PRECONDITION (not_deleted)."""
    manifest, out = await register(bus, storage_root, b"never moved", command_context=BOB)
    await delete(bus, manifest["id"])
    orphan_of(storage_root, out["uri"]).rename(path_of(out["uri"]))  # as if the worker died before the move

    replies = await asyncio.gather(restore(bus, manifest["id"]), restore(bus, manifest["id"]))
    kinds = sorted(reply["type"] for reply in replies)
    assert kinds == ["ai.team.error", "ai.team.result"], replies
    refused = next(error(reply) for reply in replies if reply["type"] == "ai.team.error")
    assert refused["code"] == "FAILED_PRECONDITION" and refused["details"]["reason"] == "not_deleted"
    assert output(await get(bus, manifest["id"]))["manifest"]["status"] == "completed"
    assert path_of(out["uri"]).read_bytes() == b"never moved"
