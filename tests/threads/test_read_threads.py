"""get_thread, list_threads and delete_thread through the wire."""

from __future__ import annotations

import uuid
from typing import Any

from tests.support.bus import Bus, error, output

COMPANY = "ООО «Ромашка»"  # noqa: RUF001 - a Cyrillic company name, as agents store them
OTHER_COMPANY = "АО «Василёк»"  # noqa: RUF001


def _thread_id() -> str:
    return f"chat-{uuid.uuid4().hex[:12]}"


async def _save(bus: Bus, thread_id: str, messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
    return output(await bus.call("save_thread", {"thread_id": thread_id, "messages": messages, **params}))


async def _list(bus: Bus, **params: Any) -> dict[str, Any]:
    return output(await bus.call("list_threads", params))


async def test_get_thread_limit_returns_the_most_recent_in_order(bus: Bus) -> None:
    """limit=N gives the last N messages, oldest of them first."""
    thread_id = _thread_id()
    for start in range(0, 20, 5):
        await _save(bus, thread_id, [{"role": "user", "content": f"m{i}"} for i in range(start, start + 5)])
    got = output(await bus.call("get_thread", {"thread_id": thread_id, "limit": 3}))
    assert [m["content"] for m in got["messages"]] == ["m17", "m18", "m19"]
    assert got["thread"]["message_count"] == 20


async def test_unknown_thread_is_not_found(bus: Bus) -> None:
    """Reading a thread nobody saved is NOT_FOUND naming the thread."""
    failure = error(await bus.call("get_thread", {"thread_id": "never-saved"}))
    assert failure["code"] == "NOT_FOUND" and failure["details"]["thread_id"] == "never-saved"


async def test_delete_is_soft_and_a_new_save_starts_afresh(bus: Bus) -> None:
    """A deleted thread is gone for readers, still there with include_deleted, and saving it again starts over."""
    thread_id = _thread_id()
    await _save(bus, thread_id, [{"role": "user", "content": "old"}], metadata={"stage": "a"})
    assert output(await bus.call("delete_thread", {"thread_id": thread_id})) == {
        "thread_id": thread_id,
        "deleted": True,
    }
    assert output(await bus.call("delete_thread", {"thread_id": thread_id}))["deleted"] is False
    assert error(await bus.call("get_thread", {"thread_id": thread_id}))["code"] == "NOT_FOUND"
    kept = output(await bus.call("get_thread", {"thread_id": thread_id, "include_deleted": True}))
    assert kept["thread"]["deleted_at"] is not None and [m["content"] for m in kept["messages"]] == ["old"]
    assert thread_id not in {t["thread_id"] for t in (await _list(bus, metadata={"stage": "a"}))["threads"]}

    fresh = await _save(bus, thread_id, [{"role": "user", "content": "new"}], expected_version=0)
    assert fresh["version"] > 2
    got = output(await bus.call("get_thread", {"thread_id": thread_id}))
    assert [m["content"] for m in got["messages"]] == ["new"]
    assert got["thread"]["metadata"] == {} and got["thread"]["deleted_at"] is None


async def test_delete_of_unknown_thread_reports_false(bus: Bus) -> None:
    """Deleting a thread that never existed is not an error: deleted is false."""
    assert output(await bus.call("delete_thread", {"thread_id": "ghost"}))["deleted"] is False


async def test_metadata_filters_all_must_match_including_cyrillic_and_numbers(bus: Bus) -> None:
    """Filtering by a Cyrillic company name and a tax number finds exactly the threads with both."""
    tag = uuid.uuid4().hex
    both, name_only, inn_as_number = _thread_id(), _thread_id(), _thread_id()
    await _save(bus, both, [], metadata={"tag": tag, "company": COMPANY, "inn": "7701234567", "vip": True})
    await _save(bus, name_only, [], metadata={"tag": tag, "company": COMPANY, "inn": "7709999999"})
    await _save(bus, inn_as_number, [], metadata={"tag": tag, "company": OTHER_COMPANY, "inn": 7701234567})

    found = await _list(bus, metadata={"tag": tag, "company": COMPANY, "inn": "7701234567"})
    assert [t["thread_id"] for t in found["threads"]] == [both] and found["count"] == 1
    by_company = await _list(bus, metadata={"tag": tag, "company": COMPANY})
    assert {t["thread_id"] for t in by_company["threads"]} == {both, name_only}
    by_number = await _list(bus, metadata={"tag": tag, "inn": 7701234567})
    assert {t["thread_id"] for t in by_number["threads"]} == {both, inn_as_number}
    assert [t["thread_id"] for t in (await _list(bus, metadata={"tag": tag, "vip": True}))["threads"]] == [both]
    assert (await _list(bus, metadata={"tag": tag, "vip": False}))["count"] == 0

    await _save(bus, both, [], metadata={"company": None})
    assert [t["thread_id"] for t in (await _list(bus, metadata={"tag": tag, "company": COMPANY}))["threads"]] == [
        name_only
    ]


async def _tagged_threads(bus: Bus, count: int) -> tuple[str, list[str]]:
    """``count`` empty threads saved one after another under a fresh ``tag`` metadata value; (tag, ids in order)."""
    tag = uuid.uuid4().hex
    ids = [_thread_id() for _ in range(count)]
    for thread_id in ids:
        await _save(bus, thread_id, [], metadata={"tag": tag})
    return tag, ids


async def test_list_pages_newest_first_with_a_cursor(bus: Bus) -> None:
    """Paging with limit and next_cursor visits every thread once, newest first, and ends with a null cursor."""
    tag, made = await _tagged_threads(bus, 7)
    seen: list[str] = []
    cursor = None
    while True:
        page = await _list(bus, metadata={"tag": tag}, limit=3, **({"cursor": cursor} if cursor else {}))
        assert page["count"] == len(page["threads"]) <= 3
        seen += [t["thread_id"] for t in page["threads"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(made))


async def test_list_time_range(bus: Bus) -> None:
    """created_after and created_before narrow the listing to threads created in that window."""
    tag, ids = await _tagged_threads(bus, 3)
    threads = {t["thread_id"]: t for t in (await _list(bus, metadata={"tag": tag}))["threads"]}
    middle = threads[ids[1]]["created_at"]
    after = await _list(bus, metadata={"tag": tag}, created_after=middle)
    before = await _list(bus, metadata={"tag": tag}, created_before=middle)
    assert [t["thread_id"] for t in after["threads"]] == [ids[2]]
    assert [t["thread_id"] for t in before["threads"]] == [ids[0]]


async def test_a_foreign_cursor_is_invalid(bus: Bus) -> None:
    """A cursor the worker did not issue is INVALID_ARGUMENT naming the cursor field."""
    failure = error(await bus.call("list_threads", {"cursor": "not-a-cursor"}))
    assert failure["code"] == "INVALID_ARGUMENT" and failure["details"]["field"] == "cursor"
