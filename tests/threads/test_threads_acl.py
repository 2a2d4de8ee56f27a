"""Class 4: threads belong to the requester that first saved them.

Mallory, with a raw AMQP client and a body-claimed identity, tries to read, find, clear, delete and take over
Alice's threads. She may read only what the artifact read rule lets her read, change nothing of Alice's, and
learn nothing about a thread she may not read, not even that it exists beyond what any save to its id shows.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from service.store.engine.db import create_engine
from tests.support.bus import Bus, error, output
from tests.support.workers import Workers

pytestmark = pytest.mark.security

ALICE = {"requester_id": "alice", "requester_trace_id": "trace-alice"}
ALICE_COLLEAGUE = {"requester_id": "bob", "requester_trace_id": "trace-alice"}
MALLORY = {"requester_id": "mallory", "requester_trace_id": "trace-mallory"}
ADMIN_AMQP = {"user_id": "guest"}
"""RabbitMQ checks ``user_id`` against the connection's user: the only identity that can be an admin."""


def _thread_id() -> str:
    return f"secret-{uuid.uuid4().hex[:12]}"


async def _call(bus: Bus, context: dict[str, Any], action: str, **params: Any) -> dict[str, Any]:
    return await bus.call(action, params, context=context)


async def _save(bus: Bus, context: dict[str, Any], thread_id: str, content: str, **params: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": content}]
    return await _call(bus, context, "save_thread", thread_id=thread_id, messages=messages, **params)


async def _contents(bus: Bus, context: dict[str, Any], thread_id: str, **params: Any) -> list[str]:
    got = output(await _call(bus, context, "get_thread", thread_id=thread_id, **params))
    return [m["content"] for m in got["messages"]]


async def _listed(bus: Bus, context: dict[str, Any], **metadata: str) -> set[str]:
    got = output(await _call(bus, context, "list_threads", metadata=metadata))
    return {t["thread_id"] for t in got["threads"]}


async def test_a_private_thread_is_invisible_to_others(bus: Bus) -> None:
    """Mallory gets the unknown-thread answer for Alice's private thread and never finds it by its metadata."""
    thread_id, project = _thread_id(), uuid.uuid4().hex
    output(await _save(bus, ALICE, thread_id, "our merger plan", metadata={"project": project}))

    refused = error(await _call(bus, MALLORY, "get_thread", thread_id=thread_id, include_deleted=True))
    unknown = error(await _call(bus, MALLORY, "get_thread", thread_id="never-saved-" + thread_id))
    assert refused["code"] == unknown["code"] == "NOT_FOUND"
    assert refused["details"] == {"thread_id": thread_id}
    assert refused["message"] == unknown["message"].replace("never-saved-" + thread_id, thread_id)
    assert await _listed(bus, MALLORY, project=project) == set()
    assert await _listed(bus, ALICE_COLLEAGUE, project=project) == set()  # private: not even the trace

    assert await _contents(bus, ALICE, thread_id) == ["our merger plan"]
    assert await _listed(bus, ALICE, project=project) == {thread_id}


async def test_nobody_but_the_owner_clears_overwrites_or_deletes(bus: Bus) -> None:
    """Mallory's clear, save and delete of Alice's public and private threads change nothing, and never name her."""
    public, private = _thread_id(), _thread_id()
    output(await _save(bus, ALICE, public, "public notes", visibility="public"))
    output(await _save(bus, ALICE, private, "private notes"))
    assert await _contents(bus, MALLORY, public) == ["public notes"]  # readable: public

    for thread_id in (public, private):
        cleared = error(await _save(bus, MALLORY, thread_id, "pwned", clear=True, metadata={"owner": "mallory"}))
        assert cleared["code"] == "PERMISSION_DENIED" and "alice" not in str(cleared)
    assert error(await _call(bus, MALLORY, "delete_thread", thread_id=public))["code"] == "PERMISSION_DENIED"
    # A thread she cannot read answers as an unknown one would: nothing deleted, nothing revealed.
    assert output(await _call(bus, MALLORY, "delete_thread", thread_id=private)) == {
        "thread_id": private,
        "deleted": False,
    }
    private_refusal = error(await _save(bus, MALLORY, private, "again"))
    assert "private" not in str(private_refusal["details"]) and "visibility" not in private_refusal["details"]

    for thread_id, content in ((public, "public notes"), (private, "private notes")):
        got = output(await _call(bus, ALICE, "get_thread", thread_id=thread_id))
        assert [m["content"] for m in got["messages"]] == [content]
        assert got["thread"]["version"] == 1 and got["thread"]["metadata"] == {} and got["thread"]["owner"] == "alice"


async def test_a_deleted_thread_cannot_be_taken_over_by_saving_to_its_id(bus: Bus) -> None:
    """After Alice deletes her thread, Mallory's save to its id is refused; Alice restarts it, still hers alone."""
    thread_id = _thread_id()
    output(await _save(bus, ALICE, thread_id, "before the restart"))
    assert output(await _call(bus, ALICE, "delete_thread", thread_id=thread_id))["deleted"] is True

    taken = error(await _save(bus, MALLORY, thread_id, "mine now", visibility="public", expected_version=0))
    assert taken["code"] == "PERMISSION_DENIED" and "alice" not in str(taken)
    assert error(await _call(bus, MALLORY, "get_thread", thread_id=thread_id))["code"] == "NOT_FOUND"
    assert await _contents(bus, ALICE, thread_id, include_deleted=True) == ["before the restart"]

    output(await _save(bus, ALICE, thread_id, "after the restart", expected_version=0))
    assert await _contents(bus, ALICE, thread_id) == ["after the restart"]
    assert error(await _call(bus, MALLORY, "get_thread", thread_id=thread_id))["code"] == "NOT_FOUND"


async def test_an_expired_thread_stays_its_owners(bus: Bus) -> None:
    """A thread whose TTL ran out is not free for the taking: Mallory's save to its id is refused."""
    thread_id = _thread_id()
    output(await _save(bus, ALICE, thread_id, "short-lived", ttl_seconds=1))
    await asyncio.sleep(1.2)
    assert error(await _save(bus, MALLORY, thread_id, "squatting"))["code"] == "PERMISSION_DENIED"
    output(await _save(bus, ALICE, thread_id, "renewed"))
    assert await _contents(bus, ALICE, thread_id) == ["renewed"]


async def test_a_trace_thread_is_read_by_the_trace_and_written_by_its_owner(bus: Bus) -> None:
    """Bob, in Alice's trace, reads and finds her ``trace`` thread but cannot change it; Mallory cannot see it."""
    thread_id, project = _thread_id(), uuid.uuid4().hex
    output(await _save(bus, ALICE, thread_id, "shared in the trace", visibility="trace", metadata={"p": project}))

    assert await _contents(bus, ALICE_COLLEAGUE, thread_id) == ["shared in the trace"]
    assert await _listed(bus, ALICE_COLLEAGUE, p=project) == {thread_id}
    refused = error(await _save(bus, ALICE_COLLEAGUE, thread_id, "bob was here"))
    assert refused["code"] == "PERMISSION_DENIED" and refused["details"]["visibility"] == "trace"
    assert "alice" not in str(refused)
    assert error(await _call(bus, MALLORY, "get_thread", thread_id=thread_id))["code"] == "NOT_FOUND"
    assert await _listed(bus, MALLORY, p=project) == set()

    # Only the owner changes the visibility (she may: a save of hers with another one).
    output(await _save(bus, ALICE, thread_id, "now for everyone", visibility="public"))
    assert await _listed(bus, MALLORY, p=project) == {thread_id}


async def test_an_anonymous_requester_cannot_create_a_thread(workers: Workers) -> None:
    """With body identity off, a command without a broker user_id is anonymous: it may not create a thread."""
    _, agent = await workers.start(trust_body_identity=False)
    thread_id = _thread_id()
    refused = error(await _save(agent, ALICE, thread_id, "who am I"))
    assert refused["code"] == "UNAUTHENTICATED" and refused["details"]["reason"] == "anonymous_requester"
    unknown = error(await agent.call("get_thread", {"thread_id": thread_id}, amqp=ADMIN_AMQP))
    assert unknown["code"] == "NOT_FOUND"


async def test_an_admin_reads_lists_and_deletes_any_thread(workers: Workers) -> None:
    """The broker-validated admin sees and deletes Alice's private thread; a body-claimed 'guest' cannot."""
    _, agent = await workers.start(admins=frozenset({"guest"}))
    thread_id, project = _thread_id(), uuid.uuid4().hex
    output(await _save(agent, ALICE, thread_id, "private", metadata={"p": project}))

    impostor = {"requester_id": "guest"}
    assert error(await _call(agent, impostor, "get_thread", thread_id=thread_id))["code"] == "NOT_FOUND"
    admin_read = output(await agent.call("get_thread", {"thread_id": thread_id}, amqp=ADMIN_AMQP))
    assert [m["content"] for m in admin_read["messages"]] == ["private"]
    listed = output(await agent.call("list_threads", {"metadata": {"p": project}}, amqp=ADMIN_AMQP))
    assert [t["thread_id"] for t in listed["threads"]] == [thread_id]
    deleted = output(await agent.call("delete_thread", {"thread_id": thread_id}, amqp=ADMIN_AMQP))
    assert deleted["deleted"] is True
    assert error(await _call(agent, ALICE, "get_thread", thread_id=thread_id))["code"] == "NOT_FOUND"


async def test_legacy_threads_without_owner_are_public_and_written_by_admins_only(
    workers: Workers, database_url: str
) -> None:
    """A thread saved before owners existed (owner NULL, public) is read by all, changed only by an admin."""
    _, agent = await workers.start(admins=frozenset({"guest"}))
    thread_id, project = _thread_id(), uuid.uuid4().hex
    output(await _save(agent, ALICE, thread_id, "from the old days", metadata={"p": project}))
    await _make_legacy(database_url, thread_id)

    assert await _contents(agent, MALLORY, thread_id) == ["from the old days"]
    assert await _listed(agent, MALLORY, p=project) == {thread_id}
    for context in (MALLORY, ALICE):  # not even its (unrecorded) creator may write it any more
        refused = error(await _save(agent, context, thread_id, "rewrite", clear=True))
        assert refused["code"] == "PERMISSION_DENIED"
        assert error(await _call(agent, context, "delete_thread", thread_id=thread_id))["code"] == "PERMISSION_DENIED"
    assert await _contents(agent, MALLORY, thread_id) == ["from the old days"]

    messages = [{"role": "system", "content": "curated by ops"}]
    params = {"thread_id": thread_id, "messages": messages, "clear": True}
    output(await agent.call("save_thread", params, amqp=ADMIN_AMQP))
    assert await _contents(agent, MALLORY, thread_id) == ["curated by ops"]
    output(await agent.call("delete_thread", {"thread_id": thread_id}, amqp=ADMIN_AMQP))


async def _make_legacy(database_url: str, thread_id: str) -> None:
    """Put the row in the state migration 0007 leaves a thread saved before it: no owner, no trace, public."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE threads SET owner = NULL, trace_id = NULL, visibility = 'public' WHERE id = :id"),
                {"id": thread_id},
            )
    finally:
        await engine.dispose()
