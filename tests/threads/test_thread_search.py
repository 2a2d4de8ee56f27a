"""``list_threads`` with ``search``: a client's dialogs found by a part of its name or tax number (issue 20).

Through the client library and over raw AMQP, on both databases: Cyrillic in any case, a part of an INN
saved as a number, with the other filters and the cursor, never another agent's private thread, LIKE's
wildcards taken literally, bad searches refused, and metadata changed by a later save.
"""

# ruff: noqa: RUF001, RUF002 - Cyrillic on purpose: the names searched for are Russian client names.

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from buffer import InvalidArgument, StorageClient
from service.store import search
from service.store import threads as thread_store
from service.transport.worker import Worker
from tests.support.bus import Bus, error, output
from tests.support.client import client_settings

ALICE = {"requester_id": "alice", "requester_trace_id": "trace-alice"}
MALLORY = {"requester_id": "mallory", "requester_trace_id": "trace-mallory"}


def _tag() -> str:
    """A word no other test's thread holds: each test searches only its own threads."""
    return uuid.uuid4().hex[:10]


async def _save(bus: Bus, context: dict[str, Any], thread_id: str, **params: Any) -> None:
    output(await bus.call("save_thread", {"thread_id": thread_id, **params}, context=context))


async def _found(bus: Bus, context: dict[str, Any], **params: Any) -> list[str]:
    got = output(await bus.call("list_threads", params, context=context))
    return [thread["thread_id"] for thread in got["threads"]]


async def test_the_client_finds_a_dialog_by_a_part_of_its_name_or_inn(worker: Worker, tmp_path: Path) -> None:
    """A dialog is found by "Ромашка" or "ромашка" in "ООО «Ромашка»", by "70708" in its INN saved as a number."""
    tag = _tag()
    async with StorageClient(**client_settings(worker, tmp_path / "buffer", agent_id="alice")) as storage:
        await storage.save_thread(f"romashka-{tag}", metadata={"client": "ООО «Ромашка»", "inn": 7707083893, "t": tag})
        await storage.save_thread(f"lyutik-{tag}", metadata={"client": "ЗАО «Лютик»", "inn": "5001000000", "t": tag})
        await storage.save_thread(f"flag-{tag}", metadata={"client": "ИП Ромашкин", "vip": True, "t": tag})

        async def found(search: str, **filters: Any) -> list[str]:
            page = await storage.list_threads(search=search, **filters)
            return [thread.thread_id for thread in page.threads]

        assert await found("Ромашка") == [f"romashka-{tag}"]
        assert await found("ромашк") == [f"flag-{tag}", f"romashka-{tag}"]  # ИП Ромашкин holds it too
        assert await found("ромашка»") == [f"romashka-{tag}"]
        assert await found("РОМАШКА", metadata={"inn": 7707083893}) == [f"romashka-{tag}"]
        assert await found("70708") == [f"romashka-{tag}"]  # the INN saved as a number
        assert await found("  лютик  ") == [f"lyutik-{tag}"]  # spaces around a search are not part of it
        assert await found("true", metadata={"t": tag}) == []  # booleans are not names
        assert await found(tag) == [f"flag-{tag}", f"lyutik-{tag}", f"romashka-{tag}"]

        with pytest.raises(InvalidArgument):  # refused by the client before anything is sent
            await storage.list_threads(search="ро")


