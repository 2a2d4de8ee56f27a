"""Class 3: the inbox is keyed by requester. Another agent's envelope ids and idempotency keys never match.

An attacker who learns (or guesses) the envelope id of someone's command must neither read that command's
stored reply nor pre-empt it by using the id first; one agent's idempotency key never blocks another's.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from contracts import make_command
from tests.support.artifacts import manifest_for
from tests.support.bus import Bus, error, output

pytestmark = pytest.mark.security

ALICE = {"requester_id": "alice", "requester_trace_id": "trace-alice"}
BOB = {"requester_id": "bob", "requester_trace_id": "trace-bob"}


async def send_as(
    bus: Bus, context: dict[str, Any], envelope_id: str, action: str, params: dict[str, Any], **data: Any
) -> dict[str, Any]:
    """One COMMAND with a chosen envelope id, as an agent crafting its own envelope would send it."""
    envelope = make_command(action, params, source="agent-x", context=context, **data)
    envelope = envelope.model_copy(update={"id": envelope_id})
    return await bus.send(envelope.to_json_bytes(), str(uuid.uuid4()))


async def test_another_agents_envelope_id_never_returns_their_stored_reply(bus: Bus, storage_root: Path) -> None:
    """Alice replays Bob's envelope id: she gets no trace of Bob's private manifest, her own command runs."""
    bobs_id = str(uuid.uuid4())
    secret = manifest_for(storage_root, b"bob's private findings", trace_id="trace-bob", visibility="private")
    bob = output(await send_as(bus, BOB, bobs_id, "register_artifact", {"manifest": secret}))
    assert bob["registered"] is True

    mine = manifest_for(storage_root, b"alice's own bytes", trace_id="trace-alice")
    reply = await send_as(bus, ALICE, bobs_id, "register_artifact", {"manifest": mine})
    assert secret["id"] not in str(reply["data"]) and "private findings" not in str(reply["data"])
    got = output(reply)
    assert got["artifact_id"] == mine["id"] and got["registered"] is True
    assert output(await bus.call("get_artifact", {"artifact_id": mine["id"]}, context=ALICE))["manifest"]["owner"] == (
        "alice"
    )


async def test_an_id_used_first_by_another_agent_does_not_swallow_my_command(bus: Bus, storage_root: Path) -> None:
    """Alice uses an id first; Bob's later command with that id is executed, not answered with Alice's reply."""
    shared_id = str(uuid.uuid4())
    output(await send_as(bus, ALICE, shared_id, "save_thread", {"thread_id": "alice-t", "messages": []}))

    manifest = manifest_for(storage_root, b"bob's work of an hour", trace_id="trace-bob")
    reply = output(await send_as(bus, BOB, shared_id, "register_artifact", {"manifest": manifest}))
    assert reply["artifact_id"] == manifest["id"] and reply["registered"] is True
    stored = output(await bus.call("get_artifact", {"artifact_id": manifest["id"]}, context=BOB))
    assert stored["manifest"]["status"] == "completed"
    assert Path(stored["manifest"]["uri"].removeprefix("file://")).read_bytes() == b"bob's work of an hour"


async def test_idempotency_keys_are_per_requester(bus: Bus) -> None:
    """Bob's command with the idempotency key Alice used runs as his own; it is not refused as a reused key."""
    key = "nightly-summary"
    alice = {"thread_id": "alice-t", "messages": [{"role": "user", "content": "alice's question"}]}
    output(await send_as(bus, ALICE, str(uuid.uuid4()), "save_thread", alice, idempotency_key=key))
    bob = {"thread_id": "bob-t", "messages": [{"role": "user", "content": "bob's question"}]}
    saved = output(await send_as(bus, BOB, str(uuid.uuid4()), "save_thread", bob, idempotency_key=key))
    assert saved["thread_id"] == "bob-t" and saved["inserted"] == 1
    got = output(await bus.call("get_thread", {"thread_id": "bob-t"}, context=BOB))
    assert [m["content"] for m in got["messages"]] == ["bob's question"]


async def test_the_same_requester_reusing_an_envelope_id_for_other_params_is_refused(
    bus: Bus, storage_root: Path
) -> None:
    """Reusing one's own envelope id for a different command is INVALID_ARGUMENT envelope_id_reused, not a replay."""
    envelope_id = str(uuid.uuid4())
    output(await send_as(bus, ALICE, envelope_id, "save_thread", {"thread_id": "t-1", "messages": []}))
    again = output(await send_as(bus, ALICE, envelope_id, "save_thread", {"thread_id": "t-1", "messages": []}))
    assert again["thread_id"] == "t-1"  # an exact replay still gets the stored reply

    manifest = manifest_for(storage_root, b"a different command", trace_id="trace-alice")
    err = error(await send_as(bus, ALICE, envelope_id, "register_artifact", {"manifest": manifest}))
    assert err["code"] == "INVALID_ARGUMENT" and err["details"]["reason"] == "envelope_id_reused"
    err = error(await send_as(bus, ALICE, envelope_id, "save_thread", {"thread_id": "t-2", "messages": []}))
    assert err["code"] == "INVALID_ARGUMENT" and err["details"]["reason"] == "envelope_id_reused"
    assert error(await bus.call("get_artifact", {"artifact_id": manifest["id"]}, context=ALICE))["code"] == "NOT_FOUND"
