"""A thread remembers max_messages and ttl_seconds; get_thread_info shows them with the current system prompt.

Through the client library (its ``CLEAR`` sends the wire's ``null``) and over raw AMQP, on both databases.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from buffer import CLEAR, Buffered, InvalidArgument, NotFound, StorageClient
from contracts import SaveThreadOutput
from service.transport.worker import Worker
from tests.support.bus import Bus, error, output
from tests.support.client import client_settings
from tests.support.workers import Workers

ALICE = {"requester_id": "alice", "requester_trace_id": "trace-alice"}
COLLEAGUE = {"requester_id": "bob", "requester_trace_id": "trace-alice"}
MALLORY = {"requester_id": "mallory", "requester_trace_id": "trace-mallory"}


def _thread_id() -> str:
    return f"settings-{uuid.uuid4().hex[:12]}"


def _turns(*contents: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": c} for c in contents]


def _saved(out: SaveThreadOutput | Buffered) -> SaveThreadOutput:
    assert isinstance(out, SaveThreadOutput), out
    return out


async def test_settings_apply_to_later_saves_until_cleared_with_the_client(worker: Worker, tmp_path: Path) -> None:
    """max_messages and ttl_seconds given once keep trimming and extending later saves; CLEAR forgets both."""
    thread_id = _thread_id()
    async with StorageClient(**client_settings(worker, tmp_path / "buffer", agent_id="alice")) as storage:
        first = _saved(
            await storage.save_thread(thread_id, _turns("a", "b", "c", "d"), max_messages=3, ttl_seconds=600)
        )
        assert first.trimmed == 1
        info = await storage.get_thread_info(thread_id)
        assert (info.max_messages, info.ttl_seconds) == (3, 600)
        assert info.expires_at is not None
        expiry = info.expires_at

        await asyncio.sleep(0.02)
        later = _saved(await storage.save_thread(thread_id, _turns("e", "f")))  # no settings: the remembered ones
        assert later.trimmed == 2
        got = await storage.get_thread(thread_id)
        assert [m.content for m in got.messages] == ["d", "e", "f"]
        info = await storage.get_thread_info(thread_id)
        assert (info.max_messages, info.ttl_seconds, info.message_count) == (3, 600, 3)
        assert info.expires_at is not None and info.expires_at > expiry  # the TTL moved the expiry again

        changed = _saved(await storage.save_thread(thread_id, _turns("g"), max_messages=2))  # changed, TTL kept
        assert changed.trimmed == 2
        info = await storage.get_thread_info(thread_id)
        assert (info.max_messages, info.ttl_seconds) == (2, 600)

        cleared = _saved(await storage.save_thread(thread_id, _turns("h", "i"), max_messages=CLEAR, ttl_seconds=CLEAR))
        assert cleared.trimmed == 0
        info = await storage.get_thread_info(thread_id)
        assert (info.max_messages, info.ttl_seconds, info.expires_at) == (None, None, None)
        _saved(await storage.save_thread(thread_id, _turns("j")))  # forgotten for good: nothing trimmed any more
        got = await storage.get_thread(thread_id)
        assert [m.content for m in got.messages] == ["f", "g", "h", "i", "j"]


async def test_the_expiry_sliding_alone_keeps_the_version(bus: Bus) -> None:
    """A save that changes nothing moves the expiry by the remembered TTL without a new version: expected_version
    writers are not disturbed by a replayed history."""
    thread_id = _thread_id()
    saved = output(await bus.call("save_thread", {"thread_id": thread_id, "messages": _turns("x"), "ttl_seconds": 60}))
    before = output(await bus.call("get_thread_info", {"thread_id": thread_id}))
    await asyncio.sleep(0.02)
    again = output(await bus.call("save_thread", {"thread_id": thread_id, "expected_version": saved["version"]}))
    after = output(await bus.call("get_thread_info", {"thread_id": thread_id}))
    assert again["version"] == saved["version"] == after["version"]
    assert after["expires_at"] > before["expires_at"]
    assert after["updated_at"] == before["updated_at"]


async def test_null_over_raw_amqp_clears_and_absent_keeps(bus: Bus) -> None:
    """On the wire, an absent setting keeps the remembered one and an explicit null clears it; clearing bumps the
    version (the thread changed)."""
    thread_id = _thread_id()
    await bus.call("save_thread", {"thread_id": thread_id, "messages": _turns("1", "2", "3"), "max_messages": 2})
    kept = output(await bus.call("save_thread", {"thread_id": thread_id, "messages": _turns("4")}))
    assert kept["trimmed"] == 1
    cleared = output(await bus.call("save_thread", {"thread_id": thread_id, "max_messages": None}))
    assert cleared["version"] == kept["version"] + 1
    grown = output(await bus.call("save_thread", {"thread_id": thread_id, "messages": _turns("5", "6")}))
    assert grown["trimmed"] == 0
    info = output(await bus.call("get_thread_info", {"thread_id": thread_id}))
    assert info["max_messages"] is None and info["message_count"] == 4


async def test_a_restarted_thread_forgets_its_settings(bus: Bus) -> None:
    """Saving to a deleted thread starts it afresh: its old settings go with its old messages."""
    thread_id = _thread_id()
    await bus.call(
        "save_thread", {"thread_id": thread_id, "messages": _turns("a"), "max_messages": 1, "ttl_seconds": 60}
    )
    await bus.call("delete_thread", {"thread_id": thread_id})
    await bus.call("save_thread", {"thread_id": thread_id, "messages": _turns("b", "c")})
    info = output(await bus.call("get_thread_info", {"thread_id": thread_id}))
    assert (info["max_messages"], info["ttl_seconds"], info["expires_at"], info["message_count"]) == (
        None,
        None,
        None,
        2,
    )


async def test_thread_info_shows_owner_settings_metadata_and_current_system_prompt(
    worker: Worker, tmp_path: Path
) -> None:
    """get_thread_info: owner, visibility, version, live message count, settings, times, metadata, and the content
    of the newest live system message (None without one)."""
    thread_id, bare = _thread_id(), _thread_id()
    async with StorageClient(**client_settings(worker, tmp_path / "buffer", agent_id="alice")) as storage:
        sent = [
            {"role": "system", "content": "You are a credit analyst."},
            {"role": "user", "content": "Assess ООО «Ромашка»."},  # noqa: RUF001 - a Cyrillic company name
            {"role": "system", "content": {"instructions": "Answer in Russian.", "tools": ["inn_lookup"]}},
            {"role": "assistant", "content": "Хорошо."},
        ]
        saved = _saved(
            await storage.save_thread(
                thread_id, sent, metadata={"inn": "7701234567"}, max_messages=10, ttl_seconds=3600
            )
        )
        info = await storage.get_thread_info(thread_id)
        assert info.thread_id == thread_id and info.owner == "alice" and info.visibility == "private"
        assert (info.version, info.message_count) == (saved.version, 4)
        assert (info.max_messages, info.ttl_seconds) == (10, 3600)
        assert info.metadata == {"inn": "7701234567"}
        assert info.created_at <= info.updated_at and info.deleted_at is None
        assert info.system_prompt == {"instructions": "Answer in Russian.", "tools": ["inn_lookup"]}
        assert info.system_prompt_id == saved.message_ids[2] and info.system_prompt_omitted is False

        _saved(await storage.save_thread(thread_id, [{"role": "system", "content": "New rules."}], clear=True))
        info = await storage.get_thread_info(thread_id)
        assert info.system_prompt == "New rules." and info.message_count == 1

        _saved(await storage.save_thread(bare, _turns("no prompt here")))
        info = await storage.get_thread_info(bare)
        assert (info.system_prompt, info.system_prompt_id, info.system_prompt_omitted) == (None, None, False)

        await storage.delete_thread(bare)
        with pytest.raises(NotFound):
            await storage.get_thread_info(bare)
        assert (await storage.get_thread_info(bare, include_deleted=True)).deleted_at is not None
        with pytest.raises(InvalidArgument):  # refused by the client before anything is sent
            await storage.save_thread(thread_id, _turns("x"), max_messages=0)


async def test_a_system_prompt_too_large_for_a_reply_is_omitted(workers: Workers) -> None:
    """With a 16 KiB reply cap, a 40 KB system prompt is left out of get_thread_info (flagged, its id given):
    the reply stays within the cap instead of failing."""
    _, bus = await workers.start(max_reply_bytes=16 * 1024)
    thread_id = _thread_id()
    huge = "x" * 40_000
    saved = output(
        await bus.call(
            "save_thread",
            {"thread_id": thread_id, "messages": [{"role": "system", "content": huge}], "metadata": {"k": "v"}},
        )
    )
    info = output(await bus.call("get_thread_info", {"thread_id": thread_id}))
    assert info["system_prompt"] is None and info["system_prompt_omitted"] is True
    assert info["system_prompt_id"] == saved["message_ids"][0] and info["metadata"] == {"k": "v"}


async def test_others_learn_nothing_from_thread_info(bus: Bus) -> None:
    """Mallory's get_thread_info of Alice's private thread is word for word the unknown-thread answer; a colleague
    of Alice's trace reads a trace thread's info, Mallory does not."""
    private, shared = _thread_id(), _thread_id()
    secret = [{"role": "system", "content": "the merger plan"}]
    output(await bus.call("save_thread", {"thread_id": private, "messages": secret}, context=ALICE))
    output(
        await bus.call("save_thread", {"thread_id": shared, "messages": secret, "visibility": "trace"}, context=ALICE)
    )

    refused = error(await bus.call("get_thread_info", {"thread_id": private, "include_deleted": True}, context=MALLORY))
    unknown = error(await bus.call("get_thread_info", {"thread_id": "never-" + private}, context=MALLORY))
    assert refused["code"] == unknown["code"] == "NOT_FOUND"
    assert refused["details"] == {"thread_id": private}
    assert refused["message"] == unknown["message"].replace("never-" + private, private)
    assert "merger" not in str(refused)

    assert output(await bus.call("get_thread_info", {"thread_id": shared}, context=COLLEAGUE))["owner"] == "alice"
    assert error(await bus.call("get_thread_info", {"thread_id": shared}, context=MALLORY))["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("action", "params", "field"),
    [
        ("get_thread_info", {"thread_id": ""}, "thread_id"),
        ("get_thread_info", {"thread_id": "t" * 256}, "thread_id"),
        ("get_thread_info", {"thread_id": "t", "limit": 3}, "limit"),
        ("save_thread", {"thread_id": "t", "max_messages": 0}, "max_messages"),
        ("save_thread", {"thread_id": "t", "max_messages": "three"}, "max_messages"),
        ("save_thread", {"thread_id": "t", "ttl_seconds": 10**12}, "ttl_seconds"),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(
    bus: Bus, action: str, params: dict[str, Any], field: str
) -> None:
    """Malformed ids, unknown params and out-of-range settings are INVALID_ARGUMENT naming the field."""
    refused = error(await bus.call(action, params, context=ALICE))
    assert refused["code"] == "INVALID_ARGUMENT" and refused["retryable"] is False
    assert field in str(refused["details"])
