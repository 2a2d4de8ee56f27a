"""Class 8: no reply exceeds STORAGE_MAX_REPLY_BYTES.

Mallory fills threads, artifacts and memory with large items, then asks for everything at once
(``limit=10000``, ``limit=1000``). Every reply must stay under the cap: pages are cut short with
``next_cursor`` (at least one item a page), paging reaches every item exactly once, and a single item too
large for any reply is a non-retryable ERROR, never a message RabbitMQ refuses and redelivers forever.
Most tests run a worker with a small cap so they stay fast; one checks the default 4 MiB with 900 KB messages.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.artifacts import manifest_for
from tests.support.bus import Bus, error, output
from tests.support.workers import Workers

pytestmark = pytest.mark.security

MALLORY = {"requester_id": "mallory", "requester_trace_id": "trace-mallory"}
SMALL_CAP = 64 * 1024
DEFAULT_CAP = 4 * 1024 * 1024


def _size(reply: dict[str, Any]) -> int:
    """The reply's size on the wire (the worker writes compact UTF-8 JSON, as this does)."""
    return len(json.dumps(reply, ensure_ascii=False, separators=(",", ":")).encode())


async def _call(bus: Bus, action: str, cap: int, **params: Any) -> dict[str, Any]:
    """One call as Mallory whose reply must fit ``cap``; its output."""
    reply = await bus.call(action, params, context=MALLORY, timeout=60)
    assert _size(reply) <= cap, f"{action} replied {_size(reply)} bytes, more than {cap}"
    return output(reply)


async def _pages(bus: Bus, action: str, key: str, cap: int, **params: Any) -> list[list[Any]]:
    """Every page of a listing, following next_cursor to the end."""
    pages: list[list[Any]] = []
    cursor = None
    while True:
        got = await _call(bus, action, cap, **params, **({"cursor": cursor} if cursor else {}))
        assert got[key], f"{action} returned an empty page with a cursor"
        pages.append(got[key])
        cursor = got["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "paging does not end"


async def _save_big_thread(bus: Bus, thread_id: str, count: int, size: int) -> list[str]:
    contents = [f"{i:04d}:" + "x" * size for i in range(count)]
    for content in contents:
        params = {"thread_id": thread_id, "messages": [{"role": "user", "content": content}]}
        output(await bus.call("save_thread", params, context=MALLORY, timeout=60))
    return contents


async def test_get_thread_of_large_messages_pages_back_within_the_cap(workers: Workers) -> None:
    """limit=10000 on a thread of 10 KB messages under a 64 KiB cap: short pages, newest first, all reachable."""
    _, bus = await workers.start(max_reply_bytes=SMALL_CAP)
    thread_id = f"big-{uuid.uuid4().hex[:8]}"
    contents = await _save_big_thread(bus, thread_id, 24, 10_000)

    pages = await _pages(bus, "get_thread", "messages", SMALL_CAP, thread_id=thread_id, limit=10_000)
    assert len(pages) > 1
    read = [[m["content"] for m in page] for page in pages]
    for page in read:  # chronological within a page
        assert page == sorted(page)
    assert [c for page in reversed(read) for c in page] == contents  # newest page first, every message once


async def test_the_default_cap_holds_with_900_kb_messages(bus: Bus) -> None:
    """Six 900 KB messages: get_thread limit=10000 answers at most 4 MiB a page and pages to the first message."""
    thread_id = f"huge-{uuid.uuid4().hex[:8]}"
    contents = await _save_big_thread(bus, thread_id, 6, 900_000)

    first = await _call(bus, "get_thread", DEFAULT_CAP, thread_id=thread_id, limit=10_000)
    assert first["next_cursor"] is not None and 1 <= len(first["messages"]) < 6
    pages = await _pages(bus, "get_thread", "messages", DEFAULT_CAP, thread_id=thread_id, limit=10_000)
    assert [m["content"] for page in reversed(pages) for m in page] == contents


async def test_list_threads_pages_within_the_cap(workers: Workers) -> None:
    """Thirty threads with 8 KB of metadata each, listed with limit=1000 under a 64 KiB cap: every one, once."""
    _, bus = await workers.start(max_reply_bytes=SMALL_CAP)
    tag = uuid.uuid4().hex
    saved = set()
    for index in range(30):
        thread_id = f"meta-{tag[:8]}-{index:02d}"
        params = {"thread_id": thread_id, "metadata": {"tag": tag, "blob": "m" * 8000}}
        output(await bus.call("save_thread", params, context=MALLORY))
        saved.add(thread_id)

    pages = await _pages(bus, "list_threads", "threads", SMALL_CAP, metadata={"tag": tag}, limit=1000)
    listed = [t["thread_id"] for page in pages for t in page]
    assert len(pages) > 1 and sorted(listed) == sorted(saved)


async def test_list_artifacts_pages_within_the_cap(workers: Workers, storage_root: Path) -> None:
    """Twenty artifacts with 10 KB manifests, listed with limit=1000 under a 64 KiB cap: every one, once."""
    _, bus = await workers.start(max_reply_bytes=SMALL_CAP)
    trace = f"trace-{uuid.uuid4().hex[:8]}"
    registered = set()
    for index in range(20):
        notes = {"notes": "n" * 10_000}
        manifest = manifest_for(
            storage_root, f"bytes {index}".encode(), trace_id=trace, visibility="public", context=notes
        )
        output(await bus.call("register_artifact", {"manifest": manifest}, context=MALLORY))
        registered.add(manifest["id"])

    pages = await _pages(bus, "list_artifacts", "artifacts", SMALL_CAP, trace_id=trace, limit=1000)
    listed = [a["id"] for page in pages for a in page]
    assert len(pages) > 1 and sorted(listed) == sorted(registered)


async def test_search_memory_pages_within_the_cap(workers: Workers) -> None:
    """Twelve 20 KB memory values, searched with limit=1000 under a 64 KiB cap: every one, once."""
    _, bus = await workers.start(max_reply_bytes=SMALL_CAP)
    space = f"ns-{uuid.uuid4().hex[:8]}"
    for index in range(12):
        params = {"namespace": [space], "key": f"k{index:02d}", "value": {"blob": "v" * 20_000}}
        output(await bus.call("put_memory", params, context=MALLORY))

    pages = await _pages(bus, "search_memory", "items", SMALL_CAP, namespace_prefix=[space], limit=1000)
    keys = [item["key"] for page in pages for item in page]
    assert len(pages) > 1 and sorted(keys) == [f"k{i:02d}" for i in range(12)]


async def test_a_single_item_larger_than_the_cap_is_a_final_error(workers: Workers) -> None:
    """One 40 KB message under a 16 KiB cap: a non-retryable RESOURCE_EXHAUSTED reply_too_large, and the worker
    goes on answering (the command is not redelivered in a loop)."""
    cap = 16 * 1024
    _, bus = await workers.start(max_reply_bytes=cap)
    thread_id = f"one-{uuid.uuid4().hex[:8]}"
    await _save_big_thread(bus, thread_id, 1, 40_000)

    reply = await bus.call("get_thread", {"thread_id": thread_id}, context=MALLORY)
    assert _size(reply) <= cap
    failure = error(reply)
    assert failure["code"] == "RESOURCE_EXHAUSTED" and failure["retryable"] is False
    assert failure["details"]["reason"] == "reply_too_large" and failure["details"]["limit_bytes"] == cap
    assert output(await bus.call("ping"))["node"]
    assert await bus.dlq_messages() == []
    assert bus.unmatched == []  # answered once: no redelivery produced a second reply
