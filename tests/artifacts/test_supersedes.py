"""Class 7 of issue 16: ``supersedes`` hijacking, sent as an attacker would.

Alice registered a successor of Bob's private artifact: Bob's own v2 then failed with ALREADY_EXISTS and his
``latest`` pointed at Alice's file. Her refused attempts also told her the private artifact's version.
Now only the predecessor's owner (or an admin) registers its successor; a predecessor the requester cannot
read is NOT_FOUND exactly like an unknown one, and nothing about it is told.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.artifacts import manifest_for, new_artifact_id
from tests.support.broker import BROKER_USER
from tests.support.bus import Bus, error, output
from tests.support.wire import register
from tests.support.workers import Workers

pytestmark = pytest.mark.security

ADMIN = {"user_id": BROKER_USER}
BOB = {"requester_id": "bob", "requester_trace_id": "bob-trace"}
ALICE = {"requester_id": "alice", "requester_trace_id": "alice-trace"}


async def as_alice(bus: Bus, manifest: dict[str, Any]) -> dict[str, Any]:
    return await bus.call("register_artifact", {"manifest": manifest}, context=ALICE)


async def test_only_the_owner_registers_a_successor_and_nothing_leaks(workers: Workers, storage_root: Path) -> None:
    """Alice cannot extend Bob's private chain (NOT_FOUND, as for an unknown id, whatever version she tries,
    never told the real one) nor his public one (PERMISSION_DENIED); Bob's own v2 then registers, his latest
    is his, and an admin may still extend a chain."""
    _, bus = await workers.start(admins=frozenset({BROKER_USER}))
    private_v1, _ = await register(bus, storage_root, b"bob v1", visibility="private", version=3, command_context=BOB)
    public_v1, _ = await register(bus, storage_root, b"bob public", visibility="public", command_context=BOB)

    unknown = error(await as_alice(bus, manifest_for(storage_root, b"u", supersedes=new_artifact_id(), version=2)))
    for version in (2, 4, 9):
        hijack = manifest_for(storage_root, b"alice's v2", supersedes=private_v1["id"], version=version)
        err = error(await as_alice(bus, hijack))
        assert err["code"] == "NOT_FOUND" == unknown["code"], err
        assert set(err["details"]) == set(unknown["details"]) == {"field", "supersedes"}, err
        said = json.dumps(err)
        assert '"expected"' not in said and '"actual"' not in said and "bob" not in said, said
    public_hijack = manifest_for(storage_root, b"alice's", supersedes=public_v1["id"], version=2, visibility="public")
    assert error(await as_alice(bus, public_hijack))["code"] == "PERMISSION_DENIED"

    bobs_v2, out = await register(
        bus, storage_root, b"bob v2", visibility="private", supersedes=private_v1["id"], version=4, command_context=BOB
    )
    assert out["registered"] is True
    latest = output(await bus.call("get_artifact", {"artifact_id": private_v1["id"], "latest": True}, context=BOB))
    assert latest["artifact_id"] == bobs_v2["id"]
    assert latest["manifest"]["owner"] == "bob"

    fork = manifest_for(storage_root, b"alice fork", supersedes=private_v1["id"], version=4)
    err = error(await as_alice(bus, fork))
    assert err["code"] == "NOT_FOUND" and bobs_v2["id"] not in json.dumps(err), "the successor's id leaked"

    by_admin = manifest_for(storage_root, b"admin v2", supersedes=public_v1["id"], version=2, visibility="public")
    admin_out = output(await bus.call("register_artifact", {"manifest": by_admin}, amqp=ADMIN))
    assert admin_out["registered"] is True
