"""Two writers on one PostgreSQL, forced into the exact races several workers meet, one step at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts import DeleteArtifactOutput
from service.core.recording import Duplicate, Recorder
from service.store.engine import schema
from service.store.engine.db import create_engine
from service.store.engine.writer import SingleWriter


@pytest.fixture
async def two_writers(pg_url: str) -> AsyncIterator[tuple[AsyncEngine, SingleWriter, SingleWriter]]:
    engines = [create_engine(pg_url), create_engine(pg_url)]
    await schema.migrate(engines[0])
    writers = [SingleWriter(engine) for engine in engines]
    for writer in writers:
        await writer.start()
    try:
        yield engines[0], writers[0], writers[1]
    finally:
        for writer in writers:
            await writer.stop()
        for engine in engines:
            await engine.dispose()


async def _until(engine: AsyncEngine, waiting: str) -> None:
    """Return once some session of this database waits as ``waiting`` says (a row lock, a sleep)."""
    query = text(f"SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND {waiting}")
    async with asyncio.timeout(30):
        while True:
            async with engine.connect() as conn:
                if (await conn.execute(query)).scalar_one():
                    return
            await asyncio.sleep(0.01)


def _recorder() -> Recorder:
    return Recorder("envelope-1", "delete_artifact", "key-1", "request-hash", started=0.0)


async def test_a_twin_waits_for_the_winner_and_gets_its_reply(
    two_writers: tuple[AsyncEngine, SingleWriter, SingleWriter],
) -> None:
    """The same command on two workers at once: its effect commits once, the second answers with the first's reply.

    The first worker's group holds the command's inbox row uncommitted (a trigger sleeps after the insert of
    its reply, inside its transaction); the twin runs its effect, then its inbox insert waits for that row.
    When the first commits, the twin finds the row, rolls its effect back and returns the stored reply.
    """
    engine, first, second = two_writers
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE twin_effects (name text NOT NULL)"))
        await conn.execute(
            text(
                "CREATE FUNCTION hold_the_first() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.reply_data LIKE '%art-first%' THEN PERFORM pg_sleep(1.5); END IF; RETURN NEW; END $$"
            )
        )
        await conn.execute(
            text("CREATE TRIGGER hold AFTER INSERT ON inbox FOR EACH ROW EXECUTE FUNCTION hold_the_first()")
        )

    def job(name: str) -> Callable[[AsyncConnection], Awaitable[DeleteArtifactOutput]]:
        async def run(conn: AsyncConnection) -> DeleteArtifactOutput:
            await conn.execute(text("INSERT INTO twin_effects VALUES (:name)"), {"name": name})
            return DeleteArtifactOutput(artifact_id=f"art-{name}", deleted=True)

        return run

    winner, twin = _recorder(), _recorder()
    won = asyncio.create_task(winner.write(first, job("first")))
    await _until(engine, "wait_event = 'PgSleep'")  # the first's inbox row is written, its group not committed
    raced = asyncio.create_task(twin.write(second, job("second")))
    await _until(engine, "wait_event_type = 'Lock'")  # the twin's inbox insert waits for that row
    committed = await won
    assert committed.output.artifact_id == "art-first"
    with pytest.raises(Duplicate) as duplicate:
        await raced
    async with engine.connect() as conn:
        effects = (await conn.execute(text("SELECT name FROM twin_effects"))).scalars().all()
    assert effects == ["first"], "the twin's effect was rolled back with its savepoint"
    assert committed.reply is not None and duplicate.value.reply.reply_id == committed.reply.reply_id
    assert duplicate.value.reply.data_json == committed.reply.data_json


async def test_a_deadlock_between_two_writers_is_retried_not_reported(
    two_writers: tuple[AsyncEngine, SingleWriter, SingleWriter],
) -> None:
    """Two writers locking rows in opposite order do not fail: the one that waits too long runs again, both once."""
    engine, first, second = two_writers
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL)"))
        await conn.execute(text("INSERT INTO counters VALUES (1, 0), (2, 0)"))
    runs: dict[str, int] = {"a": 0, "b": 0}
    locked = {"a": asyncio.Event(), "b": asyncio.Event()}

    def job(name: str, rows: tuple[int, int], other: str) -> Callable[[AsyncConnection], Awaitable[str]]:
        async def run(conn: AsyncConnection) -> str:
            runs[name] += 1
            bump = text("UPDATE counters SET n = n + 1 WHERE id = :id")
            await conn.execute(bump, {"id": rows[0]})
            if runs[name] == 1:  # the first run only: hold one row until the other writer holds the other
                locked[name].set()
                await locked[other].wait()
            await conn.execute(bump, {"id": rows[1]})
            return name

        return run

    results = await asyncio.gather(first.submit(job("a", (1, 2), "b")), second.submit(job("b", (2, 1), "a")))
    assert results == ["a", "b"]
    assert max(runs.values()) >= 2, "the writers met: at least one job stepped aside and ran again"
    async with engine.connect() as conn:
        counts = dict((await conn.execute(text("SELECT id, n FROM counters"))).all())
    assert counts == {1: 2, 2: 2}, "each job's effect committed exactly once"
