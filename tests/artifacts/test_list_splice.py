"""list_artifacts splices the stored manifest texts: its reply is what parsing and re-serialising them gave."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts import ListArtifactsOutput, ListArtifactsParams, RegisterArtifactParams
from service.core.context import HandlerContext, Services
from service.core.recording import Committed
from service.core.replies import result_reply
from service.handlers import artifacts as handlers
from service.identity import Requester
from service.settings import Settings
from service.store import artifacts as store
from tests.support.artifacts import manifest_for, new_artifact_id
from tests.support.services import UNIT_MAX_FILE_BYTES, running_services

T0 = datetime(2025, 6, 1, tzinfo=UTC)
ALICE = Requester(id="alice", trace_id="trace-1")


@pytest.fixture
async def services(database_url: str, storage_root: Path) -> AsyncIterator[Services]:
    """The worker's services on the test's database, SQLite or PostgreSQL."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        storage_root=storage_root.as_uri(),
        max_file_bytes=UNIT_MAX_FILE_BYTES,
        cleanup_interval_s=0,
    )
    async with running_services(settings, migrated=False) as services:
        yield services


async def _register(ctx: HandlerContext, root: Path, n: int, **fields: Any) -> str:
    manifest = manifest_for(root, f"bytes {n}".encode(), created_at=T0 + timedelta(seconds=n), **fields)
    result = await handlers.register_artifact(RegisterArtifactParams.model_validate({"manifest": manifest}), ctx)
    output = result.output if isinstance(result, Committed) else result
    assert output.registered
    return output.artifact_id


async def _old_reply(ctx: HandlerContext, params: ListArtifactsParams) -> str:
    """The page as list_artifacts wrote it before: every manifest parsed, then the output serialised."""
    async with ctx.read() as conn:
        rows, next_cursor = await store.list_page(conn, params, ctx.requester, now=ctx.now)
    manifests = [store.manifest_of(row) for row in rows]
    return ListArtifactsOutput(count=len(manifests), artifacts=manifests, next_cursor=next_cursor).model_dump_json()


async def test_spliced_page_equals_the_reserialised_one(services: Services, storage_root: Path) -> None:
    """Nulls, unicode, context extras, a successor and a status changed after registration all come out as
    pydantic writes them, byte for byte, on every page."""
    ctx = HandlerContext(services, ALICE)
    first = await _register(ctx, storage_root, 1, visibility="public")
    await _register(
        ctx,
        storage_root,
        2,
        step_id="шаг/2",
        created_by="агент",
        labels={"город": "Москва", "emoji": "🚀", "q": 'say "hi"\\n'},
        context={"model_name": "m", "input_artifacts": [new_artifact_id()], "extra": {"é": [1, None, 2.5]}},
        retention="30d",
    )
    await _register(ctx, storage_root, 3, supersedes=first, version=2, visibility="private")
    failed = await _register(ctx, storage_root, 4)
    await services.writer.submit(lambda conn: store.set_status(conn, [failed], "failed"))

    for params in (
        ListArtifactsParams(),
        ListArtifactsParams(status="failed"),
        ListArtifactsParams(limit=2),
        ListArtifactsParams(labels={"город": "Москва"}),
    ):
        page = await handlers.list_artifacts(params, ctx)
        reply = json.loads(result_reply(page, time.monotonic()).data_json)["output"]
        old = await _old_reply(ctx, params)
        assert reply == json.loads(old)
        assert isinstance(page, handlers.ListedArtifacts) and page.output_json() == old  # key order too
        assert page.model_dump_json() == old  # pydantic's own serialisation of the page agrees

    everything = await handlers.list_artifacts(ListArtifactsParams(), ctx)
    assert [m.id for m in everything.artifacts][-1] == first  # read in the process, the manifests parse
    by_id = {m.id: m for m in everything.artifacts}
    assert by_id[failed].status == "failed" and by_id[first].step_id is None


async def test_pages_cut_to_the_reply_cap_still_cover_everything(services: Services, storage_root: Path) -> None:
    """With a tiny STORAGE_MAX_REPLY_BYTES every page fits and following the cursors lists each artifact once."""
    ctx = HandlerContext(services, ALICE)
    made = [await _register(ctx, storage_root, n, labels={"pad": "x" * 200}) for n in range(5)]
    services.settings = services.settings.model_copy(update={"max_reply_bytes": 9 * 1024})
    seen: list[str] = []
    cursor = None
    while True:
        page = await handlers.list_artifacts(ListArtifactsParams(cursor=cursor), ctx)
        assert len(result_reply(page, time.monotonic()).data_json.encode()) <= 9 * 1024
        assert 1 <= page.count < 5
        seen += [m.id for m in page.artifacts]
        if (cursor := page.next_cursor) is None:
            break
    assert seen == made[::-1]
