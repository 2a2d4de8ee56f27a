"""The pipeline rules of docs/contract.md §1 through the wire: bad bodies, inbox, expiry, target node, replies."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from contracts import CommandEnvelope, make_command, new_id
from tests.support.artifacts import manifest_for
from tests.support.bus import Bus, error, output
from tests.support.wire import ADMIN_AMQP, dead_letters, path_of
from tests.support.workers import Outcomes, Workers

NODE = "storage-primary"


def register_command(manifest: dict[str, Any], **data: Any) -> CommandEnvelope:
    return make_command("register_artifact", {"manifest": manifest}, source="agent-test", **data)


def body_with_time(envelope: CommandEnvelope, time_text: str) -> bytes:
    """The envelope's JSON with ``time`` written exactly as given (naive, offset or Z)."""
    raw = json.loads(envelope.to_json_bytes())
    raw["time"] = time_text
    return json.dumps(raw).encode()


async def artifact_exists(bus: Bus, artifact_id: str) -> bool:
    reply = await bus.call("get_artifact", {"artifact_id": artifact_id}, amqp=ADMIN_AMQP)
    return reply["type"] == "ai.team.result"


# -- 1. size cap and parse: ERROR and the dead-letter queue ------------------------------------------------

BAD_BODIES: dict[str, bytes] = {
    "oversize": json.dumps(
        {
            "specversion": "1.0",
            "type": "ai.team.command",
            "source": "agent-test",
            "id": "oversize",
            "data": {"action": "ping", "params": {"pad": "x" * (1024 * 1024)}},
        }
    ).encode(),
    "not JSON": b"\x00\xffthis is not json {",
    "JSON but not an object": b'["ai.team.command", "ping"]',
    "a RESULT, not a COMMAND": json.dumps(
        {"specversion": "1.0", "type": "ai.team.result", "source": "a", "id": "r1", "data": {"output": {}}}
    ).encode(),
    "a COMMAND without an action": json.dumps(
        {"specversion": "1.0", "type": "ai.team.command", "source": "a", "id": "c1", "data": {"params": {}}}
    ).encode(),
    "a COMMAND with non-object params": json.dumps(
        {
            "specversion": "1.0",
            "type": "ai.team.command",
            "source": "a",
            "id": "c2",
            "data": {"action": "ping", "params": 5},
        }
    ).encode(),
    "wrong specversion": json.dumps(
        {"specversion": "0.3", "type": "ai.team.command", "source": "a", "id": "c3", "data": {"action": "ping"}}
    ).encode(),
}


@pytest.mark.parametrize("kind", list(BAD_BODIES))
async def test_bad_bodies_get_an_error_and_land_in_the_dlq(bus: Bus, kind: str) -> None:
    """A body that is too big, not JSON or not a COMMAND gets ERROR INVALID_ARGUMENT and is dead-lettered."""
    body = BAD_BODIES[kind]
    correlation_id = new_id()
    err = error(await bus.send(body, correlation_id))
    assert err["code"] == "INVALID_ARGUMENT" and err["retryable"] is False
    if kind == "oversize":
        assert err["details"]["reason"] == "message_too_large"
        assert err["details"]["limit_bytes"] == 1024 * 1024
    else:
        assert err["details"]["errors"], "the reply says what is wrong with the envelope"
    [dead] = await dead_letters(bus, 1)
    assert dead.body == body
    assert dead.headers["x-death"][0]["reason"] == "rejected"
    assert output(await bus.call("ping"))["node"] == NODE, "the worker keeps serving"


async def test_a_bad_body_without_reply_to_is_still_dead_lettered(bus: Bus) -> None:
    """A garbage message nobody waits for is not answered but still kept in the DLQ for inspection."""
    await bus.publish(b"garbage", reply=False)
    [dead] = await dead_letters(bus, 1)
    assert dead.body == b"garbage"
    assert bus.unmatched == []
    assert output(await bus.call("ping"))["node"] == NODE


