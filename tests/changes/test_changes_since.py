"""``changes_since`` (issue 21): catch-up on the change log, under the read rule, bounded, and honest about gaps.

Handler-level on both databases: an agent sees the changes of what it may read and nothing of the rest (not
even how many), filters by kind and trace, pages by cursor without losing or repeating a change, never
makes one call read the whole log, and gets OUT_OF_RANGE (never a silent gap) for a cursor retention passed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts import (
    ChangeKind,
    ChangesSinceOutput,
    ChangesSinceParams,
    CleanupScope,
    DeleteArtifactParams,
    InvalidArgument,
    OutOfRange,
    PutMemoryParams,
    RegisterArtifactParams,
    SaveThreadParams,
    Visibility,
    utc_now,
)
from service.core.context import HandlerContext, Services
from service.handlers import changes as handler
from service.handlers.artifact_tombstones import delete_artifact
from service.handlers.artifacts import register_artifact
from service.handlers.memory import put_memory
from service.handlers.threads import save_thread
from service.identity import Requester
from service.maintenance.cleanup import run_cleanup
from service.settings import Settings
from service.store import changes as store
from tests.support.artifacts import manifest_for
from tests.support.services import UNIT_MAX_FILE_BYTES, running_services

ADMIN = Requester("admin-agent", is_admin=True)
ALICE = Requester("alice", trace_id="trace-a")
BOB = Requester("bob", trace_id="trace-a")
"""Alice's colleague: same trace, not the owner."""
MALLORY = Requester("mallory", trace_id="trace-m")
ANONYMOUS = Requester(None)


@pytest.fixture
async def services(database_url: str, storage_root: Path) -> AsyncIterator[Services]:
    """A worker's stores on a fresh database of each backend, without a broker: every change stays in the outbox."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        storage_root=storage_root.as_uri(),
        admins=frozenset({ADMIN.id or ""}),
        max_file_bytes=UNIT_MAX_FILE_BYTES,
        cleanup_interval_s=0,
        trace_max_artifacts=4,
    )
    async with running_services(settings, migrated=False) as opened:
        yield opened


async def _since(services: Services, who: Requester, **params: Any) -> ChangesSinceOutput:
    return await handler.changes_since(ChangesSinceParams(**params), HandlerContext(services, who))


async def _all(services: Services, who: Requester, **params: Any) -> tuple[list[tuple[int, str]], int]:
    """Every change ``who`` may read, walked page by page to the end; and how many calls it took."""
    found: list[tuple[int, str]] = []
    calls, cursor = 0, params.pop("cursor", None)
    while True:
        page = await _since(services, who, cursor=cursor, **params)
        calls += 1
        assert page.count == len(page.changes) and page.cursor is not None
        found += [(c.change_id, c.kind.value) for c in page.changes]
        cursor = page.cursor
        if page.next_cursor is None:
            return found, calls
        assert page.next_cursor == page.cursor


async def _register(services: Services, who: Requester, root: Path, visibility: str, trace: str) -> str:
    manifest = manifest_for(root, f"{visibility} {trace}".encode(), trace_id=trace, visibility=visibility)
    params = RegisterArtifactParams.model_validate({"manifest": manifest})
    await register_artifact(params, HandlerContext(services, who))
    return str(manifest["id"])


async def _writes(services: Services, root: Path) -> dict[str, str]:
    """Alice's artifacts, threads and memory items of each visibility, in trace-a; the ids by visibility."""
    ids = {v: await _register(services, ALICE, root, v, "trace-a") for v in ("private", "trace", "public")}
    for visibility in ("private", "trace", "public"):
        thread = SaveThreadParams(thread_id=f"{visibility}-thread", messages=[], visibility=Visibility(visibility))
        await save_thread(thread, HandlerContext(services, ALICE))
        item = PutMemoryParams(namespace=["alice"], key=visibility, value={"v": 1}, visibility=Visibility(visibility))
        await put_memory(item, HandlerContext(services, ALICE))
    return ids


