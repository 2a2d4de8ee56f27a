"""restore_thread: a deleted thread, or its trimmed messages, come back within STORAGE_PURGE_AFTER, for the
owner or an admin, with a new version. Through the client library and over raw AMQP, on both databases.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from buffer import FailedPrecondition, InvalidArgument, NotFound, StorageClient
from contracts import SaveThreadOutput
from service.settings import Settings
from service.transport.worker import Worker
from tests.support.broker import ADMIN_AMQP
from tests.support.bus import Bus, error, output
from tests.support.client import client_settings
from tests.support.maintenance import ago, cleanup, execute, messages, threads

ALICE = {"requester_id": "alice", "requester_trace_id": "trace-alice"}
MALLORY = {"requester_id": "mallory", "requester_trace_id": "trace-mallory"}


def _thread_id() -> str:
    return f"restore-{uuid.uuid4().hex[:12]}"


def _turns(*contents: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": c} for c in contents]


async def _contents(bus: Bus, thread_id: str, context: dict[str, Any] = ALICE, **params: Any) -> list[Any]:
    got = output(await bus.call("get_thread", {"thread_id": thread_id, **params}, context=context))
    return [m["content"] for m in got["messages"]]


async def test_the_owner_restores_a_deleted_thread_with_the_client(worker: Worker, bus: Bus, tmp_path: Path) -> None:
    """Deleted, then restored: its messages read again in order, with a version above the deletion's, and a
    writer holding the old version is refused."""
    thread_id = _thread_id()
    async with StorageClient(**client_settings(worker, tmp_path / "buffer", agent_id="alice")) as storage:
        saved = await storage.save_thread(thread_id, [{"role": "system", "content": "rules"}, *_turns("q1", "q2")])
        assert isinstance(saved, SaveThreadOutput)
        await storage.delete_thread(thread_id)
        deleted = await storage.get_thread_info(thread_id, include_deleted=True)
        with pytest.raises(NotFound):
            await storage.get_thread(thread_id)

        restored = await storage.restore_thread(thread_id)
        assert restored.version == deleted.version + 1 and restored.message_count == 3
        assert restored.restored_messages == 0
        got = await storage.get_thread(thread_id)
        assert [m.content for m in got.messages] == ["rules", "q1", "q2"]
        assert got.thread.deleted_at is None and got.thread.version == restored.version
        with pytest.raises(FailedPrecondition) as again:  # not deleted any more
            await storage.restore_thread(thread_id)
        assert again.value.details["reason"] == "not_deleted"
        with pytest.raises(InvalidArgument):  # refused by the client before anything is sent
            await storage.restore_thread(thread_id, messages="all")  # type: ignore[arg-type]

    stale = {"thread_id": thread_id, "messages": _turns("late"), "expected_version": saved.version}  # before both
    assert error(await bus.call("save_thread", stale, context=ALICE))["code"] == "ABORTED"


async def test_trimmed_messages_come_back_in_their_places_over_raw_amqp(bus: Bus) -> None:
    """messages: "trimmed" makes the trimmed turns live again in order and bumps the version; the thread keeps its
    max_messages, so the next save trims again; a second restore with nothing trimmed is FAILED_PRECONDITION."""
    thread_id = _thread_id()
    sent = [{"role": "system", "content": "rules"}, *_turns("t0", "t1", "t2", "t3", "t4")]
    saved = output(
        await bus.call("save_thread", {"thread_id": thread_id, "messages": sent, "max_messages": 2}, context=ALICE)
    )
    assert saved["trimmed"] == 3
    assert await _contents(bus, thread_id) == ["rules", "t3", "t4"]

    restored = output(await bus.call("restore_thread", {"thread_id": thread_id, "messages": "trimmed"}, context=ALICE))
    assert restored == {
        "thread_id": thread_id,
        "version": saved["version"] + 1,
        "message_count": 6,
        "restored_messages": 3,
    }
    assert await _contents(bus, thread_id) == ["rules", "t0", "t1", "t2", "t3", "t4"]
    info = output(await bus.call("get_thread_info", {"thread_id": thread_id}, context=ALICE))
    assert (info["version"], info["message_count"], info["max_messages"]) == (restored["version"], 6, 2)

    nothing = error(await bus.call("restore_thread", {"thread_id": thread_id, "messages": "trimmed"}, context=ALICE))
    assert nothing["code"] == "FAILED_PRECONDITION" and nothing["details"]["reason"] == "nothing_trimmed"

    later = output(
        await bus.call("save_thread", {"thread_id": thread_id, "messages": _turns("t5")}, context=ALICE)
    )  # the remembered max_messages applies again
    assert later["trimmed"] == 4
    assert await _contents(bus, thread_id) == ["rules", "t4", "t5"]


async def test_a_clear_ends_what_could_be_restored(bus: Bus) -> None:
    """Messages trimmed before a clear belong to the dialog the clear ended: they are not restorable."""
    thread_id = _thread_id()
    await bus.call(
        "save_thread", {"thread_id": thread_id, "messages": _turns("a", "b", "c"), "max_messages": 1}, context=ALICE
    )
    await bus.call(
        "save_thread",
        {"thread_id": thread_id, "messages": [{"role": "system", "content": "new"}], "clear": True},
        context=ALICE,
    )
    refused = error(await bus.call("restore_thread", {"thread_id": thread_id, "messages": "trimmed"}, context=ALICE))
    assert refused["code"] == "FAILED_PRECONDITION" and refused["details"]["reason"] == "nothing_trimmed"
    assert await _contents(bus, thread_id) == ["new"]


async def test_a_deleted_thread_restores_the_thread_before_its_messages(bus: Bus) -> None:
    """Trimmed messages of a deleted thread wait for the thread: FAILED_PRECONDITION until it is restored."""
    thread_id = _thread_id()
    await bus.call(
        "save_thread", {"thread_id": thread_id, "messages": _turns("a", "b"), "max_messages": 1}, context=ALICE
    )
    await bus.call("delete_thread", {"thread_id": thread_id}, context=ALICE)
    first = error(await bus.call("restore_thread", {"thread_id": thread_id, "messages": "trimmed"}, context=ALICE))
    assert first["code"] == "FAILED_PRECONDITION" and first["details"]["reason"] == "deleted"
    output(await bus.call("restore_thread", {"thread_id": thread_id}, context=ALICE))
    output(await bus.call("restore_thread", {"thread_id": thread_id, "messages": "trimmed"}, context=ALICE))
    assert await _contents(bus, thread_id) == ["a", "b"]


async def test_after_the_purge_window_nothing_comes_back(bus: Bus, settings: Settings) -> None:
    """A deletion or a trim older than STORAGE_PURGE_AFTER is NOT_FOUND (reason purge_window_passed), before
    cleanup runs; once cleanup purged them, the thread is unknown and its trimmed messages gone for good."""
    deleted, trimmed = _thread_id(), _thread_id()
    await bus.call("save_thread", {"thread_id": deleted, "messages": _turns("x")}, context=ALICE)
    await bus.call("delete_thread", {"thread_id": deleted}, context=ALICE)
    await bus.call(
        "save_thread", {"thread_id": trimmed, "messages": _turns("a", "b", "c"), "max_messages": 1}, context=ALICE
    )
    old = ago(seconds=settings.purge_after_s + 60)
    await execute(
        settings,
        update(threads).where(threads.c.id == deleted).values(deleted_at=old),
        update(messages)
        .where(messages.c.thread_id == trimmed, messages.c.trimmed_at.is_not(None))
        .values(deleted_at=old),
    )

    late = error(await bus.call("restore_thread", {"thread_id": deleted}, context=ALICE))
    assert late["code"] == "NOT_FOUND" and late["details"]["reason"] == "purge_window_passed"
    late = error(await bus.call("restore_thread", {"thread_id": trimmed, "messages": "trimmed"}, context=ALICE))
    assert late["code"] == "NOT_FOUND" and late["details"]["reason"] == "purge_window_passed"

    assert (await cleanup(bus, "purge_deleted"))["purge_deleted"] == 3  # the thread and the two trimmed messages
    gone = error(await bus.call("restore_thread", {"thread_id": deleted}, context=ALICE))
    assert gone["code"] == "NOT_FOUND" and gone["details"] == {"thread_id": deleted}
    gone = error(await bus.call("restore_thread", {"thread_id": trimmed, "messages": "trimmed"}, context=ALICE))
    assert gone["code"] == "FAILED_PRECONDITION" and gone["details"]["reason"] == "nothing_trimmed"
    assert await _contents(bus, trimmed, include_deleted=True) == ["c"]


async def test_an_expired_thread_is_not_restored(bus: Bus, settings: Settings) -> None:
    """A thread past its TTL is NOT_FOUND for restore as for every read (cleanup removes it)."""
    thread_id = _thread_id()
    await bus.call("save_thread", {"thread_id": thread_id, "messages": _turns("x"), "ttl_seconds": 60}, context=ALICE)
    await bus.call("delete_thread", {"thread_id": thread_id}, context=ALICE)
    await execute(settings, update(threads).where(threads.c.id == thread_id).values(expires_at=ago(seconds=1)))
    expired = error(await bus.call("restore_thread", {"thread_id": thread_id}, context=ALICE))
    assert expired["code"] == "NOT_FOUND" and "expired" in expired["message"]


async def test_others_cannot_restore_or_see_anything_and_an_admin_can(bus: Bus) -> None:
    """Mallory's restore of Alice's private thread is the unknown-thread answer word for word and changes nothing;
    of a public one it is PERMISSION_DENIED without Alice's name; an admin restores either."""
    private, public = _thread_id(), _thread_id()
    for thread_id, visibility in ((private, "private"), (public, "public")):
        params = {"thread_id": thread_id, "messages": _turns("a", "b"), "max_messages": 1, "visibility": visibility}
        output(await bus.call("save_thread", params, context=ALICE))
        output(await bus.call("delete_thread", {"thread_id": thread_id}, context=ALICE))

    unknown = error(await bus.call("restore_thread", {"thread_id": "never-" + private}, context=MALLORY))
    for params in ({"thread_id": private}, {"thread_id": private, "messages": "trimmed"}):
        refused = error(await bus.call("restore_thread", params, context=MALLORY))
        assert refused["code"] == unknown["code"] == "NOT_FOUND"
        assert refused["details"] == {"thread_id": private}
        assert refused["message"] == unknown["message"].replace("never-" + private, private)
    denied = error(await bus.call("restore_thread", {"thread_id": public}, context=MALLORY))
    assert denied["code"] == "PERMISSION_DENIED" and "alice" not in str(denied)
    for thread_id in (private, public):  # still deleted
        assert error(await bus.call("get_thread", {"thread_id": thread_id}, context=ALICE))["code"] == "NOT_FOUND"

    admin = {"requester_id": "guest"}
    for thread_id in (private, public):
        output(await bus.call("restore_thread", {"thread_id": thread_id}, context=admin, amqp=ADMIN_AMQP))
        output(
            await bus.call(
                "restore_thread", {"thread_id": thread_id, "messages": "trimmed"}, context=admin, amqp=ADMIN_AMQP
            )
        )
        assert await _contents(bus, thread_id) == ["a", "b"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"thread_id": "t", "messages": "all"}, "messages"),
        ({"thread_id": "t", "messages": True}, "messages"),
        ({"thread_id": ""}, "thread_id"),
        ({"thread_id": "t" * 256}, "thread_id"),
        ({}, "thread_id"),
        ({"thread_id": "t", "version": 3}, "version"),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(bus: Bus, params: dict[str, Any], field: str) -> None:
    """A messages value other than "trimmed", a malformed id or an unknown param is INVALID_ARGUMENT naming it."""
    refused = error(await bus.call("restore_thread", params, context=ALICE))
    assert refused["code"] == "INVALID_ARGUMENT" and refused["retryable"] is False
    assert field in str(refused["details"])
