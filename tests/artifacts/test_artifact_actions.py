"""Every artifact action, ping and get_stats through the wire, as a raw AMQP agent sees them."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from service import __version__
from service.handlers import ACTIONS
from service.store import artifacts as artifact_store
from service.transport.worker import Worker
from tests.support.artifacts import manifest_for, new_artifact_id
from tests.support.bus import Bus, error, output
from tests.support.wire import ADMIN_AMQP, path_of, register, register_many

SERVED = {
    "register_artifact",
    "get_artifact",
    "list_artifacts",
    "get_artifact_uri",
    "delete_artifact",
    "restore_artifact",
    "get_stats",
    "ping",
}
T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


async def list_ids(bus: Bus, *, context: dict[str, Any] | None = None, **params: Any) -> list[str]:
    out = output(await bus.call("list_artifacts", params, context=context or {}))
    assert out["count"] == len(out["artifacts"])
    return [m["id"] for m in out["artifacts"]]


async def fail_artifact(worker: Worker, artifact_id: str) -> None:
    """Arrange a failed artifact the way the missing-files cleanup would leave it."""
    assert worker.services is not None
    await worker.services.writer.submit(lambda conn: artifact_store.set_status(conn, [artifact_id], "failed"))


# -- register_artifact / get_artifact ---------------------------------------------------------------------


async def test_register_commits_completed_and_moves_the_file_to_its_permanent_uri(bus: Bus, storage_root: Path) -> None:
    """A registered artifact is completed whatever the manifest said, and its file sits at the returned URI."""
    manifest, out = await register(
        bus, storage_root, b"quarterly report", status="failed", trace_id="trace-9", filename="report.txt"
    )
    assert out["registered"] is True and out["already_exists"] is False
    assert out["artifact_id"] == manifest["id"]
    assert out["checksum"] == manifest["checksum"]
    assert out["manifest"]["status"] == "completed"
    assert out["manifest"]["owner"] == "agent-test"  # the requester, since the manifest named none
    final = path_of(out["uri"])
    assert final == storage_root / "artifacts" / "trace-9" / f"{manifest['id']}.txt"
    assert final.read_bytes() == b"quarterly report"
    assert not path_of(manifest["uri"]).exists(), "the temp file was moved, not copied"
    got = output(await bus.call("get_artifact", {"artifact_id": manifest["id"]}, source="agent-test"))
    assert got == {"artifact_id": manifest["id"], "manifest": out["manifest"], "details": None}  # nothing failed


async def test_register_keeps_the_agents_metadata(bus: Bus, storage_root: Path) -> None:
    """Everything an agent put in the manifest (context, labels, retention, type) reads back unchanged."""
    extra = {
        "step_id": "step-3",
        "retention": "30d",
        "visibility": "public",
        "labels": {"inn": "7701234567", "город": "Москва"},
        "context": {
            "prompt_version": "v7",
            "model_name": "gpt-x",
            "model_params": {"temperature": 0.2, "max_tokens": 512},
            "input_artifacts": [new_artifact_id()],
            "execution_time_ms": 1234,
        },
        "created_at": at(0),
    }
    manifest, _ = await register(bus, storage_root, b"x", **extra)
    got = output(await bus.call("get_artifact", {"artifact_id": manifest["id"]}))["manifest"]
    for key, value in extra.items():
        if key == "created_at":
            assert datetime.fromisoformat(got[key]) == T0
        else:
            assert got[key] == value, key


async def test_get_unknown_artifact_is_not_found(bus: Bus) -> None:
    """Asking for an id nobody registered answers NOT_FOUND naming that id."""
    missing = new_artifact_id()
    err = error(await bus.call("get_artifact", {"artifact_id": missing}))
    assert err["code"] == "NOT_FOUND" and err["retryable"] is False
    assert err["details"]["artifact_id"] == missing


async def test_get_latest_follows_the_supersedes_chain(bus: Bus, storage_root: Path) -> None:
    """``latest`` on any version of a chain returns its newest version; without it the version asked for."""
    v1, _ = await register(bus, storage_root, b"v1", visibility="public")
    v2, _ = await register(bus, storage_root, b"v2", visibility="public", supersedes=v1["id"], version=2)
    v3, _ = await register(bus, storage_root, b"v3", visibility="public", supersedes=v2["id"], version=3)
    for asked in (v1, v2, v3):
        latest = output(await bus.call("get_artifact", {"artifact_id": asked["id"], "latest": True}))
        assert latest["artifact_id"] == v3["id"]
        assert latest["manifest"]["version"] == 3
        plain = output(await bus.call("get_artifact", {"artifact_id": asked["id"]}))
        assert plain["artifact_id"] == asked["id"]


async def test_latest_stops_before_a_version_the_requester_cannot_read(bus: Bus, storage_root: Path) -> None:
    """``latest`` follows successors only while the requester may read them: a stranger's latest of v1 is v1 when
    v2 is private, the owner's is v3; ``latest_only`` listings agree with it."""
    bob = {"requester_id": "bob"}
    v1, _ = await register(bus, storage_root, b"v1", visibility="public", command_context=bob)
    v2, _ = await register(
        bus, storage_root, b"v2", visibility="private", supersedes=v1["id"], version=2, command_context=bob
    )
    v3, _ = await register(
        bus, storage_root, b"v3", visibility="public", supersedes=v2["id"], version=3, command_context=bob
    )
    stranger = {"requester_id": "carol"}
    seen = output(await bus.call("get_artifact", {"artifact_id": v1["id"], "latest": True}, context=stranger))
    assert seen["artifact_id"] == v1["id"]
    owned = output(await bus.call("get_artifact", {"artifact_id": v1["id"], "latest": True}, context=bob))
    assert owned["artifact_id"] == v3["id"]
    assert set(await list_ids(bus, latest_only=True, context=stranger)) == {v1["id"], v3["id"]}
    assert await list_ids(bus, latest_only=True, context=bob) == [v3["id"]]