async def test_business_errors_are_acked_not_dead_lettered(bus: Bus) -> None:
    """A valid command that fails (NOT_FOUND) is answered and acked: nothing reaches the DLQ."""
    reply = await bus.call("get_artifact", {"artifact_id": "art_00000000-0000-0000-0000-000000000000"})
    assert error(reply)["code"] == "NOT_FOUND"
    await bus.publish(b"marker", reply=False)
    [dead] = await dead_letters(bus, 1)
    assert dead.body == b"marker", "the first dead letter is the marker sent after the business error"


# -- 3. expiry ------------------------------------------------------------------------------------------------


async def test_an_expired_command_is_refused_and_not_executed(bus: Bus, storage_root: Path) -> None:
    """A command older than its AMQP expiration is DEADLINE_EXCEEDED (not retryable) and has no effect."""
    manifest = manifest_for(storage_root, b"late")
    envelope = register_command(manifest)
    old = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    err = error(await bus.send(body_with_time(envelope, old), envelope.id, expiration=60))
    assert err["code"] == "DEADLINE_EXCEEDED" and err["retryable"] is False
    assert err["details"]["expiration_ms"] == 60_000
    assert not await artifact_exists(bus, manifest["id"])
    assert path_of(manifest["uri"]).exists(), "the upload is untouched"


@pytest.mark.parametrize(
    "style",
    ["Z", "offset", "naive"],
)
async def test_envelope_time_is_read_in_every_iso_form(bus: Bus, storage_root: Path, style: str) -> None:
    """An old ``time`` written with Z, a +05:30 offset or naive UTC expires; a fresh one in the same form runs."""
    ist = timezone(timedelta(hours=5, minutes=30))

    def written(moment: datetime) -> str:
        if style == "Z":
            return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"
        if style == "offset":
            return moment.astimezone(ist).isoformat()
        return moment.astimezone(UTC).replace(tzinfo=None).isoformat()

    now = datetime.now(UTC)
    stale = manifest_for(storage_root, b"stale")
    stale_cmd = register_command(stale)
    reply = await bus.send(body_with_time(stale_cmd, written(now - timedelta(minutes=3))), stale_cmd.id, expiration=60)
    assert error(reply)["code"] == "DEADLINE_EXCEEDED"

    fresh = manifest_for(storage_root, b"fresh")
    fresh_cmd = register_command(fresh)
    reply = await bus.send(body_with_time(fresh_cmd, written(now)), fresh_cmd.id, expiration=60)
    assert output(reply)["registered"] is True


async def test_a_processed_command_gets_its_stored_reply_whatever_its_age(bus: Bus, storage_root: Path) -> None:
    """A re-delivered command that was executed gets its stored RESULT even when it has since expired."""
    manifest = manifest_for(storage_root, b"once")
    envelope = register_command(manifest)
    first = await bus.send(envelope.to_json_bytes(), envelope.id)
    old = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    again = await bus.send(body_with_time(envelope, old), new_id(), expiration=30)
    assert again["data"] == first["data"] and again["id"] == first["id"]
    wrong_node = register_command(manifest, target_node="storage-elsewhere").model_copy(update={"id": envelope.id})
    third = await bus.send(wrong_node.to_json_bytes(), new_id())
    assert third["data"] == first["data"], "an executed command is answered from the inbox, whatever its target"


# -- 4. target node -------------------------------------------------------------------------------------------


async def test_a_command_for_another_node_is_refused_and_not_executed(bus: Bus, storage_root: Path) -> None:
    """``target_node`` naming another node (in data or in data.context) is FAILED_PRECONDITION, with no effect."""
    in_data = manifest_for(storage_root, b"data")
    in_context = manifest_for(storage_root, b"context")
    replies = [
        await bus.call("register_artifact", {"manifest": in_data}, target_node="storage-secondary"),
        await bus.call("register_artifact", {"manifest": in_context}, context={"target_node": "storage-secondary"}),
    ]
    for reply in replies:
        err = error(reply)
        assert err["code"] == "FAILED_PRECONDITION" and err["retryable"] is False
        assert err["details"] == {"target_node": "storage-secondary", "node": NODE}
    for manifest in (in_data, in_context):
        assert not await artifact_exists(bus, manifest["id"])
        assert path_of(manifest["uri"]).exists()
    mine = manifest_for(storage_root, b"mine")
    reply = await bus.call("register_artifact", {"manifest": mine}, target_node=NODE, context={"target_node": NODE})
    assert output(reply)["registered"] is True


