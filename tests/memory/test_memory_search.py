"""search_memory, list_namespaces and the expired_memory cleanup through the wire."""

from __future__ import annotations

from sqlalchemy import func, select

from service.store.models import MemoryLabel, MemoryRecord
from service.transport.worker import Worker
from tests.support.broker import ADMIN_AMQP
from tests.support.bus import Bus, error, output
from tests.support.memory import put, search, search_all, until


async def test_search_by_prefix_matches_whole_parts_only(bus: Bus) -> None:
    """A prefix ["agent.7"] finds agent.7's items at any depth but never agent.70's."""
    await put(bus, ["agent.7"], "top", {"v": 0})
    await put(bus, ["agent.7", "facts"], "a", {"v": 1})
    await put(bus, ["agent.7", "facts", "deep"], "b", {"v": 2})
    await put(bus, ["agent.70", "facts"], "c", {"v": 3})
    await put(bus, ["agent.7x"], "d", {"v": 4})
    found = await search_all(bus, namespace_prefix=["agent.7"])
    assert sorted(item["key"] for item in found) == ["a", "b", "top"]
    facts = await search_all(bus, namespace_prefix=["agent.7", "facts"])
    assert sorted(item["key"] for item in facts) == ["a", "b"]


async def test_separator_and_wildcard_characters_in_namespaces_are_plain_text(bus: Bus) -> None:
    """Parts holding '/', '%' or '_' are matched literally: ["a/b"] is not ["a", "b"], "%" matches nothing else."""
    await put(bus, ["a/b"], "slash", {"v": 1})
    await put(bus, ["a", "b"], "nested", {"v": 2})
    await put(bus, ["100%"], "pct", {"v": 3})
    await put(bus, ["x_y"], "underscore", {"v": 4})
    await put(bus, ["xzy"], "other", {"v": 5})
    assert [i["key"] for i in await search_all(bus, namespace_prefix=["a/b"])] == ["slash"]
    assert [i["key"] for i in await search_all(bus, namespace_prefix=["a"])] == ["nested"]
    assert await search_all(bus, namespace_prefix=["%"]) == []
    assert [i["key"] for i in await search_all(bus, namespace_prefix=["x_y"])] == ["underscore"]
    slash = output(
        await bus.call("get_memory", {"namespace": ["a/b"], "key": "slash"}, context={"requester_id": "agent-a"})
    )
    assert slash["namespace"] == ["a/b"]


async def test_search_filters_on_all_labels_newest_first(bus: Bus) -> None:
    """Every given label must match; results come newest first."""
    ns = ["agent.r", "clients"]
    await put(bus, ns, "c1", {"v": 1}, labels={"inn": "7701", "risk": "low"})
    await put(bus, ns, "c2", {"v": 2}, labels={"inn": "7701", "risk": "high"})
    await put(bus, ns, "c3", {"v": 3}, labels={"inn": "7702", "risk": "low"})
    await put(bus, ns, "c4", {"v": 4}, labels={"inn": "7701", "risk": "low"})
    both = await search_all(bus, namespace_prefix=["agent.r"], labels={"inn": "7701", "risk": "low"})
    assert [i["key"] for i in both] == ["c4", "c1"]
    assert both[0]["labels"] == {"inn": "7701", "risk": "low"}
    one = await search_all(bus, namespace_prefix=ns, labels={"inn": "7701"})
    assert [i["key"] for i in one] == ["c4", "c2", "c1"]
    await put(bus, ns, "c1", {"v": 10}, labels={"inn": "7701", "risk": "low"})  # a rewrite makes it newest
    assert [i["key"] for i in await search_all(bus, namespace_prefix=ns, labels={"risk": "low"})] == ["c1", "c4", "c3"]


async def test_search_pages_cover_every_item_once(bus: Bus) -> None:
    """Following next_cursor returns every matching item exactly once, in newest-first order."""
    for i in range(23):
        await put(bus, ["agent.p", str(i % 3)], f"k{i:02d}", {"i": i})
    first = await search(bus, namespace_prefix=["agent.p"], limit=10)
    assert first["count"] == 10 and first["next_cursor"]
    found = await search_all(bus, namespace_prefix=["agent.p"], limit=10)
    assert [i["key"] for i in found] == [f"k{i:02d}" for i in reversed(range(23))]
    bad = error(await bus.call("search_memory", {"cursor": "not-a-cursor"}, context={"requester_id": "agent-a"}))
    assert bad["code"] == "INVALID_ARGUMENT" and bad["details"]["field"] == "cursor"


