"""Class 11 of issue 16 (two of its leaks): refusals naming the owner, and get_stats naming others' namespaces.

A stranger that is refused a private artifact or memory item learned whose it was (``details.owner``): under
body identity, the very name to claim next. ``get_stats`` listed every top-level memory namespace with its
count to anyone, so an agent's private namespace names (often a project, a customer, a person) were public.
Now a refusal names the item, its visibility and the requester only, and ``get_stats`` counts only the
namespaces of items the requester may read (an admin sees all of them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import BROKER_USER
from tests.support.bus import Bus, error, output
from tests.support.wire import register
from tests.support.workers import Workers

pytestmark = pytest.mark.security

OWNER = "alice-the-owner"
STRANGER = {"requester_id": "mallory"}
ADMIN = {"user_id": BROKER_USER}


def as_(agent: str) -> dict[str, Any]:
    return {"requester_id": agent}


def assert_owner_not_named(err: dict[str, Any]) -> None:
    assert err["code"] == "PERMISSION_DENIED", err
    assert "owner" not in err["details"], err["details"]
    assert OWNER not in json.dumps(err), f"the refusal names the owner: {err}"
    assert err["details"]["requester"] == "mallory"


async def test_refusals_never_name_the_owner(workers: Workers, storage_root: Path) -> None:
    """A stranger refused a private artifact, a private memory item or a write over it is told the item, its
    visibility and who asked, never whose it is."""
    _, bus = await workers.start(admins=frozenset({BROKER_USER}))
    manifest, _ = await register(bus, storage_root, b"private", visibility="private", command_context=as_(OWNER))
    item = {"namespace": ["plans"], "key": "q3"}
    output(await bus.call("put_memory", {**item, "value": {"v": 1}}, context=as_(OWNER)))

    artifact = error(await bus.call("get_artifact", {"artifact_id": manifest["id"]}, context=STRANGER))
    assert_owner_not_named(artifact)
    assert artifact["details"]["artifact"] == manifest["id"] and artifact["details"]["visibility"] == "private"
    uri = error(await bus.call("get_artifact_uri", {"artifact_id": manifest["id"]}, context=STRANGER))
    assert_owner_not_named(uri)
    read = error(await bus.call("get_memory", item, context=STRANGER))
    assert_owner_not_named(read)
    assert read["details"]["visibility"] == "private" and read["details"]["key"] == "q3"
    write = error(await bus.call("put_memory", {**item, "value": {"v": 2}}, context=STRANGER))
    assert_owner_not_named(write)
    delete = error(await bus.call("delete_memory", item, context=STRANGER))
    assert_owner_not_named(delete)


async def stats_memory(bus: Bus, **sender: Any) -> dict[str, int]:
    return output(await bus.call("get_stats", **sender))["memory"]  # type: ignore[no-any-return]


async def test_get_stats_shows_only_namespaces_the_requester_may_read(workers: Workers) -> None:
    """Another agent's private namespaces appear in nobody else's get_stats, neither name nor count; public
    items count for everyone, one's own for oneself, and an admin sees every namespace."""
    _, bus = await workers.start(admins=frozenset({BROKER_USER}))
    for key in ("a", "b"):
        put = {"namespace": ["alice-acquisition-target", "notes"], "key": key, "value": {"v": key}}
        output(await bus.call("put_memory", put, context=as_(OWNER)))
    output(await bus.call("put_memory", {"namespace": ["shared"], "key": "k", "value": {}, "visibility": "public"}))
    output(await bus.call("put_memory", {"namespace": ["mallory-own"], "key": "k", "value": {}}, context=STRANGER))

    assert await stats_memory(bus, context=STRANGER) == {"shared": 1, "mallory-own": 1}
    assert await stats_memory(bus, context=as_(OWNER)) == {"shared": 1, "alice-acquisition-target": 2}
    assert await stats_memory(bus, context={}) == {"shared": 1}
    everything = await stats_memory(bus, amqp=ADMIN)
    assert everything == {"shared": 1, "mallory-own": 1, "alice-acquisition-target": 2}
