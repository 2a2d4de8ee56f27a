"""save_thread through the wire: incremental saves, order, optimistic concurrency, trimming, TTL, metadata."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from contracts import make_command
from tests.support.bus import Bus, error, output

COMPANY = "ООО «Ромашка»"  # noqa: RUF001 - a Cyrillic company name, as agents store them


def _thread_id() -> str:
    return f"chat-{uuid.uuid4().hex[:12]}"


async def _save(bus: Bus, thread_id: str, messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
    return output(await bus.call("save_thread", {"thread_id": thread_id, "messages": messages, **params}))


async def _get(bus: Bus, thread_id: str, **params: Any) -> dict[str, Any]:
    return output(await bus.call("get_thread", {"thread_id": thread_id, **params}))


async def test_messages_of_one_call_keep_request_order_and_get_ids(bus: Bus) -> None:
    """Messages saved together come back in the order sent, with the ids the save returned, even at one timestamp."""
    thread_id = _thread_id()
    sent = [{"role": "system", "content": "you are terse"}] + [
        {"role": "user" if i % 2 else "assistant", "content": f"message {i}"} for i in range(1, 30)
    ]
    saved = await _save(bus, thread_id, sent)
    assert saved["version"] == 1 and saved["inserted"] == 30 and saved["updated"] == 0
    got = await _get(bus, thread_id)
    assert [m["content"] for m in got["messages"]] == [m["content"] for m in sent]
    assert [m["id"] for m in got["messages"]] == saved["message_ids"]
    assert got["thread"]["message_count"] == 30 and got["thread"]["version"] == 1
    assert len({m["created_at"] for m in got["messages"]}) == 1, "one call shares one timestamp"


async def test_resending_history_inserts_only_new_and_updates_only_changed(bus: Bus) -> None:
    """An agent that re-sends its whole history adds just the new turn; an edited message is rewritten in place."""
    thread_id = _thread_id()
    first = await _save(bus, thread_id, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    ids = first["message_ids"]
    history = [
        {"id": ids[0], "role": "user", "content": "hi"},
        {"id": ids[1], "role": "assistant", "content": "hello"},
        {"role": "user", "content": "what is 2+2?"},
    ]
    second = await _save(bus, thread_id, history)
    assert (second["inserted"], second["updated"], second["trimmed"]) == (1, 0, 0)
    assert second["message_ids"][:2] == ids and second["version"] == 2

    history[1]["content"] = {"text": "hello!", "tool_calls": []}
    history[2]["id"] = second["message_ids"][2]
    third = await _save(bus, thread_id, history)
    assert (third["inserted"], third["updated"]) == (0, 1)
    got = await _get(bus, thread_id)
    assert [m["content"] for m in got["messages"]] == ["hi", {"text": "hello!", "tool_calls": []}, "what is 2+2?"]
    assert got["thread"]["message_count"] == 3


async def test_unchanged_save_does_not_bump_the_version(bus: Bus) -> None:
    """Saving exactly what is stored changes nothing: same version, nothing inserted or updated."""
    thread_id = _thread_id()
    first = await _save(bus, thread_id, [{"role": "user", "content": "hi", "metadata": {"lang": "en"}}])
    again = await _save(
        bus, thread_id, [{"id": first["message_ids"][0], "role": "user", "content": "hi", "metadata": {"lang": "en"}}]
    )
    assert again["version"] == first["version"] and (again["inserted"], again["updated"]) == (0, 0)


async def test_expected_version_mismatch_is_aborted_and_retryable(bus: Bus) -> None:
    """A writer holding a stale version is told ABORTED (retryable) and its messages are not saved."""
    thread_id = _thread_id()
    created = await _save(bus, thread_id, [{"role": "user", "content": "a"}], expected_version=0)
    assert created["version"] == 1
    await _save(bus, thread_id, [{"role": "user", "content": "b"}], expected_version=1)
    stale = error(
        await bus.call(
            "save_thread",
            {"thread_id": thread_id, "messages": [{"role": "user", "content": "c"}], "expected_version": 1},
        )
    )
    assert stale["code"] == "ABORTED" and stale["retryable"] is True
    assert stale["details"]["version"] == 2 and stale["details"]["expected_version"] == 1
    recreate = error(await bus.call("save_thread", {"thread_id": thread_id, "messages": [], "expected_version": 0}))
    assert recreate["code"] == "ABORTED"
    got = await _get(bus, thread_id)
    assert [m["content"] for m in got["messages"]] == ["a", "b"]


async def test_max_messages_trims_oldest_non_system_softly(bus: Bus) -> None:
    """With max_messages the oldest user/assistant turns are hidden, system prompts stay, include_deleted shows all."""
    thread_id = _thread_id()
    sent = [{"role": "system", "content": "rules"}] + [{"role": "user", "content": f"turn {i}"} for i in range(6)]
    saved = await _save(bus, thread_id, sent, max_messages=4)
    assert saved["trimmed"] == 2 and len(saved["message_ids"]) == 7
    got = await _get(bus, thread_id)
    assert [m["content"] for m in got["messages"]] == ["rules", "turn 2", "turn 3", "turn 4", "turn 5"]
    assert got["thread"]["message_count"] == 5

    more = await _save(bus, thread_id, [{"role": "assistant", "content": "reply"}], max_messages=4)
    assert more["trimmed"] == 1
    everything = await _get(bus, thread_id, include_deleted=True)
    assert len(everything["messages"]) == 8
    hidden = [m["content"] for m in everything["messages"] if m["deleted_at"] is not None]
    assert hidden == ["turn 0", "turn 1", "turn 2"]


async def test_resending_a_trimmed_message_keeps_it_trimmed(bus: Bus) -> None:
    """An agent re-sending its full history under max_messages does not bring trimmed turns back."""
    thread_id = _thread_id()
    sent = [{"role": "user", "content": f"t{i}"} for i in range(5)]
    saved = await _save(bus, thread_id, sent, max_messages=3)
    history = [{"id": i, **m} for i, m in zip(saved["message_ids"], sent, strict=True)]
    again = await _save(bus, thread_id, history, max_messages=3)
    assert (again["inserted"], again["updated"], again["trimmed"]) == (0, 0, 0)
    assert [m["content"] for m in (await _get(bus, thread_id))["messages"]] == ["t2", "t3", "t4"]


async def test_clear_restarts_the_dialog_with_a_new_system_prompt(bus: Bus) -> None:
    """clear hides the previous messages in the same save that adds the new prompt."""
    thread_id = _thread_id()
    await _save(bus, thread_id, [{"role": "system", "content": "old"}, {"role": "user", "content": "q"}])
    cleared = await _save(bus, thread_id, [{"role": "system", "content": "new prompt"}], clear=True)
    assert cleared["inserted"] == 1
    got = await _get(bus, thread_id)
    assert [m["content"] for m in got["messages"]] == ["new prompt"]
    assert got["thread"]["message_count"] == 1
    assert len((await _get(bus, thread_id, include_deleted=True))["messages"]) == 3


async def test_ttl_sets_expiry_and_threads_without_ttl_never_expire(bus: Bus) -> None:
    """ttl_seconds gives the thread an expires_at that far ahead; a thread saved without one has none; the TTL is
    remembered, so a later save without it moves the expiry again (test_thread_settings.py has the rest)."""
    with_ttl, without = _thread_id(), _thread_id()
    before = datetime.now().astimezone()
    await _save(bus, with_ttl, [{"role": "user", "content": "x"}], ttl_seconds=3600)
    await _save(bus, without, [{"role": "user", "content": "x"}])
    expires = datetime.fromisoformat((await _get(bus, with_ttl))["thread"]["expires_at"])
    assert before + timedelta(seconds=3590) < expires < before + timedelta(seconds=3700)
    assert (await _get(bus, without))["thread"]["expires_at"] is None
    await _save(bus, with_ttl, [{"role": "user", "content": "y"}])
    assert datetime.fromisoformat((await _get(bus, with_ttl))["thread"]["expires_at"]) >= expires


async def test_metadata_is_merged_and_null_removes_a_key(bus: Bus) -> None:
    """Metadata sent with a save is merged into the thread's; a key set to null disappears."""
    thread_id = _thread_id()
    await _save(bus, thread_id, [], metadata={"company": COMPANY, "inn": "7701234567", "stage": "intro"})
    await _save(bus, thread_id, [], metadata={"stage": "offer", "inn": None, "score": 0.5})
    thread = (await _get(bus, thread_id))["thread"]
    assert thread["metadata"] == {"company": COMPANY, "stage": "offer", "score": 0.5}
    assert thread["version"] == 2


