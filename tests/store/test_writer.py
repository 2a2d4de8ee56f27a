"""The single writer: group commit (per-job savepoints on SQLite, all or nothing then job by job on PostgreSQL),
database failures as UNAVAILABLE, draining on stop. On both databases."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts import InvalidArgument, Unavailable, utc_now
from service.store import inbox as inbox_store
from service.store.engine.db import create_engine
from service.store.engine.writer import SingleWriter
from service.store.inbox import StoredReply
from service.store.models import InboxRecord
from tests.support.databases import BACKENDS
from tests.support.migrated import migrated_engine

inbox = InboxRecord.__table__
Job = Callable[[AsyncConnection], Awaitable[str]]


@pytest.fixture(params=BACKENDS)
async def engine(request: pytest.FixtureRequest, template_db: Path, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with migrated_engine(request.param, template_db, tmp_path) as created:
        yield created


@pytest.fixture
async def batches(engine: AsyncEngine) -> AsyncIterator[tuple[SingleWriter, list[int]]]:
    """A running writer and the sizes of the groups it committed."""
    sizes: list[int] = []
    writer = SingleWriter(engine, on_batch=sizes.append)
    await writer.start()
    try:
        yield writer, sizes
    finally:
        await writer.stop()


def write_row(key: str, then: BaseException | None = None) -> Job:
    """A job that inserts one inbox row, then optionally fails (after its write, so it must roll back)."""

    async def job(conn: AsyncConnection) -> str:
        await conn.execute(
            insert(inbox).values(
                requester="test-agent",
                id=key,
                action="test",
                idempotency_key=None,
                request_hash="h",
                reply_id=key,
                reply_type="ai.team.result",
                reply_data="{}",
                created_at=utc_now(),
            )
        )
        if then is not None:
            raise then
        return key

    return job


async def committed(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set((await conn.execute(select(inbox.c.id))).scalars())


async def test_a_failing_job_does_not_sink_its_neighbours(
    batches: tuple[SingleWriter, list[int]], engine: AsyncEngine
) -> None:
    """In one group commit, a job raising a business error or a bug rolls back alone; the others commit."""
    writer, sizes = batches
    jobs = [
        write_row("a"),
        write_row("refused", InvalidArgument("nope", {"field": "x"})),
        write_row("b"),
        write_row("buggy", ValueError("a bug in a handler")),
        write_row("c"),
        write_row("a"),  # a duplicate key: the database refuses it, and only it
    ]
    results = await asyncio.gather(*(writer.submit(job) for job in jobs), return_exceptions=True)
    assert sizes == [len(jobs)], "all six were committed as one group"
    assert results[0] == "a" and results[2] == "b" and results[4] == "c"
    assert isinstance(results[1], InvalidArgument) and results[1].details == {"field": "x"}
    assert isinstance(results[3], ValueError)
    assert isinstance(results[5], Exception) and not isinstance(results[5], Unavailable)
    assert await committed(engine) == {"a", "b", "c"}


async def test_a_group_is_one_transaction_readers_see_its_rows_only_after_the_commit(
    batches: tuple[SingleWriter, list[int]], engine: AsyncEngine
) -> None:
    """Each job's savepoint nests in the group's transaction: releasing it commits nothing on its own (that
    would be an fsync per command), so a reader in the middle of the group sees none of the group's rows."""
    writer, sizes = batches
    seen: list[set[str]] = []

    async def peek(_conn: AsyncConnection) -> str:
        seen.append(await committed(engine))
        return "peek"

    jobs = [write_row("a"), write_row("b"), peek, write_row("c")]
    assert await asyncio.gather(*(writer.submit(job) for job in jobs)) == ["a", "b", "peek", "c"]
    assert sizes == [4]
    assert seen == [set()], "rows of the group were visible before the group committed"
    assert await committed(engine) == {"a", "b", "c"}


async def test_groups_form_under_load(batches: tuple[SingleWriter, list[int]], engine: AsyncEngine) -> None:
    """Many concurrent writes commit in fewer transactions than writes, and every one of them commits."""
    writer, sizes = batches
    keys = [f"k{i}" for i in range(200)]
    assert await asyncio.gather(*(writer.submit(write_row(k)) for k in keys)) == keys
    assert sum(sizes) == 200 and len(sizes) < 200
    assert await committed(engine) == set(keys)


async def test_a_database_failure_fails_the_group_as_unavailable_and_the_writer_recovers(
    batches: tuple[SingleWriter, list[int]], engine: AsyncEngine
) -> None:
    """When the database itself fails mid-group, every job gets a retryable UNAVAILABLE and nothing commits."""
    writer, _ = batches
    disk_error = OperationalError("INSERT ...", {}, Exception("disk I/O error"))
    jobs = [write_row("before"), write_row("failing", disk_error), write_row("after")]
    results = await asyncio.gather(*(writer.submit(job) for job in jobs), return_exceptions=True)
    for result in results:
        assert isinstance(result, Unavailable) and result.retryable, result
        assert "disk I/O error" in result.details["reason"]
    assert await committed(engine) == set()
    assert await writer.submit(write_row("retried")) == "retried"
    assert await committed(engine) == {"retried"}