async def test_the_node_routing_key_reaches_the_worker(bus: Bus) -> None:
    """Commands published with ``cmd.storage.<node>`` are served like those on ``cmd.storage.any``."""
    out = output(await bus.call("ping", routing_key=f"cmd.storage.{NODE}"))
    assert out["node"] == NODE


# -- 6. no reply_to ---------------------------------------------------------------------------------------


async def test_a_command_without_reply_to_is_executed_silently(
    bus: Bus, outcomes: Outcomes, storage_root: Path
) -> None:
    """A fire-and-forget register takes effect though no reply is sent anywhere."""
    manifest = manifest_for(storage_root, b"fire and forget")
    envelope = register_command(manifest)
    await bus.publish(envelope.to_json_bytes(), reply=False)
    outcome = await outcomes.wait_for(lambda o: o.action == "register_artifact")
    assert outcome.body is None and outcome.code == "OK"
    assert await artifact_exists(bus, manifest["id"])
    assert not path_of(manifest["uri"]).exists()
    assert bus.unmatched == []


# -- 2. the inbox: duplicates and idempotency keys -------------------------------------------------------


async def test_the_same_envelope_twice_has_one_effect_and_one_reply(bus: Bus, storage_root: Path) -> None:
    """An envelope delivered three times (two at once) registers once; every reply is the same stored one."""
    manifest = manifest_for(storage_root, b"exactly once")
    body = register_command(manifest).to_json_bytes()
    correlation_ids = [new_id() for _ in range(3)]
    concurrent = await asyncio.gather(*(bus.send(body, cid) for cid in correlation_ids[:2]))
    later = await bus.send(body, correlation_ids[2])
    replies = [*concurrent, later]
    assert output(replies[0])["registered"] is True
    for reply, cid in zip(replies, correlation_ids, strict=True):
        assert reply["data"] == replies[0]["data"], "identical stored data, execution time included"
        assert reply["id"] == replies[0]["id"]
        assert reply["_amqp"]["message_id"] == replies[0]["id"]
        assert reply["_amqp"]["correlation_id"] == cid == reply["correlationid"]
    listed = output(await bus.call("list_artifacts", {}, amqp=ADMIN_AMQP))
    assert [m["id"] for m in listed["artifacts"]] == [manifest["id"]]
    assert len(list((storage_root / "artifacts").rglob("*"))) == 2  # the trace folder and one file


async def test_a_reused_idempotency_key_returns_the_stored_reply(bus: Bus, storage_root: Path) -> None:
    """A new envelope with an executed idempotency key and the same params gets the first reply, no new effect."""
    manifest = manifest_for(storage_root, b"keyed")
    # One requester throughout (the admin, who alone may delete): keys are per requester.
    first = await bus.call("register_artifact", {"manifest": manifest}, idempotency_key="upload-42", amqp=ADMIN_AMQP)
    second = await bus.call("register_artifact", {"manifest": manifest}, idempotency_key="upload-42", amqp=ADMIN_AMQP)
    assert output(first)["registered"] is True
    assert second["data"] == first["data"] and second["id"] == first["id"]
    # The key is per action: the same key on another write is a different command.
    other = await bus.call(
        "delete_artifact",
        {"artifact_id": manifest["id"]},
        idempotency_key="upload-42",
        amqp=ADMIN_AMQP,
    )
    assert output(other)["deleted"] is True


