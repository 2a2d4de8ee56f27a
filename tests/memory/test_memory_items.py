"""put, get and delete of memory items through the wire: versions, TTL, ownership and visibility."""

from __future__ import annotations

from datetime import datetime

from contracts import make_command
from tests.support.broker import ADMIN_AMQP
from tests.support.bus import Bus, error, output
from tests.support.memory import get, put, put_error, until, who

NS = ["agent.researcher.001", "facts"]


async def test_put_then_get_returns_the_value_with_its_owner_and_labels(bus: Bus) -> None:
    """An agent reads back exactly what it stored, owned by itself and private by default."""
    out = await put(bus, NS, "capital.fr", {"answer": "Paris", "score": 0.98}, labels={"topic": "geo"})
    assert out == {"namespace": NS, "key": "capital.fr", "version": 1, "expires_at": None}
    item = output(await get(bus, NS, "capital.fr"))
    assert item["value"] == {"answer": "Paris", "score": 0.98}
    assert item["labels"] == {"topic": "geo"}
    assert item["owner"] == "agent-a" and item["visibility"] == "private"
    assert item["version"] == 1 and item["expires_at"] is None
    assert item["created_at"] == item["updated_at"]


async def test_put_replaces_value_and_labels_and_increments_version(bus: Bus) -> None:
    """A second put replaces the whole value and labels and bumps the version; created_at stays."""
    await put(bus, NS, "k", {"a": 1}, labels={"topic": "x", "stale": "yes"})
    first = output(await get(bus, NS, "k"))
    out = await put(bus, NS, "k", {"b": 2}, labels={"topic": "y"})
    assert out["version"] == 2
    item = output(await get(bus, NS, "k"))
    assert item["value"] == {"b": 2} and item["labels"] == {"topic": "y"}
    assert item["created_at"] == first["created_at"]
    assert datetime.fromisoformat(item["updated_at"]) >= datetime.fromisoformat(first["updated_at"])


async def test_expected_version_gives_optimistic_concurrency(bus: Bus) -> None:
    """A put naming a stale version is refused with ABORTED and changes nothing; the right version wins."""
    assert (await put(bus, NS, "counter", {"n": 0}, expected_version=0))["version"] == 1
    refused = await put_error(bus, {"namespace": NS, "key": "counter", "value": {"n": 5}, "expected_version": 0})
    assert refused["code"] == "ABORTED" and refused["retryable"] is True
    assert refused["details"]["expected_version"] == 0 and refused["details"]["actual"] == 1
    assert output(await get(bus, NS, "counter"))["value"] == {"n": 0}
    assert (await put(bus, NS, "counter", {"n": 1}, expected_version=1))["version"] == 2
    missing = await put_error(bus, {"namespace": NS, "key": "absent", "value": {}, "expected_version": 3})
    assert missing["code"] == "ABORTED" and missing["details"]["actual"] == 0


async def test_unknown_item_is_not_found(bus: Bus) -> None:
    """Reading a key nobody stored answers NOT_FOUND naming the namespace and key."""
    err = error(await get(bus, NS, "nothing-here"))
    assert err["code"] == "NOT_FOUND"
    assert err["details"] == {"namespace": NS, "key": "nothing-here"}


async def test_bad_params_are_refused_naming_the_field(bus: Bus) -> None:
    """Oversized values, too-deep or empty namespaces and NUL characters are INVALID_ARGUMENT naming the field."""
    big = {"blob": "x" * (64 * 1024)}
    cases = [
        ({"namespace": NS, "key": "k", "value": big}, "value"),
        ({"namespace": [str(i) for i in range(9)], "key": "k", "value": {}}, "namespace"),
        ({"namespace": [], "key": "k", "value": {}}, "namespace"),
        ({"namespace": ["ok", ""], "key": "k", "value": {}}, "namespace.1"),
        ({"namespace": NS, "key": "k", "value": {"s": "a\x00b"}}, "value"),
        ({"namespace": NS, "key": "k", "value": {}, "ttl_seconds": 0}, "ttl_seconds"),
    ]
    for params, field in cases:
        err = await put_error(bus, params)
        assert err["code"] == "INVALID_ARGUMENT", params
        fields = [e["field"] for e in err["details"].get("errors", [])] or [err["details"].get("field")]
        assert any(f == field or f.startswith(field + ".") for f in fields), (field, err)


async def test_resending_the_same_put_does_not_bump_the_version(bus: Bus) -> None:
    """A put redelivered with the same envelope id gets the stored reply; the item is written once."""
    envelope = make_command(
        "put_memory", {"namespace": NS, "key": "once", "value": {"v": 1}}, source="agent-a", context=who("agent-a")
    )
    first = output(await bus.send(envelope.to_json_bytes(), envelope.id))
    again = output(await bus.send(envelope.to_json_bytes(), envelope.id))
    assert first == again and first["version"] == 1
    assert output(await get(bus, NS, "once"))["version"] == 1


