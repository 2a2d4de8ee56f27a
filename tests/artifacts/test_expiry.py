"""Class 11 of issue 16 (its expiry leak): artifacts past their retention were served until cleanup ran.

An artifact registered with a retention was still returned by get_artifact, get_artifact_uri and
list_artifacts after it ran out, for as long as the next cleanup pass took (an hour by default), while
threads and memory vanish at once. Now an expired artifact is NOT_FOUND the moment it expires and no
listing shows it; only a requester who could read it is told why.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.broker import BROKER_USER
from tests.support.bus import error, output
from tests.support.wire import register
from tests.support.workers import Workers

pytestmark = pytest.mark.security

BOB = {"requester_id": "bob", "requester_trace_id": "bob-trace"}
MALLORY = {"requester_id": "mallory"}


async def test_an_expired_artifact_disappears_at_once(workers: Workers, storage_root: Path) -> None:
    """One second after registration, with no cleanup run, an artifact with retention "1s" is NOT_FOUND for
    get_artifact, get_artifact_uri and latest, and gone from every listing; a stranger learns nothing more."""
    _, bus = await workers.start(admins=frozenset({BROKER_USER}), cleanup_interval_s=0)
    kept, _ = await register(bus, storage_root, b"kept", visibility="public", command_context=BOB)
    short, _ = await register(bus, storage_root, b"short-lived", visibility="public", command_context=BOB)
    v2, _ = await register(
        bus,
        storage_root,
        b"v2",
        visibility="public",
        retention="1s",
        supersedes=short["id"],
        version=2,
        command_context=BOB,
    )
    secret, _ = await register(bus, storage_root, b"private", visibility="private", retention="1s", command_context=BOB)
    await asyncio.sleep(1.2)

    for action in ("get_artifact", "get_artifact_uri"):
        gone = error(await bus.call(action, {"artifact_id": v2["id"]}, context=BOB))
        assert gone["code"] == "NOT_FOUND" and gone["details"]["reason"] == "expired", (action, gone)
        hidden = error(await bus.call(action, {"artifact_id": secret["id"]}, context=MALLORY))
        assert hidden["code"] == "NOT_FOUND" and "reason" not in hidden["details"], (action, hidden)
    latest = output(await bus.call("get_artifact", {"artifact_id": short["id"], "latest": True}, context=BOB))
    assert latest["artifact_id"] == short["id"], "latest walked onto an expired version"

    listed = output(await bus.call("list_artifacts", {}, context=BOB))["artifacts"]
    assert {m["id"] for m in listed} == {kept["id"], short["id"]}
    newest = output(await bus.call("list_artifacts", {"latest_only": True}, context=BOB))["artifacts"]
    assert {m["id"] for m in newest} == {kept["id"], short["id"]}, "an expired successor still hides its predecessor"
