"""Identity and ACL of docs/contract.md §3 through the wire: who a command acts as, and what it may read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.bus import Bus, error, output
from tests.support.wire import ADMIN_AMQP, BROKER_USER, register
from tests.support.workers import Workers

OWNER = {"requester_id": "owner-agent", "requester_trace_id": "trace-A"}
SAME_TRACE = {"requester_id": "colleague", "requester_trace_id": "trace-A"}
STRANGER = {"requester_id": "stranger", "requester_trace_id": "trace-B"}
# RabbitMQ accepts as user_id only the user the connection logged in as: the test broker's user. The root
# test settings make that user the admin (ADMIN_AMQP); tests that need it as an ordinary broker-validated
# agent start their worker with other admins (NOT_GUEST).
GUEST = {"user_id": BROKER_USER}
NOT_GUEST = frozenset({"ops-1"})


async def three_visibilities(bus: Bus, root: Path) -> dict[str, str]:
    """One artifact of each visibility, owned by ``owner-agent`` in ``trace-A``; returns visibility → id."""
    ids = {}
    for visibility in ("private", "trace", "public"):
        manifest, out = await register(
            bus, root, visibility.encode(), visibility=visibility, trace_id="trace-A", command_context=OWNER
        )
        assert out["manifest"]["owner"] == "owner-agent"
        ids[visibility] = manifest["id"]
    return ids


async def readable(bus: Bus, ids: dict[str, str], context: dict[str, Any], amqp: dict[str, Any] | None = None) -> set:
    """The visibilities this requester can get_artifact, after checking the refusals' details."""
    seen = set()
    for visibility, artifact_id in ids.items():
        reply = await bus.call("get_artifact", {"artifact_id": artifact_id}, context=context, amqp=amqp)
        if reply["type"] == "ai.team.result":
            seen.add(visibility)
            continue
        err = error(reply)
        assert err["code"] == "PERMISSION_DENIED" and err["retryable"] is False
        assert err["details"]["artifact"] == artifact_id
        assert err["details"]["visibility"] == visibility
        assert "owner" not in err["details"], "a refusal never names the owner"
        assert "requester" in err["details"]
    return seen


async def listed(bus: Bus, ids: dict[str, str], context: dict[str, Any], amqp: dict[str, Any] | None = None) -> set:
    out = output(await bus.call("list_artifacts", {}, context=context, amqp=amqp))
    by_id = {artifact_id: visibility for visibility, artifact_id in ids.items()}
    return {by_id[m["id"]] for m in out["artifacts"]}


async def test_visibility_decides_who_reads_with_get_and_list(bus: Bus, storage_root: Path) -> None:
    """Owners read all three; the same trace reads trace and public; strangers read only public, in get and list."""
    ids = await three_visibilities(bus, storage_root)
    expectations = [
        (OWNER, {"private", "trace", "public"}),
        ({"requester_id": "owner-agent"}, {"private", "trace", "public"}),  # owner, whatever the trace
        (SAME_TRACE, {"trace", "public"}),
        (STRANGER, {"public"}),
        ({}, {"public"}),  # no context: the envelope source "agent-test" is the requester
    ]
    for context, expected in expectations:
        assert await readable(bus, ids, context) == expected, context
        assert await listed(bus, ids, context) == expected, context


async def test_refusals_name_artifact_visibility_and_requester(bus: Bus, storage_root: Path) -> None:
    """A refused read tells the agent exactly which artifact, its visibility and who asked, never the owner."""
    ids = await three_visibilities(bus, storage_root)
    err = error(await bus.call("get_artifact", {"artifact_id": ids["private"]}, context=SAME_TRACE))
    assert err["details"] == {"artifact": ids["private"], "visibility": "private", "requester": "colleague"}
    assert "owner-agent" not in err["message"]
    uri_err = error(await bus.call("get_artifact_uri", {"artifact_id": ids["trace"]}, context=STRANGER))
    assert uri_err["code"] == "PERMISSION_DENIED" and uri_err["details"]["requester"] == "stranger"
    assert output(await bus.call("get_artifact_uri", {"artifact_id": ids["trace"]}, context=SAME_TRACE))["uri"]


async def test_latest_checks_the_version_it_returns(bus: Bus, storage_root: Path) -> None:
    """``latest`` follows successors only while the requester may read them: a stranger stops at the public
    v1 and learns nothing of the private v2; its owner gets v2."""
    v1, _ = await register(bus, storage_root, b"v1", visibility="public", command_context=OWNER)
    v2, _ = await register(
        bus, storage_root, b"v2", visibility="private", supersedes=v1["id"], version=2, command_context=OWNER
    )
    latest = {"artifact_id": v1["id"], "latest": True}
    seen = await bus.call("get_artifact", latest, context=STRANGER)
    assert output(seen)["artifact_id"] == v1["id"] and v2["id"] not in str(seen)
    assert output(await bus.call("get_artifact", latest, context=OWNER))["artifact_id"] == v2["id"]