# -- list_artifacts ---------------------------------------------------------------------------------------


async def test_list_filters_each_narrow_the_result(bus: Bus, worker: Worker, storage_root: Path) -> None:
    """Each list filter (and their combination) returns exactly the matching artifacts, newest first."""

    def prepared(n: int, **fields: Any) -> dict[str, Any]:
        return manifest_for(storage_root, f"file {n}".encode(), visibility="public", created_at=at(n), **fields)

    a = prepared(0, trace_id="t1", artifact_type="report", created_by="alice", step_id="s1")
    b = prepared(1, trace_id="t1", artifact_type="log", created_by="bob", step_id="s2")
    c = prepared(2, trace_id="t2", artifact_type="report", created_by="alice", step_id="s1")
    d = prepared(3, trace_id="t2", artifact_type="log", created_by="alice", step_id="s2")
    await register_many(bus, storage_root, [a, b, c, d])
    e = prepared(4, trace_id="t1", artifact_type="report", created_by="alice", step_id="s1")
    e.update(supersedes=a["id"], version=2)
    await register_many(bus, storage_root, [e])
    await fail_artifact(worker, d["id"])
    ids = {name: m["id"] for name, m in zip("abcde", (a, b, c, d, e), strict=True)}

    def expect(names: str) -> list[str]:
        return [ids[n] for n in names]

    assert await list_ids(bus) == expect("edcba")
    assert await list_ids(bus, trace_id="t1") == expect("eba")
    assert await list_ids(bus, artifact_type="log") == expect("db")
    assert await list_ids(bus, created_by="alice") == expect("edca")
    assert await list_ids(bus, step_id="s2") == expect("db")
    assert await list_ids(bus, status="failed") == expect("d")
    assert await list_ids(bus, status="completed") == expect("ecba")
    assert await list_ids(bus, created_after=at(1.5)) == expect("edc")
    assert await list_ids(bus, created_before=at(2.5)) == expect("cba")
    assert await list_ids(bus, created_after=at(0.5), created_before=at(3.5)) == expect("dcb")
    assert await list_ids(bus, latest_only=True) == expect("edcb")
    assert await list_ids(bus, trace_id="t1", artifact_type="report") == expect("ea")
    assert await list_ids(bus, trace_id="t1", artifact_type="report", latest_only=True) == expect("e")
    assert await list_ids(bus, trace_id="t3") == []