async def test_private_items_are_read_and_written_only_by_their_owner(bus: Bus) -> None:
    """Another agent can neither read, overwrite nor delete a private item; an admin can read it."""
    await put(bus, NS, "secret", {"v": 1}, agent="agent-a")
    refused = error(await get(bus, NS, "secret", agent="agent-b"))
    assert refused["code"] == "PERMISSION_DENIED"
    assert refused["details"] == {"namespace": NS, "key": "secret", "visibility": "private", "requester": "agent-b"}
    overwrite = await put_error(bus, {"namespace": NS, "key": "secret", "value": {"v": 2}}, agent="agent-b")
    assert overwrite["code"] == "PERMISSION_DENIED"
    delete = error(await bus.call("delete_memory", {"namespace": NS, "key": "secret"}, context=who("agent-b")))
    assert delete["code"] == "PERMISSION_DENIED"
    as_admin = output(await bus.call("get_memory", {"namespace": NS, "key": "secret"}, amqp=ADMIN_AMQP))
    assert as_admin["value"] == {"v": 1}


async def test_public_and_trace_visibility_work_as_for_artifacts(bus: Bus) -> None:
    """A public item is readable by anyone; a trace item by agents of the same trace only."""
    await put(bus, NS, "pub", {"v": 1}, visibility="public")
    await put(bus, NS, "tr", {"v": 2}, visibility="trace", trace="trace-7")
    assert output(await get(bus, NS, "pub", agent="agent-b"))["value"] == {"v": 1}
    shared = output(await get(bus, NS, "tr", agent="agent-b", trace="trace-7"))
    assert shared["value"] == {"v": 2} and shared["trace_id"] == "trace-7"
    assert error(await get(bus, NS, "tr", agent="agent-b", trace="trace-8"))["code"] == "PERMISSION_DENIED"


async def test_expired_item_is_gone_from_the_moment_it_expires(bus: Bus) -> None:
    """Once its TTL runs out an item is NOT_FOUND and a new put starts it afresh, before any cleanup ran."""
    out = await put(bus, NS, "cache", {"v": 1}, ttl_seconds=1, visibility="public")
    assert out["expires_at"] is not None
    assert output(await get(bus, NS, "cache"))["value"] == {"v": 1}
    await until(out["expires_at"])
    assert error(await get(bus, NS, "cache"))["code"] == "NOT_FOUND"
    deleted = output(await bus.call("delete_memory", {"namespace": NS, "key": "cache"}, context=who("agent-a")))
    assert deleted["deleted"] is False
    taken = await put(bus, NS, "cache", {"v": 2}, agent="agent-b")
    assert taken["version"] == 1 and taken["expires_at"] is None
    assert output(await get(bus, NS, "cache", agent="agent-b"))["owner"] == "agent-b"


async def test_refresh_ttl_pushes_the_expiry_back(bus: Bus) -> None:
    """get with refresh_ttl restarts the item's TTL from now; a plain get leaves it alone."""
    out = await put(bus, NS, "session", {"v": 1}, ttl_seconds=3600)
    plain = output(await get(bus, NS, "session"))
    assert plain["expires_at"] == out["expires_at"]
    refreshed = output(await get(bus, NS, "session", refresh_ttl=True))
    assert datetime.fromisoformat(refreshed["expires_at"]) > datetime.fromisoformat(out["expires_at"])
    assert output(await get(bus, NS, "session"))["expires_at"] == refreshed["expires_at"]
    assert refreshed["version"] == 1 and refreshed["value"] == {"v": 1}
    await put(bus, NS, "forever", {"v": 1})
    assert output(await get(bus, NS, "forever", refresh_ttl=True))["expires_at"] is None


async def test_delete_removes_the_item(bus: Bus) -> None:
    """After delete_memory the item is NOT_FOUND; deleting again reports deleted false."""
    await put(bus, NS, "gone", {"v": 1}, labels={"topic": "t"})
    first = output(await bus.call("delete_memory", {"namespace": NS, "key": "gone"}, context=who("agent-a")))
    assert first == {"namespace": NS, "key": "gone", "deleted": True}
    assert error(await get(bus, NS, "gone"))["code"] == "NOT_FOUND"
    again = output(await bus.call("delete_memory", {"namespace": NS, "key": "gone"}, context=who("agent-a")))
    assert again["deleted"] is False


async def test_get_stats_counts_live_items_per_top_level_namespace(bus: Bus) -> None:
    """get_stats reports how many live items each top-level namespace holds (an admin sees them all)."""
    for i in range(3):
        await put(bus, ["agent.a", "facts", str(i)], "k", {"i": i})
    await put(bus, ["agent.b"], "k", {"i": 0})
    stats = output(await bus.call("get_stats", amqp=ADMIN_AMQP))
    assert stats["memory"] == {"agent.a": 3, "agent.b": 1}