@pytest.fixture(params=["few", "many"])
def matches(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a search runs on SQLite: its few matches read by rowid, or (as for a name in more than
    ``SQLITE_RARE_ROWS`` threads) the listing's walk checking each row, its metadata filters too (as for a
    label on more than ``LABEL_WALK_ROWS`` threads per item); on PostgreSQL the planner decides."""
    if request.param == "many":
        monkeypatch.setattr(search, "SQLITE_RARE_ROWS", 1)
        monkeypatch.setattr(thread_store, "LABEL_WALK_ROWS", 0)
    return str(request.param)


async def test_search_pages_by_cursor_with_other_filters(bus: Bus, matches: str) -> None:
    """A search with a metadata filter and a time bound walks every match once, page by page, newest first."""
    tag = _tag()
    for n in range(7):
        metadata = {"client": f"Клиент {tag} №{n}", "region": "77" if n % 2 == 0 else "50", "batch": tag}
        await _save(bus, ALICE, f"paged-{tag}-{n}", metadata=metadata)
    expected = [f"paged-{tag}-{n}" for n in (6, 4, 2, 0)]

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"search": f"КЛИЕНТ {tag.upper()}", "metadata": {"region": "77"}, "limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        page = output(await bus.call("list_threads", params, context=ALICE))
        seen.extend(thread["thread_id"] for thread in page["threads"])
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == expected  # no duplicate, no gap
    assert await _found(bus, ALICE, metadata={"batch": tag, "region": "77"}) == expected  # the filters alone
    assert await _found(bus, ALICE, search=tag, created_after="2000-01-01T00:00:00Z", limit=1000) == [
        f"paged-{tag}-{n}" for n in range(6, -1, -1)
    ]
    assert await _found(bus, ALICE, search=tag, created_before="2000-01-01T00:00:00Z") == []


async def test_another_agents_private_thread_is_never_found(bus: Bus, matches: str) -> None:
    """Mallory's search over raw AMQP finds Alice's public dialog by name but never her private one."""
    tag = _tag()
    await _save(bus, ALICE, f"private-{tag}", metadata={"client": f"Секрет {tag}"})
    await _save(bus, ALICE, f"public-{tag}", metadata={"client": f"Открыто {tag}"}, visibility="public")

    assert await _found(bus, MALLORY, search=tag) == [f"public-{tag}"]
    assert await _found(bus, MALLORY, search=f"секрет {tag}") == []
    assert await _found(bus, ALICE, search=tag) == [f"public-{tag}", f"private-{tag}"]


async def test_wildcards_in_a_search_are_literal(bus: Bus, matches: str) -> None:
    """``%``, ``_`` and ``\\`` match themselves only: "50%" does not find "500", "a_b" not "axb"."""
    tag = _tag()
    names = {"pct": "скидка 50% {t}", "five": "скидка 500 {t}", "under": "a_b {t}", "x": "axb {t}", "bs": "c\\d {t}"}
    for key, name in names.items():
        await _save(bus, ALICE, f"{key}-{tag}", metadata={"name": name.format(t=tag)})

    assert await _found(bus, ALICE, search="50%") == [f"pct-{tag}"]
    assert await _found(bus, ALICE, search=f"a_b {tag}") == [f"under-{tag}"]
    assert await _found(bus, ALICE, search=f"c\\d {tag}") == [f"bs-{tag}"]
    assert await _found(bus, ALICE, search="%%%") == []


async def test_a_search_never_spans_two_values(bus: Bus) -> None:
    """Each value is matched alone: the end of one and the start of the next are not a substring."""
    tag = _tag()
    await _save(bus, ALICE, f"two-{tag}", metadata={"a": f"{tag}abc", "b": "def"})
    assert await _found(bus, ALICE, search="abcdef") == []
    assert await _found(bus, ALICE, search=f"{tag}abc") == [f"two-{tag}"]


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("ab", "at least 3 characters"),
        ("  ab  ", "at least 3 characters"),
        ("x" * 129, "at most 128 characters"),
        (12345, "valid string"),
        ("abc\ndef", "control characters"),
    ],
)
async def test_a_bad_search_is_refused_with_why(bus: Bus, search: object, expected: str) -> None:
    """Too short (the trigram index needs three characters), too long, not a string, or with a control character."""
    refused = error(await bus.call("list_threads", {"search": search}, context=ALICE))
    assert refused["code"] == "INVALID_ARGUMENT"
    assert expected in refused["message"] and "search" in refused["message"]


async def test_metadata_changed_by_a_later_save_is_found_by_its_new_value_only(bus: Bus) -> None:
    """A renamed client is found by the new name, not the old; a removed value is found no more."""
    tag = _tag()
    thread_id = f"renamed-{tag}"
    await _save(bus, ALICE, thread_id, metadata={"client": f"Старое {tag}", "note": f"заметка {tag}"})
    assert await _found(bus, ALICE, search=f"старое {tag}") == [thread_id]

    await _save(bus, ALICE, thread_id, metadata={"client": f"Новое {tag}", "note": None})
    assert await _found(bus, ALICE, search=f"новое {tag}") == [thread_id]
    assert await _found(bus, ALICE, search=f"старое {tag}") == []
    assert await _found(bus, ALICE, search=f"заметка {tag}") == []

    output(await bus.call("delete_thread", {"thread_id": thread_id}, context=ALICE))
    assert await _found(bus, ALICE, search=f"новое {tag}") == []  # a deleted thread is in no listing
    await _save(bus, ALICE, thread_id, metadata={"client": f"Заново {tag}"})  # saved afresh: old metadata gone
    assert await _found(bus, ALICE, search=tag) == [thread_id]
    assert await _found(bus, ALICE, search=f"новое {tag}") == []