async def test_list_labels_must_all_match_including_non_ascii(bus: Bus, storage_root: Path) -> None:
    """A labels filter returns only artifacts carrying every pair asked for, Cyrillic values included."""
    low = manifest_for(storage_root, b"1", visibility="public", labels={"inn": "7701234567", "risk_level": "low"})
    high = manifest_for(storage_root, b"2", visibility="public", labels={"inn": "7701234567", "risk_level": "high"})
    moscow = manifest_for(storage_root, b"3", visibility="public", labels={"город": "Москва", "risk_level": "low"})
    plain = manifest_for(storage_root, b"4", visibility="public")
    await register_many(bus, storage_root, [low, high, moscow, plain])

    assert set(await list_ids(bus, labels={"inn": "7701234567"})) == {low["id"], high["id"]}
    assert await list_ids(bus, labels={"inn": "7701234567", "risk_level": "low"}) == [low["id"]]
    assert set(await list_ids(bus, labels={"risk_level": "low"})) == {low["id"], moscow["id"]}
    assert await list_ids(bus, labels={"город": "Москва"}) == [moscow["id"]]
    assert await list_ids(bus, labels={"город": "Москва", "inn": "7701234567"}) == []
    assert await list_ids(bus, labels={"город": "Казань"}) == []
    assert await list_ids(bus, labels={"risk_level": "LOW"}) == []
    listed = output(await bus.call("list_artifacts", {"labels": {"город": "Москва"}}))["artifacts"]
    assert listed[0]["labels"] == {"город": "Москва", "risk_level": "low"}