async def test_an_unreachable_database_is_unavailable() -> None:
    """A writer whose database is down answers every write with a retryable UNAVAILABLE, and keeps running."""
    down = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")
    writer = SingleWriter(down)
    await writer.start()
    try:
        for _ in range(2):
            with pytest.raises(Unavailable) as refused:
                await writer.submit(write_row("x"))
            assert refused.value.retryable and refused.value.details["reason"]
    finally:
        await writer.stop()
        await down.dispose()


async def test_stop_drains_what_is_queued_then_refuses(engine: AsyncEngine) -> None:
    """Stopping commits every write already queued; a write submitted after stop is UNAVAILABLE."""
    writer = SingleWriter(engine, batch_max=4)
    await writer.start()
    tasks = [asyncio.create_task(writer.submit(write_row(f"q{i}"))) for i in range(10)]
    await asyncio.sleep(0)  # one loop turn: every task has queued its job
    await writer.stop()
    assert [t.result() for t in tasks] == [f"q{i}" for i in range(10)]
    with pytest.raises(Unavailable) as refused:
        await writer.submit(write_row("late"))
    assert refused.value.retryable
    assert await committed(engine) == {f"q{i}" for i in range(10)}


@contextlib.asynccontextmanager
async def gathering(engine: AsyncEngine, gather_s: float, busy: int) -> AsyncIterator[tuple[SingleWriter, list[int]]]:
    """A running writer with a gather window, told the worker holds ``busy`` commands; its group sizes."""
    sizes: list[int] = []
    writer = SingleWriter(engine, on_batch=sizes.append, gather_s=gather_s, busy=lambda: busy)
    await writer.start()
    try:
        yield writer, sizes
    finally:
        await writer.stop()


async def test_under_load_a_group_waits_for_writes_arriving_a_moment_apart(engine: AsyncEngine) -> None:
    """While the worker holds more commands than the group (``busy``), writes that arrive within the gather
    window, each in a later loop turn, commit together: one fsync for all of them instead of one each."""
    keys = [f"g{i}" for i in range(5)]
    async with gathering(engine, 0.5, busy=5) as (writer, sizes):

        async def later(key: str, delay_s: float) -> str:
            await asyncio.sleep(delay_s)
            return await writer.submit(write_row(key))

        assert await asyncio.gather(*(later(k, i * 0.01) for i, k in enumerate(keys))) == keys
    assert sizes == [5], "the writes arriving 10 ms apart were not gathered into one group"
    assert await committed(engine) == set(keys)


async def test_a_lone_write_never_waits_for_company(engine: AsyncEngine) -> None:
    """With nothing else in the worker, a write commits at once, however long the gather window is."""
    async with gathering(engine, 30.0, busy=1) as (writer, sizes):
        assert await asyncio.wait_for(writer.submit(write_row("alone")), timeout=5) == "alone"
    assert sizes == [1]


async def test_the_gather_window_ends_even_when_the_others_never_write(engine: AsyncEngine) -> None:
    """Commands in the worker that never reach the writer (reads, say) hold a group open for the window only."""
    async with gathering(engine, 0.05, busy=50) as (writer, sizes):
        assert await asyncio.wait_for(writer.submit(write_row("waited")), timeout=5) == "waited"
    assert sizes == [1] and await committed(engine) == {"waited"}


async def test_twin_inbox_rows_in_one_group_one_goes_in_the_other_is_told(
    batches: tuple[SingleWriter, list[int]], engine: AsyncEngine
) -> None:
    """Two records of the same command in one group (PostgreSQL defers them to the group's end): exactly one
    goes in, the other learns it was a twin, and the group's other rows commit."""
    writer, sizes = batches

    def record(envelope_id: str, reply_id: str) -> Job:
        async def job(conn: AsyncConnection) -> str:
            reply = StoredReply(reply_id, "ai.team.result", "{}", utc_now())
            fields = {"requester": "agent", "envelope_id": envelope_id, "action": "ping", "idempotency_key": None}
            return reply_id if await inbox_store.record(conn, reply=reply, req_hash="h", **fields) else "twin"

        return job

    jobs = [record("env-1", "first"), write_row("plain"), record("env-1", "second"), record("env-2", "other")]
    assert await asyncio.gather(*(writer.submit(job) for job in jobs)) == ["first", "plain", "twin", "other"]
    assert sizes == [4]
    assert await committed(engine) == {"plain", "env-1", "env-2"}
    async with engine.connect() as conn:
        stored = dict((await conn.execute(select(inbox.c.id, inbox.c.reply_id))).all())
    assert stored["env-1"] == "first" and stored["env-2"] == "other"


async def test_a_lone_failing_job_runs_once_and_leaves_nothing(
    batches: tuple[SingleWriter, list[int]], engine: AsyncEngine
) -> None:
    """A refusal found inside a job that is alone in its group: its write is rolled back, its error is the
    answer, and it is not run a second time to find that out (on PostgreSQL, where groups run all or nothing)."""
    writer, _ = batches
    runs: list[str] = []
    failing = write_row("refused", InvalidArgument("nope", {"field": "x"}))

    async def counted(conn: AsyncConnection) -> str:
        runs.append("run")
        return await failing(conn)

    with pytest.raises(InvalidArgument):
        await writer.submit(counted)
    assert runs == ["run"]
    assert await committed(engine) == set()
    assert await writer.submit(write_row("after")) == "after"
    assert await committed(engine) == {"after"}