async def test_each_requester_sees_the_changes_it_may_read(services: Services, storage_root: Path) -> None:
    """Alice's private, trace and public artifacts, threads and memory items, and her trace's quota warning:
    Alice and admins see all, her trace colleague all but the private ones, a stranger and an anonymous
    agent only the public ones."""
    await _writes(services, storage_root)
    await _register(services, ALICE, storage_root, "private", "trace-a")  # the 4th of trace-a: 80% of 4
    everything, _ = await _all(services, ADMIN)
    assert len(everything) == 3 * 3 + 1 + 1 and everything == sorted(everything)
    assert [kind for _, kind in everything].count("quota_warning") == 1

    async def seen(who: Requester) -> dict[str, set[str | None]]:
        page = await _since(services, who, limit=1000)
        by_kind: dict[str, set[str | None]] = {}
        for change in page.changes:
            by_kind.setdefault(change.kind.value, set()).add(
                None if change.kind is ChangeKind.QUOTA_WARNING else change.visibility
            )
        return by_kind

    assert await _all(services, ALICE) == (everything, 1)
    colleague = await seen(BOB)
    assert colleague == {
        "artifact_registered": {"trace", "public"},
        "thread_saved": {"trace", "public"},
        "memory_put": {"trace", "public"},
        "quota_warning": {None},
    }
    public = {"artifact_registered": {"public"}, "thread_saved": {"public"}, "memory_put": {"public"}}
    assert await seen(MALLORY) == public
    assert await seen(ANONYMOUS) == public
    mallory_in_trace = await _since(services, MALLORY, trace_id="trace-a", limit=1000)
    assert {c.visibility for c in mallory_in_trace.changes} == {"public"}, "naming the trace opens nothing"
    assert mallory_in_trace.cursor == str(everything[-1][0]), "past what it may not read, without telling it"


async def test_kinds_and_trace_filters(services: Services, storage_root: Path) -> None:
    """``kinds`` keeps those kinds, ``trace_id`` that trace's changes; both together, both."""
    await _writes(services, storage_root)
    other = await _register(services, MALLORY, storage_root, "public", "trace-m")
    await delete_artifact(DeleteArtifactParams(artifact_id=other), HandlerContext(services, ADMIN))
    memory, _ = await _all(services, ADMIN, kinds=["memory_put", "memory_deleted"])
    assert [kind for _, kind in memory] == ["memory_put"] * 3
    in_m, _ = await _all(services, ADMIN, trace_id="trace-m")
    assert [kind for _, kind in in_m] == ["artifact_registered", "artifact_deleted"]
    deleted, _ = await _all(services, ALICE, trace_id="trace-m", kinds=["artifact_deleted"])
    assert [kind for _, kind in deleted] == ["artifact_deleted"], "a public artifact's deletion is public"


async def test_paging_resumes_exactly_where_it_stopped(services: Services, storage_root: Path) -> None:
    """Pages of two walk the log without a gap or a repeat; the last cursor stays put until something new."""
    await _writes(services, storage_root)
    whole, _ = await _all(services, ADMIN, limit=1000)
    paged, calls = await _all(services, ADMIN, limit=2)
    assert paged == whole and calls == len(whole) // 2 + 1
    end = await _since(services, ADMIN, cursor=str(whole[-1][0]))
    assert (end.count, end.cursor, end.next_cursor) == (0, str(whole[-1][0]), None)
    later = await _register(services, ALICE, storage_root, "public", "trace-b")
    news = await _since(services, MALLORY, cursor=end.cursor)
    assert [c.artifact_id for c in news.changes] == [later]