async def test_the_same_idempotency_key_with_other_params_is_refused(bus: Bus, storage_root: Path) -> None:
    """Reusing an idempotency key for a different request is INVALID_ARGUMENT, reason idempotency_key_reused."""
    first = manifest_for(storage_root, b"first")
    second = manifest_for(storage_root, b"second")
    assert output(await bus.call("register_artifact", {"manifest": first}, idempotency_key="k-1"))["registered"]
    err = error(await bus.call("register_artifact", {"manifest": second}, idempotency_key="k-1"))
    assert err["code"] == "INVALID_ARGUMENT" and err["retryable"] is False
    assert err["details"]["reason"] == "idempotency_key_reused"
    assert err["details"]["idempotency_key"] == "k-1"
    assert not await artifact_exists(bus, second["id"])
    assert path_of(second["uri"]).exists()


async def test_a_stored_error_is_replayed_not_re_executed(bus: Bus, storage_root: Path) -> None:
    """A write that failed for good (bad checksum) answers its retry with the same stored ERROR."""
    manifest = manifest_for(storage_root, b"bytes", checksum="sha256:" + "0" * 64)
    envelope = register_command(manifest)
    first = await bus.send(envelope.to_json_bytes(), envelope.id)
    assert error(first)["code"] == "INVALID_ARGUMENT"
    path_of(manifest["uri"]).write_bytes(b"bytes")  # even with the file back, the retry is not re-executed
    second = await bus.send(envelope.to_json_bytes(), new_id())
    assert second["data"] == first["data"] and second["id"] == first["id"]
    assert not await artifact_exists(bus, manifest["id"])


# -- 6. the reply itself ------------------------------------------------------------------------------------


async def test_reply_properties_and_body_follow_the_contract(bus: Bus) -> None:
    """Replies are persistent JSON, priority 20, with message_id = reply id and the command's routing fields."""
    command = make_command("ping", source="agent-test").model_copy(
        update={"subject": "case-77", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    )
    correlation_id = new_id()
    result = await bus.send(command.to_json_bytes(), correlation_id)
    failing = make_command("get_artifact", {"artifact_id": "art_00000000-0000-0000-0000-000000000000"}, source="a")
    failure = await bus.send(failing.model_copy(update={"subject": "s-2"}).to_json_bytes(), failing.id)
    for reply, cid, subject in ((result, correlation_id, "case-77"), (failure, failing.id, "s-2")):
        amqp = reply["_amqp"]
        assert amqp["delivery_mode"] == 2
        assert amqp["content_type"] == "application/json"
        assert amqp["priority"] == 20
        assert amqp["message_id"] == reply["id"] != command.id
        assert amqp["correlation_id"] == reply["correlationid"] == cid
        assert reply["specversion"] == "1.0" and reply["source"] == NODE
        assert reply["subject"] == subject
        assert datetime.fromisoformat(reply["time"]).tzinfo is not None
        assert reply["data"]["execution_time_ms"] >= 0
    assert result["type"] == "ai.team.result" and result["data"]["status"] == "SUCCESS"
    assert result["traceparent"] == command.traceparent
    assert failure["type"] == "ai.team.error" and "traceparent" not in failure


async def test_without_a_correlation_id_the_reply_carries_the_envelope_id(bus: Bus) -> None:
    """A command sent without AMQP correlation_id is answered with its envelope id as correlation id."""
    command = make_command("ping", source="agent-test")
    future = await bus.publish(command.to_json_bytes(), expect=command.id)
    assert future is not None
    reply = await asyncio.wait_for(future, 15)
    assert reply["_amqp"]["correlation_id"] == reply["correlationid"] == command.id
    assert output(reply)["node"] == NODE


async def test_garbage_never_holds_a_prefetch_slot(workers: Workers) -> None:
    """With prefetch 1, commands behind a non-JSON body are still served: the garbage was settled, not stuck."""
    _, bus = await workers.start(prefetch=1)
    for _ in range(3):
        await bus.publish(b"{not json", reply=False)
    assert output(await bus.call("ping", timeout=30))["node"] == NODE
    assert len(await dead_letters(bus, 3)) == 3
