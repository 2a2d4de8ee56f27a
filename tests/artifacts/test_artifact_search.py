"""``list_artifacts`` with ``search``: a client's reports found by a part of a label value (issue 20).

Through the client library and over raw AMQP, on both databases: Cyrillic in any case, a part of an INN,
with the other filters and the cursor, never another agent's private artifact, LIKE's wildcards taken
literally, bad searches refused; and revision 0010 filling ``search_text`` for rows that were there before it.
"""

# ruff: noqa: RUF001, RUF002 - Cyrillic on purpose: the names searched for are Russian client names.

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from buffer import InvalidArgument, StorageClient
from contracts import ListArtifactsParams
from service.identity import Requester
from service.store import artifacts as artifact_store
from service.store import search
from service.store import threads as thread_store
from service.store.engine import schema
from service.transport.worker import Worker
from tests.support.artifacts import manifest_for
from tests.support.bus import Bus, error, output
from tests.support.client import client_settings
from tests.support.wire import register, register_many

ALICE = {"requester_id": "alice", "requester_trace_id": "trace-alice"}
MALLORY = {"requester_id": "mallory", "requester_trace_id": "trace-mallory"}


def _tag() -> str:
    return uuid.uuid4().hex[:10]


async def _found(bus: Bus, context: dict[str, Any] | None = None, **params: Any) -> list[str]:
    got = output(await bus.call("list_artifacts", params, context=context or {}))
    return [manifest["id"] for manifest in got["artifacts"]]


async def test_the_client_finds_reports_by_a_part_of_a_label(worker: Worker, tmp_path: Path) -> None:
    """A report labelled "ООО «Ромашка»" is found by "ромашка" and "РОМАШКА", by "70708" of its INN, with filters."""
    tag = _tag()
    settings = client_settings(worker, tmp_path / "buffer", agent_id="alice", trace_id=f"trace-{tag}")
    async with StorageClient(**settings) as storage:
        labels = {"client": "ООО «Ромашка»", "inn": "7707083893", "t": tag}
        report = await storage.upload_artifact(b"report", artifact_type="report", labels=labels)
        table = await storage.upload_artifact(b"table", artifact_type="table", labels=labels)
        other = await storage.upload_artifact(b"other", artifact_type="report", labels={"client": "ЗАО «Лютик»"})
        ids = {name: out.artifact_id for name, out in (("report", report), ("table", table), ("other", other))}

        async def found(search: str, **filters: Any) -> list[str]:
            page = await storage.list_artifacts(search=search, trace_id=f"trace-{tag}", **filters)
            return [manifest.id for manifest in page.artifacts]

        assert await found("ромашка") == [ids["table"], ids["report"]]
        assert await found("РОМАШКА", artifact_type="report") == [ids["report"]]
        assert await found("70708", labels={"t": tag}) == [ids["table"], ids["report"]]
        assert await found("лютик") == [ids["other"]]
        assert await found("client") == []  # keys are not searched, values are

        with pytest.raises(InvalidArgument):  # refused by the client before anything is sent
            await storage.list_artifacts(search="ab")