async def test_one_call_reads_a_bounded_part_of_the_log(
    services: Services, storage_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the scan bound at 3, a call that matches none of 9 changes gets three empty pages whose cursor
    moves 3 changes on each time, then the end; what a requester may read still comes, in order."""
    await _writes(services, storage_root)
    ids = [change_id for change_id, _ in (await _all(services, ADMIN))[0]]
    monkeypatch.setattr(handler, "MAX_SCAN", 3)
    cursors = []
    cursor = None
    while True:
        page = await _since(services, Requester("nobody", trace_id="trace-z"), cursor=cursor, kinds=["thread_deleted"])
        cursors.append(page.cursor)
        cursor = page.next_cursor
        if cursor is None:
            break
        assert page.changes == []
    assert cursors == [str(ids[2]), str(ids[5]), str(ids[8]), str(ids[8])]
    public, calls = await _all(services, MALLORY)
    assert len(public) == 3 and calls == 4


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", "1e3", " 7", "٣", "9" * 20])
async def test_a_malformed_cursor_is_invalid(services: Services, cursor: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await _since(services, ALICE, cursor=cursor)
    assert refused.value.details == {"field": "cursor"}


async def test_retention_keeps_what_waits_and_a_purged_cursor_is_out_of_range(
    services: Services, storage_root: Path
) -> None:
    """Nothing published: the ``changes`` scope purges nothing. Once all but the 6th are published, it purges
    the 5 before it and no further; a cursor before them is OUT_OF_RANGE (purged), one past the log too
    (unknown), and a call without a cursor starts after the purged part."""
    await _writes(services, storage_root)
    ids = [change_id for change_id, _ in (await _all(services, ADMIN))[0]]
    later = utc_now() + timedelta(seconds=services.settings.changes_retention_s + 60)
    assert await run_cleanup(services, [CleanupScope.CHANGES], now=later) == {"changes": 0}

    published = ids[:5] + ids[6:]
    await services.writer.submit(lambda conn: store.published(conn, published))
    assert await run_cleanup(services, [CleanupScope.CHANGES], now=later, dry_run=True) == {"changes": 5}
    assert await run_cleanup(services, [CleanupScope.CHANGES], now=later) == {"changes": 5}
    assert await run_cleanup(services, [CleanupScope.CHANGES], now=later) == {"changes": 0}

    with pytest.raises(OutOfRange) as purged:
        await _since(services, ALICE, cursor=str(ids[3]))
    assert purged.value.details["reason"] == "purged" and purged.value.details["purged_through"] == ids[4]
    assert "resync" in purged.value.message and "list_artifacts" in purged.value.message
    assert (await _since(services, ALICE, cursor=str(ids[4]))).changes[0].change_id == ids[5]
    assert [c for c, _ in (await _all(services, ADMIN))[0]] == ids[5:]
    with pytest.raises(OutOfRange) as ahead:
        await _since(services, ALICE, cursor=str(ids[-1] + 1))
    assert ahead.value.details["reason"] == "unknown"

    await services.writer.submit(lambda conn: store.published(conn, [ids[5]]))
    assert await run_cleanup(services, [CleanupScope.CHANGES], now=later) == {"changes": 4}
    assert (await _all(services, ADMIN))[0] == [] and (await _since(services, ADMIN)).cursor == str(ids[-1])
    after = await _register(services, ALICE, storage_root, "public", "trace-c")
    fresh = await _since(services, ADMIN, cursor=str(ids[-1]))
    assert [(c.artifact_id, c.change_id > ids[-1]) for c in fresh.changes] == [(after, True)], "ids never reused"


async def test_a_page_stays_within_the_reply_cap(services: Services) -> None:
    """With STORAGE_MAX_REPLY_BYTES at its floor (16 KiB), 40 changes with 500-character keys come in pages
    whose JSON fits the cap, and the pages together are all of them, in order."""
    services.settings = services.settings.model_copy(update={"max_reply_bytes": 16 * 1024})
    for i in range(40):
        item = PutMemoryParams(namespace=["long"], key=f"{i:03d}" + "k" * 497, value={}, visibility=Visibility.PUBLIC)
        await put_memory(item, HandlerContext(services, ALICE))
    pages: list[list[str | None]] = []
    cursor = None
    while True:
        page = await _since(services, MALLORY, cursor=cursor, limit=1000)
        assert len(page.model_dump_json()) < 16 * 1024 - 1024, "room left for the reply's envelope"
        pages.append([change.key for change in page.changes])
        cursor = page.cursor
        if page.next_cursor is None:
            break
    assert [key for keys in pages for key in keys] == [f"{i:03d}" + "k" * 497 for i in range(40)]
    assert len(pages) > 3