async def test_search_shows_only_what_the_requester_may_read(bus: Bus) -> None:
    """Another agent's search sees public items and its trace's items, never private ones."""
    ns = ["shared"]
    await put(bus, ns, "private", {"v": 1})
    await put(bus, ns, "public", {"v": 2}, visibility="public")
    await put(bus, ns, "trace", {"v": 3}, visibility="trace", trace="t-1")
    assert {i["key"] for i in await search_all(bus, agent="agent-b", namespace_prefix=ns)} == {"public"}
    seen = {i["key"] for i in (await search(bus, agent="agent-b", trace="t-1", namespace_prefix=ns))["items"]}
    assert seen == {"public", "trace"}
    assert {i["key"] for i in await search_all(bus, namespace_prefix=ns)} == {"private", "public", "trace"}


async def test_list_namespaces_with_prefix_and_max_depth(bus: Bus) -> None:
    """list_namespaces lists each namespace once, under a prefix, cut to max_depth when asked."""
    for ns in (["a", "x"], ["a", "x", "1"], ["a", "x", "2"], ["a", "y"], ["b"], ["ab", "z"]):
        await put(bus, ns, "k", {"v": 1})
        await put(bus, ns, "k2", {"v": 1})

    async def names(**params: object) -> list[list[str]]:
        out = output(await bus.call("list_namespaces", params, context={"requester_id": "agent-a"}))
        assert out["count"] == len(out["namespaces"])
        return out["namespaces"]  # type: ignore[no-any-return]

    assert await names(prefix=["a"]) == [["a", "x"], ["a", "x", "1"], ["a", "x", "2"], ["a", "y"]]
    assert await names(prefix=["a"], max_depth=2) == [["a", "x"], ["a", "y"]]
    assert await names(max_depth=1) == [["a"], ["ab"], ["b"]]
    assert await names(max_depth=1, limit=2) == [["a"], ["ab"]]
    pages, params = [], {"prefix": ["a"], "limit": 1}  # every namespace once, a page at a time
    while True:
        page = output(await bus.call("list_namespaces", params, context={"requester_id": "agent-a"}))
        pages.append(page["namespaces"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert pages == [[["a", "x"]], [["a", "x", "1"]], [["a", "x", "2"]], [["a", "y"]]]
    first = output(await bus.call("list_namespaces", {"max_depth": 1, "limit": 2}, context={"requester_id": "agent-a"}))
    rest = {"max_depth": 1, "limit": 2, "cursor": first["next_cursor"]}
    last = output(await bus.call("list_namespaces", rest, context={"requester_id": "agent-a"}))
    assert (last["namespaces"], last["next_cursor"]) == ([["b"]], None)
    forged = error(await bus.call("list_namespaces", {"cursor": "%%%"}, context={"requester_id": "agent-a"}))
    assert forged["code"] == "INVALID_ARGUMENT" and forged["details"]["field"] == "cursor"
    assert await names(prefix=["zzz"]) == []
    other = output(await bus.call("list_namespaces", {}, context={"requester_id": "agent-b"}))
    assert other["namespaces"] == []  # agent-b may read none of these private items


async def test_expired_items_vanish_from_search_and_cleanup_purges_them(bus: Bus, worker: Worker) -> None:
    """Expired items leave search and list_namespaces at once; cleanup's expired_memory then deletes their rows."""
    short = [await put(bus, ["tmp"], f"s{i}", {"i": i}, ttl_seconds=1, labels={"kind": "cache"}) for i in range(3)]
    await put(bus, ["tmp"], "kept", {"i": 9}, labels={"kind": "cache"})
    await until(max(p["expires_at"] for p in short))
    assert [i["key"] for i in await search_all(bus, namespace_prefix=["tmp"])] == ["kept"]
    assert output(await bus.call("get_stats", amqp=ADMIN_AMQP))["memory"] == {"tmp": 1}

    async def cleanup(dry_run: bool) -> int:
        params = {"scopes": ["expired_memory"], "dry_run": dry_run}
        return output(await bus.call("cleanup", params, amqp=ADMIN_AMQP))["counts"]["expired_memory"]  # type: ignore[no-any-return]

    assert await cleanup(dry_run=True) == 3
    assert await cleanup(dry_run=False) == 3
    assert await cleanup(dry_run=True) == 0
    assert worker.services is not None
    async with worker.services.engine.connect() as conn:
        rows = (await conn.execute(select(func.count()).select_from(MemoryRecord.__table__))).scalar_one()
        label_rows = (await conn.execute(select(func.count()).select_from(MemoryLabel.__table__))).scalar_one()
    assert (rows, label_rows) == (1, 1)
    assert [i["key"] for i in await search_all(bus, namespace_prefix=["tmp"])] == ["kept"]