@pytest.fixture(params=["few", "many"])
def matches(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a search runs on SQLite: its few matches read by rowid, or the listing's walk checking each
    row (a name on more than ``SQLITE_RARE_ROWS`` artifacts); on PostgreSQL the planner decides."""
    if request.param == "many":
        monkeypatch.setattr(search, "SQLITE_RARE_ROWS", 1)
    return str(request.param)


async def test_search_pages_by_cursor_with_other_filters(bus: Bus, storage_root: Path, matches: str) -> None:
    """A search with a type filter walks every match once, page by page, newest first: no duplicate, no gap."""
    tag = _tag()
    manifests = [
        manifest_for(
            storage_root,
            f"{n}".encode(),
            visibility="public",
            artifact_type="report" if n % 2 == 0 else "table",
            created_at=datetime(2026, 1, 1, 0, 0, n, tzinfo=UTC).isoformat(),
            labels={"client": f"Клиент {tag} №{n}"},
        )
        for n in range(9)
    ]
    await register_many(bus, storage_root, manifests)
    expected = [manifests[n]["id"] for n in (8, 6, 4, 2, 0)]

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"search": f"клиент {tag}", "artifact_type": "report", "limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        page = output(await bus.call("list_artifacts", params))
        seen.extend(manifest["id"] for manifest in page["artifacts"])
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == expected


async def test_another_agents_private_artifact_is_never_found(bus: Bus, storage_root: Path, matches: str) -> None:
    """Mallory's search finds Alice's public report by its label but never her private one."""
    tag = _tag()
    private, _ = await register(
        bus, storage_root, b"p", command_context=ALICE, visibility="private", labels={"client": f"Секрет {tag}"}
    )
    public, _ = await register(
        bus, storage_root, b"q", command_context=ALICE, visibility="public", labels={"client": f"Открыто {tag}"}
    )
    assert await _found(bus, MALLORY, search=tag) == [public["id"]]
    assert await _found(bus, MALLORY, search=f"секрет {tag}") == []
    assert set(await _found(bus, ALICE, search=tag)) == {public["id"], private["id"]}


async def test_wildcards_in_a_search_are_literal(bus: Bus, storage_root: Path, matches: str) -> None:
    """``%``, ``_`` and ``\\`` match themselves only."""
    tag = _tag()
    values = {"pct": f"50% {tag}", "five": f"500 {tag}", "under": f"a_b {tag}", "x": f"axb {tag}", "bs": f"c\\d {tag}"}
    ids = {}
    for key, value in values.items():
        manifest, _ = await register(bus, storage_root, key.encode(), visibility="public", labels={"v": value})
        ids[key] = manifest["id"]
    assert await _found(bus, search=f"50% {tag}") == [ids["pct"]]
    assert await _found(bus, search=f"a_b {tag}") == [ids["under"]]
    assert await _found(bus, search=f"c\\d {tag}") == [ids["bs"]]


@pytest.mark.parametrize(
    ("search", "expected"),
    [("ab", "at least 3 characters"), ("x" * 129, "at most 128 characters"), (["abc"], "valid string")],
)
async def test_a_bad_search_is_refused_with_why(bus: Bus, search: object, expected: str) -> None:
    refused = error(await bus.call("list_artifacts", {"search": search}))
    assert refused["code"] == "INVALID_ARGUMENT"
    assert expected in refused["message"] and "search" in refused["message"]


# -- revision 0010 on a database with rows ------------------------------------------------------------------

_threads = sa.table(
    "threads",
    *(sa.column(name) for name in ("id", "version", "message_count", "next_seq", "visibility", "owner")),
    sa.column("metadata", sa.JSON()),
    sa.column("created_at", sa.DateTime()),
    sa.column("updated_at", sa.DateTime()),
)
_artifacts = sa.table(
    "artifacts",
    *(sa.column(name) for name in ("id", "version", "trace_id", "created_by", "artifact_type", "uri", "owner")),
    *(sa.column(name) for name in ("size_bytes", "checksum", "status", "visibility", "manifest")),
    sa.column("created_at", sa.DateTime()),
    sa.column("registered_at", sa.DateTime()),
)
_labels = sa.table("artifact_labels", sa.column("artifact_id"), sa.column("key"), sa.column("value"))


async def test_0010_fills_the_search_text_of_existing_rows(engine: AsyncEngine, storage_root: Path) -> None:
    """Threads and artifacts saved at revision 0009 are found by search once 0010 ran, on both databases."""
    await schema.migrate(engine, "0009")
    when = datetime(2026, 1, 1)
    manifest = manifest_for(storage_root, visibility="public", labels={"client": "ООО «Ромашка»"})
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(_threads),
            [
                {
                    "id": f"old-{n}",
                    "metadata": {"client": f"АО «Старый {n}»", "inn": 7707083000 + n, "vip": True},
                    "version": 1,
                    "message_count": 0,
                    "next_seq": 0,
                    "visibility": "public",
                    "owner": "alice",
                    "created_at": when,
                    "updated_at": when,
                }
                for n in range(5)
            ],
        )
        await conn.execute(
            sa.insert(_artifacts),
            {
                **{k: manifest[k] for k in ("id", "trace_id", "created_by", "artifact_type", "uri", "checksum")},
                "version": 1,
                "owner": "alice",
                "size_bytes": manifest["size_bytes"],
                "status": "completed",
                "visibility": "public",
                "manifest": "{}",
                "created_at": when,
                "registered_at": when,
            },
        )
        await conn.execute(
            sa.insert(_labels), {"artifact_id": manifest["id"], "key": "client", "value": "ООО «Ромашка»"}
        )
    await schema.migrate(engine)

    reader = Requester(id="bob", trace_id=None)
    now = datetime.now(UTC)
    async with engine.connect() as conn:
        threads, _ = await thread_store.list_page(
            conn,
            metadata={},
            created_after=None,
            created_before=None,
            limit=10,
            after=None,
            now=now,
            requester=reader,
            search="старый 3",
        )
        by_inn, _ = await thread_store.list_page(
            conn,
            metadata={},
            created_after=None,
            created_before=None,
            limit=10,
            after=None,
            now=now,
            requester=reader,
            search="7707083004",
        )
        artifacts, _ = await artifact_store.list_page(conn, ListArtifactsParams(search="ромашка"), reader, now=now)
    assert [row.id for row in threads] == ["old-3"]
    assert [row.id for row in by_inn] == ["old-4"]
    assert [row.id for row in artifacts] == [manifest["id"]]