async def test_message_id_of_another_thread_is_refused(bus: Bus) -> None:
    """A message id already used in another thread is ALREADY_EXISTS naming the field, and nothing is saved."""
    first, second = _thread_id(), _thread_id()
    saved = await _save(bus, first, [{"role": "user", "content": "mine"}])
    refused = error(
        await bus.call(
            "save_thread",
            {
                "thread_id": second,
                "messages": [
                    {"role": "user", "content": "ok"},
                    {"id": saved["message_ids"][0], "role": "user", "content": "x"},
                ],
            },
        )
    )
    assert refused["code"] == "ALREADY_EXISTS" and refused["details"]["field"] == "messages[1].id"
    assert error(await bus.call("get_thread", {"thread_id": second}))["code"] == "NOT_FOUND"


async def test_duplicate_ids_and_bad_roles_are_invalid_arguments(bus: Bus) -> None:
    """A request naming one message id twice, or an unknown role, is INVALID_ARGUMENT naming the field."""
    same = str(uuid.uuid4())
    dup = error(
        await bus.call(
            "save_thread",
            {
                "thread_id": _thread_id(),
                "messages": [
                    {"id": same, "role": "user", "content": "a"},
                    {"id": same, "role": "user", "content": "b"},
                ],
            },
        )
    )
    assert dup["code"] == "INVALID_ARGUMENT" and dup["details"]["field"] == "messages[1].id"
    bad = error(
        await bus.call("save_thread", {"thread_id": _thread_id(), "messages": [{"role": "robot", "content": "a"}]})
    )
    assert bad["code"] == "INVALID_ARGUMENT" and "messages.0.role" in str(bad["details"])