async def test_the_amqp_user_id_wins_over_the_body(workers: Workers, storage_root: Path) -> None:
    """With the broker-validated user_id set, the body's requester_id is ignored, for ownership and for reads."""
    _, bus = await workers.start(admins=NOT_GUEST)
    mine, out = await register(
        bus, storage_root, b"guest's", visibility="private", command_context={"requester_id": "mallory"}, amqp=GUEST
    )
    assert out["manifest"]["owner"] == BROKER_USER, "the owner is the broker-validated user, not the claimed one"
    alices, _ = await register(
        bus, storage_root, b"alice's", visibility="private", command_context={"requester_id": "alice"}
    )

    claimed_alice = {"requester_id": "alice"}
    assert output(await bus.call("get_artifact", {"artifact_id": alices["id"]}, context=claimed_alice))
    err = error(await bus.call("get_artifact", {"artifact_id": alices["id"]}, context=claimed_alice, amqp=GUEST))
    assert err["code"] == "PERMISSION_DENIED" and err["details"]["requester"] == BROKER_USER
    got = await bus.call("get_artifact", {"artifact_id": mine["id"]}, context={"requester_id": "mallory"}, amqp=GUEST)
    assert output(got)["manifest"]["owner"] == BROKER_USER
    # An admin's name claimed in the body does not lift a broker-validated non-admin user.
    claimed_admin = {"requester_id": "ops-1"}
    denied = error(await bus.call("delete_artifact", {"artifact_id": mine["id"]}, context=claimed_admin, amqp=GUEST))
    assert denied["code"] == "PERMISSION_DENIED" and denied["details"]["requester"] == BROKER_USER


async def test_untrusted_body_identity_makes_commands_without_user_id_anonymous(
    workers: Workers, storage_root: Path
) -> None:
    """With STORAGE_TRUST_BODY_IDENTITY=false a body claim counts for nothing: anonymous sees public only."""
    _, bus = await workers.start(trust_body_identity=False, admins=NOT_GUEST)
    _, anonymous = await register(bus, storage_root, b"anon", visibility="public", command_context=OWNER)
    assert anonymous["manifest"].get("owner") is None, "an anonymous upload has no owner"
    private, _ = await register(bus, storage_root, b"p", visibility="private", trace_id="trace-A")
    trace, _ = await register(bus, storage_root, b"t", visibility="trace", trace_id="trace-A")
    guests, out = await register(bus, storage_root, b"g", visibility="private", amqp=GUEST)
    assert out["manifest"]["owner"] == BROKER_USER

    for artifact in (private, trace, guests):
        err = error(await bus.call("get_artifact", {"artifact_id": artifact["id"]}, context=OWNER))
        assert err["code"] == "PERMISSION_DENIED" and err["details"]["requester"] is None
    # An anonymous command's trace claim opens nothing; a broker-validated user's trace does.
    claim = {"requester_trace_id": "trace-A"}
    err = error(await bus.call("get_artifact", {"artifact_id": trace["id"]}, context=claim))
    assert err["code"] == "PERMISSION_DENIED"
    assert output(await bus.call("get_artifact", {"artifact_id": trace["id"]}, context=claim, amqp=GUEST))
    assert output(await bus.call("get_artifact", {"artifact_id": guests["id"]}, amqp=GUEST))
    listed_ids = {m["id"] for m in output(await bus.call("list_artifacts", {}, context=OWNER))["artifacts"]}
    assert private["id"] not in listed_ids and guests["id"] not in listed_ids
    denied = error(await bus.call("delete_artifact", {"artifact_id": private["id"]}, context={"requester_id": "ops-1"}))
    assert denied["code"] == "PERMISSION_DENIED" and denied["details"]["requester"] is None


async def test_admin_actions_need_the_requester_in_storage_admins(workers: Workers, storage_root: Path) -> None:
    """With STORAGE_ADMINS empty nobody may delete over the bus; a listed broker-validated user may, a listed
    name claimed in the body may not."""
    closed_worker, closed = await workers.start(admins=frozenset())
    manifest, _ = await register(closed, storage_root, b"x", visibility="public")
    err = error(await closed.call("delete_artifact", {"artifact_id": manifest["id"]}, amqp=GUEST))
    assert err["code"] == "PERMISSION_DENIED" and err["details"]["requester"] == BROKER_USER
    await workers.stop(closed_worker)

    _, open_ = await workers.start(admins=frozenset({"ops-1", BROKER_USER}))
    claimed = await open_.call("delete_artifact", {"artifact_id": manifest["id"]}, context={"requester_id": "ops-1"})
    assert error(claimed)["code"] == "PERMISSION_DENIED", "a body claim of an admin's name is no admin"
    deleted = await open_.call("delete_artifact", {"artifact_id": manifest["id"]}, amqp=GUEST)
    assert output(deleted)["deleted"] is True
    unknown = "art_00000000-0000-0000-0000-000000000000"
    by_guest = await open_.call("delete_artifact", {"artifact_id": unknown}, amqp=GUEST)
    assert output(by_guest)["deleted"] is False


async def test_an_agent_cannot_register_in_someone_elses_name(bus: Bus, storage_root: Path) -> None:
    """Naming another agent as owner is refused, so nobody can plant an artifact in another's private space."""
    from tests.support.artifacts import manifest_for

    manifest = manifest_for(storage_root, b"planted", owner="owner-agent", visibility="private")
    err = error(await bus.call("register_artifact", {"manifest": manifest}, context=STRANGER))
    assert err["code"] == "PERMISSION_DENIED"
    assert err["details"] == {"field": "manifest.owner", "owner": "owner-agent", "requester": "stranger"}
    admin_made = output(await bus.call("register_artifact", {"manifest": manifest}, amqp=ADMIN_AMQP))
    assert admin_made["manifest"]["owner"] == "owner-agent", "an admin (an importer) may register for others"


async def test_re_registering_an_unreadable_artifact_reveals_nothing(bus: Bus, storage_root: Path) -> None:
    """Knowing a private artifact's id and checksum is not enough to read its manifest through a re-register."""
    manifest, _ = await register(bus, storage_root, b"secret", visibility="private", command_context=OWNER)
    again = output(await bus.call("register_artifact", {"manifest": manifest}, context=OWNER))
    assert again["already_exists"] is True and again["manifest"]["owner"] == "owner-agent"
    err = error(await bus.call("register_artifact", {"manifest": manifest}, context=STRANGER))
    assert err["code"] == "ALREADY_EXISTS"
    assert err["details"] == {"artifact_id": manifest["id"]}