async def test_list_pages_newest_first_without_duplicates_or_gaps(bus: Bus, storage_root: Path) -> None:
    """Following next_cursor walks every artifact exactly once, newest first, even across equal timestamps."""
    # 7 distinct times, three artifacts each: ties must be broken by id without skipping any.
    prepared = [
        manifest_for(storage_root, f"{i}".encode(), visibility="public", created_at=at(i // 3)) for i in range(21)
    ]
    await register_many(bus, storage_root, prepared)
    newest_first = sorted(prepared, key=lambda m: (datetime.fromisoformat(m["created_at"]), m["id"]), reverse=True)
    expected = [m["id"] for m in newest_first]

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 4}
        if cursor is not None:
            params["cursor"] = cursor
        out = output(await bus.call("list_artifacts", params))
        pages += 1
        assert out["count"] == len(out["artifacts"]) <= 4
        seen += [m["id"] for m in out["artifacts"]]
        if pages == 1:
            # A newer artifact registered while paging must not shift the pages still to come.
            await register(bus, storage_root, b"newcomer", visibility="public", created_at=at(60))
        cursor = out["next_cursor"]
        if cursor is None:
            break
        assert out["count"] == 4, "only the last page may be short"
    assert pages == 6
    assert seen == expected


async def test_list_refuses_a_cursor_it_did_not_issue(bus: Bus) -> None:
    """A forged or corrupted cursor is INVALID_ARGUMENT naming ``cursor``, never a silent first page."""

    def b64(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    forged = [
        "not a cursor!",
        b64({"time": "2024-01-01T00:00:00+00:00"}),
        b64(["2024-01-01T00:00:00", "art_x"]),  # naive time
        b64(["yesterday", "art_x"]),
        b64(["2024-01-01T00:00:00+00:00", 42]),
        b64([1, 2, 3]),
        base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),
        "x" * 2000,
    ]
    replies = await asyncio.gather(*(bus.call("list_artifacts", {"cursor": c}) for c in forged))
    for cursor, reply in zip(forged, replies, strict=True):
        err = error(reply)
        assert err["code"] == "INVALID_ARGUMENT", cursor
        assert "cursor" in err["message"] or err["details"].get("field") == "cursor", (cursor, err)
        assert "cursor" in json.dumps(err["details"]), (cursor, err)


async def test_list_limit_bounds(bus: Bus, storage_root: Path) -> None:
    """``limit`` accepts 1 to 1000; outside that range (or not a number) it is INVALID_ARGUMENT naming it."""
    await register(bus, storage_root, b"a", visibility="public")
    await register(bus, storage_root, b"b", visibility="public")
    assert output(await bus.call("list_artifacts", {"limit": 1}))["count"] == 1
    assert output(await bus.call("list_artifacts", {"limit": 1000}))["count"] == 2
    assert output(await bus.call("list_artifacts", {}))["next_cursor"] is None
    for bad in (0, -1, 1001, "ten"):
        err = error(await bus.call("list_artifacts", {"limit": bad}))
        assert err["code"] == "INVALID_ARGUMENT"
        assert "limit" in err["message"]
        assert [e["field"] for e in err["details"]["errors"]] == ["limit"]


# -- get_artifact_uri / delete_artifact / stats / ping ----------------------------------------------------


async def test_get_artifact_uri_is_the_permanent_file_uri(bus: Bus, storage_root: Path) -> None:
    """On local storage the URI is the permanent ``file://`` one, unsigned, and the file is there."""
    manifest, registered = await register(bus, storage_root, b"read me", visibility="public")
    out = output(await bus.call("get_artifact_uri", {"artifact_id": manifest["id"], "expires_in_seconds": 60}))
    assert out == {"artifact_id": manifest["id"], "uri": registered["uri"], "signed": False, "expires_at": None}
    assert path_of(out["uri"]).read_bytes() == b"read me"
    err = error(await bus.call("get_artifact_uri", {"artifact_id": new_artifact_id()}))
    assert err["code"] == "NOT_FOUND"


async def test_delete_keeps_a_tombstone_and_moves_the_file_to_orphans(bus: Bus, storage_root: Path) -> None:
    """An admin delete makes the artifact NOT_FOUND (reason deleted) and keeps its bytes under orphans/, not in
    artifacts/; a second delete, and one of an unknown id, answer ``deleted: false``."""
    manifest, out = await register(bus, storage_root, b"to be deleted", visibility="public", filename="x.txt")
    kept, _ = await register(bus, storage_root, b"kept", visibility="public")
    final = path_of(out["uri"])

    deleted = output(await bus.call("delete_artifact", {"artifact_id": manifest["id"]}, amqp=ADMIN_AMQP))
    assert deleted == {"artifact_id": manifest["id"], "deleted": True}
    gone = error(await bus.call("get_artifact", {"artifact_id": manifest["id"]}))
    assert gone["code"] == "NOT_FOUND" and gone["details"] == {"artifact_id": manifest["id"], "reason": "deleted"}
    assert await list_ids(bus) == [kept["id"]]
    assert not final.exists()
    orphan = storage_root / "orphans" / final.relative_to(storage_root)
    assert orphan.read_bytes() == b"to be deleted"

    again = output(await bus.call("delete_artifact", {"artifact_id": manifest["id"]}, amqp=ADMIN_AMQP))
    assert again == {"artifact_id": manifest["id"], "deleted": False}
    unknown = new_artifact_id()
    assert output(await bus.call("delete_artifact", {"artifact_id": unknown}, amqp=ADMIN_AMQP))["deleted"] is False


async def test_delete_needs_an_admin(bus: Bus, storage_root: Path) -> None:
    """A non-admin delete is PERMISSION_DENIED naming the action and requester, and the artifact stays."""
    manifest, out = await register(bus, storage_root, b"precious", visibility="public")
    err = error(await bus.call("delete_artifact", {"artifact_id": manifest["id"]}, context={"requester_id": "bob"}))
    assert err["code"] == "PERMISSION_DENIED" and err["retryable"] is False
    assert err["details"] == {"action": "delete_artifact", "requester": "bob"}
    assert output(await bus.call("get_artifact", {"artifact_id": manifest["id"]}))["artifact_id"] == manifest["id"]
    assert path_of(out["uri"]).exists()


async def test_get_stats_counts_artifacts_files_and_inbox(bus: Bus, worker: Worker, storage_root: Path) -> None:
    """get_stats reports artifacts by status and type, stored files and inbox records as they change."""
    empty = output(await bus.call("get_stats"))
    assert empty["artifacts"] == {"total": 0, "by_status": {}, "by_type": {}}
    assert (empty["files"], empty["inbox"]) == (0, 0)
    assert isinstance(empty["threads"], int) and isinstance(empty["messages"], int)

    first, _ = await register(bus, storage_root, b"1", artifact_type="report")
    await register(bus, storage_root, b"2", artifact_type="report")
    await register(bus, storage_root, b"3", artifact_type="log")
    await fail_artifact(worker, first["id"])
    stats = output(await bus.call("get_stats"))
    assert stats["artifacts"] == {
        "total": 3,
        "by_status": {"completed": 2, "failed": 1},
        "by_type": {"report": 2, "log": 1},
    }
    assert stats["files"] == 3
    assert stats["inbox"] == 3, "each executed write command leaves one inbox record; reads leave none"

    await bus.call("delete_artifact", {"artifact_id": first["id"]}, amqp=ADMIN_AMQP)
    after = output(await bus.call("get_stats"))
    assert after["artifacts"]["total"] == 2 and after["files"] == 2 and after["inbox"] == 4


async def test_ping_names_the_node_version_and_uptime(bus: Bus) -> None:
    """ping answers with this node's name, the worker version and a growing uptime."""
    first = output(await bus.call("ping"))
    second = output(await bus.call("ping"))
    assert first["node"] == second["node"] == "storage-primary"
    assert first["version"] == __version__
    assert 0 <= first["uptime_seconds"] <= second["uptime_seconds"]


async def test_unknown_action_is_unimplemented_and_lists_the_supported_ones(bus: Bus) -> None:
    """An action the worker does not know is UNIMPLEMENTED, and the reply says which actions it serves."""
    err = error(await bus.call("teleport_artifact", {"artifact_id": new_artifact_id()}))
    assert err["code"] == "UNIMPLEMENTED" and err["retryable"] is False
    assert err["details"]["action"] == "teleport_artifact"
    assert set(err["details"]["supported"]) >= SERVED
    assert set(err["details"]["supported"]) == set(ACTIONS)


async def test_ill_typed_or_missing_params_name_the_field(bus: Bus, storage_root: Path) -> None:
    """Missing, ill-typed or unknown params are INVALID_ARGUMENT whose message and details name the field."""
    good = new_artifact_id()
    manifest = manifest_for(storage_root, b"x")
    no_checksum = {k: v for k, v in manifest.items() if k != "checksum"}
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("get_artifact", {}, "artifact_id"),
        ("get_artifact", {"artifact_id": "art_not-a-uuid"}, "artifact_id"),
        ("get_artifact", {"artifact_id": good, "latest": "sometimes"}, "latest"),
        ("get_artifact", {"artifact_id": good, "bogus": 1}, "bogus"),
        ("list_artifacts", {"created_after": "yesterday"}, "created_after"),
        ("list_artifacts", {"labels": {"k": 5}}, "labels.k"),
        ("list_artifacts", {"status": "done"}, "status"),
        ("list_artifacts", {"latest_only": [1]}, "latest_only"),
        ("get_artifact_uri", {"artifact_id": good, "expires_in_seconds": 0}, "expires_in_seconds"),
        ("delete_artifact", {}, "artifact_id"),
        ("register_artifact", {}, "manifest"),
        ("register_artifact", {"manifest": no_checksum}, "manifest.checksum"),
        ("register_artifact", {"manifest": {**manifest, "checksum": "md5:abc"}}, "manifest.checksum"),
        ("register_artifact", {"manifest": {**manifest, "id": "art_1"}}, "manifest.id"),
        ("register_artifact", {"manifest": {**manifest, "size_bytes": -1}}, "manifest.size_bytes"),
        ("register_artifact", {"manifest": {**manifest, "retention": "forever"}}, "manifest.retention"),
        ("register_artifact", {"manifest": {**manifest, "visibility": "secret"}}, "manifest.visibility"),
        (
            "register_artifact",
            {"manifest": {**manifest, "context": {"model_params": {"temperature": 2.5}}}},
            "manifest.context.model_params.temperature",
        ),
        (
            "register_artifact",
            {"manifest": {**manifest, "labels": {f"k{i}": "v" for i in range(33)}}},
            "manifest.labels",
        ),
        ("ping", {"verbose": True}, "verbose"),
    ]
    replies = await asyncio.gather(*(bus.call(action, params, amqp=ADMIN_AMQP) for action, params, _ in cases))
    for (action, params, field), reply in zip(cases, replies, strict=True):
        err = error(reply)
        assert err["code"] == "INVALID_ARGUMENT" and err["retryable"] is False, (action, params, err)
        assert field in err["message"], (action, field, err["message"])
        assert field in [e["field"] for e in err["details"]["errors"]], (action, field, err["details"])
    # None of the refused registrations left an artifact behind, and the file is still waiting in temp/.
    assert output(await bus.call("list_artifacts", {}, amqp=ADMIN_AMQP))["count"] == 0
    assert path_of(manifest["uri"]).read_bytes() == b"x"