async def test_caller_supplied_ids_and_times_are_kept(bus: Bus) -> None:
    """A message sent with its own id and created_at is stored with exactly those."""
    thread_id, message_id = _thread_id(), str(uuid.uuid4())
    at = "2025-03-01T10:00:00+03:00"
    saved = await _save(
        bus, thread_id, [{"id": message_id, "role": "tool", "content": [{"type": "text"}], "created_at": at}]
    )
    assert saved["message_ids"] == [message_id]
    stored = (await _get(bus, thread_id))["messages"][0]
    assert stored["id"] == message_id and datetime.fromisoformat(stored["created_at"]) == datetime.fromisoformat(at)


async def test_a_replayed_save_adds_its_messages_once(bus: Bus) -> None:
    """The same save_thread envelope delivered twice (a client replaying its buffer) appends its messages once."""
    thread_id = _thread_id()
    command = make_command(
        "save_thread",
        {"thread_id": thread_id, "messages": [{"role": "user", "content": "only once"}]},
        source="agent-test",
    )
    first = output(await bus.send(command.to_json_bytes(), command.id))
    again = output(await bus.send(command.to_json_bytes(), f"{command.id}-again"))
    assert again == first
    got = await _get(bus, thread_id)
    assert [m["content"] for m in got["messages"]] == ["only once"] and got["thread"]["version"] == 1
