"""The single writer: every write in the worker goes through here, committed in groups.

Handlers submit a job (an async function of a connection) and await its result. The writer takes
whatever is queued (up to ``batch_max``), runs the jobs in one transaction and commits once: one fsync for
many commands, and a failing job never sinks its neighbours. A failure of the database itself fails the
whole batch with a retryable UNAVAILABLE.

On SQLite each job runs in its own savepoint (a few microseconds on the event loop). On PostgreSQL a
savepoint and its release are two round trips per job, more than the job's own statements: the group
first runs all or nothing, its inbox rows and labels sent together at its end (``deferred``), and only
when a job fails (rare: a refusal found in the database, a row another worker holds, a twin command) is
it rolled back and run again job by job, each in a savepoint.

The changes jobs record (``store.changes``: the change log and its outbox) wait in the group and go in as
its last statements, right before the commit: a job rolled back to its savepoint drops its changes with its
effects, and on PostgreSQL the lock that orders changes across workers is held for one INSERT and the commit.

With several workers on PostgreSQL two batches can wait on each other's rows (a deadlock); the database
then rolls one back and the writer runs that batch again, in halves. A job may therefore run more than
once before its transaction commits: it must keep its effects inside the connection (what it returns is
taken from the run that committed), never append to outside state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts import StorageError, Unavailable
from service.store.changes import PENDING, PendingChanges
from service.store.engine.db import (
    is_conflict,
    is_lock_timeout,
    seems_open,
    translate_db_error,
    translate_value_error,
    unlimited,
)
from service.store.engine.deferred import GROUP_ROWS, GroupRows
from service.store.engine.savepoint import group_transaction

log = logging.getLogger(__name__)

T = TypeVar("T")
CONFLICT_ATTEMPTS = 8
"""How often one job runs when the database keeps rolling it back for a deadlock or serialization failure."""
CONFLICT_BACKOFF_S = 0.02
LOCK_WAIT_MS = 100
"""PostgreSQL: how long a job of a group waits for a row another worker's transaction holds. Past that it
steps aside and runs again, patiently, right after the group commits: a group never sits holding its own
rows while it waits, which is how two workers' groups would deadlock (detected only after a second)."""
WriteJob = Callable[[AsyncConnection], Awaitable[T]]


@dataclass(slots=True)
class _Pending:
    job: WriteJob[Any]
    future: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class _OneByOne(Exception):
    """A job of a group run all or nothing failed: the group rolls back and runs again, job by job; a group of
    one job (``alone``: its outcome) needs no second run."""

    def __init__(self, alone: tuple[_Pending, bool, Any] | None = None) -> None:
        super().__init__()
        self.alone = alone


class WriterStopped(Unavailable):
    """The writer is shutting down; the command should be retried (by another worker or after restart)."""


class SingleWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch_max: int = 256,
        on_batch: Callable[[int], None] | None = None,
        gather_s: float = 0.0,
        busy: Callable[[], int] | None = None,
    ) -> None:
        self._engine = engine
        self._batch_max = batch_max
        self._on_batch = on_batch
        self._gather_s = gather_s
        self._busy = busy
        self._arrived = asyncio.Event()
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._conn: AsyncConnection | None = None
        self._stopping = False
        self._postgres = engine.dialect.name == "postgresql"
        self._isolated = not self._postgres
        """Whether a group's jobs run in savepoints from the start (see the module's docstring)."""
        self.changes_committed = 0
        """Changes (``store.changes``) the committed groups recorded: the outbox publisher looks for news here."""

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="storage-single-writer")

    async def stop(self) -> None:
        """Finish what is queued, then close the connection."""
        self._stopping = True
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close_connection()

    async def submit(self, job: WriteJob[T]) -> T:
        """Queue a job and wait until the transaction holding it committed (or failed)."""
        if self._stopping or self._task is None:
            raise WriterStopped("the storage worker is stopping, retry later")
        pending = _Pending(job)
        self._queue.put_nowait(pending)
        self._arrived.set()
        return await asyncio.shield(pending.future)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            self._take_queued(batch)
            if self._gather_s and self._busy is not None:
                await self._gather(batch)
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _take_queued(self, batch: list[_Pending]) -> None:
        while len(batch) < self._batch_max and not self._queue.empty():
            batch.append(self._queue.get_nowait())

    async def _gather(self, batch: list[_Pending]) -> None:
        """Under load, hold the group open a moment for the writes of commands the worker already holds.

        A group's commit has a fixed cost (BEGIN, COMMIT, the fsync, two thread switches) that a group of one
        pays alone. When more commands are in the worker than in the group (``busy``), their writes are
        usually a loop turn or a delivery away: waiting up to ``gather_s`` for them makes one commit serve
        them all. A lone command (an agent waiting on its answer) never waits.
        """
        assert self._busy is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._gather_s
        while len(batch) < self._batch_max and self._busy() > len(batch):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                return
            finally:
                self._take_queued(batch)

    async def _connection(self) -> AsyncConnection:
        if self._conn is not None and not seems_open(self._conn):  # the server restarted since the last group
            await self._close_connection()
        if self._conn is None:
            self._conn = await self._engine.connect()
            await unlimited(self._conn)  # a pooled connection may have served reads, under their time limit
        return self._conn

    async def _close_connection(self) -> None:
        if self._conn is not None:
            try:
                await self._conn.close()
            except Exception:
                log.debug("closing the writer connection failed", exc_info=True)
            self._conn = None

    async def _commit(self, batch: list[_Pending], attempt: int = 1, *, patient: bool = False) -> None:
        try:
            try:
                outcomes, deferred = await self._attempt(batch, patient=patient, isolated=self._isolated)
            except _OneByOne as rerun:
                if rerun.alone is not None:  # a group of one: rolled back, its failure is its outcome
                    outcomes, deferred = [rerun.alone], []
                else:
                    outcomes, deferred = await self._attempt(batch, patient=patient, isolated=True)
        except Exception as exc:
            if not is_conflict(exc) or attempt >= CONFLICT_ATTEMPTS:
                self._fail(batch, exc)
                await self._close_connection()
                return
            # Another worker's transaction and ours waited on each other (or a serializable read failed):
            # the database rolled ours back whole, so running the jobs again is safe. Halves hold fewer rows
            # at once, so they rarely meet the same cycle again; a single job retries after a short pause.
            log.info("write batch of %d rolled back by a conflict, retrying", len(batch))
            await asyncio.sleep(random.uniform(0, CONFLICT_BACKOFF_S * attempt))
            if len(batch) == 1:
                await self._commit(batch, attempt + 1, patient=patient)
            else:
                await self._commit(batch[: len(batch) // 2], attempt, patient=patient)
                await self._commit(batch[len(batch) // 2 :], attempt, patient=patient)
            return
        if self._on_batch is not None:
            self._on_batch(len(outcomes))
        for pending, ok, value in outcomes:
            _settle(pending.future, ok, value)
        if deferred:  # our locks are released now: those jobs wait for the other worker as long as it takes
            await self._commit(deferred, attempt, patient=True)

    async def _attempt(
        self, batch: list[_Pending], *, patient: bool, isolated: bool
    ) -> tuple[list[tuple[_Pending, bool, Any]], list[_Pending]]:
        """The group in one transaction: each job in a savepoint (``isolated``), or all or nothing."""
        outcomes: list[tuple[_Pending, bool, Any]] = []
        deferred: list[_Pending] = []
        conn = await self._connection()
        # PostgreSQL: how long a job may wait for another worker's row, set by the statement that begins the
        # group's transaction (no round trip of its own). Patient groups wait as long as it takes.
        lock_wait = f"SET LOCAL lock_timeout = {0 if patient else LOCK_WAIT_MS}" if self._postgres else None
        changes = conn.info[PENDING] = PendingChanges()
        try:
            async with group_transaction(conn, begin_with=lock_wait) as savepoints:
                if not isolated:
                    outcomes = await self._all_or_nothing(batch, conn, changes)
                else:
                    for pending in batch:
                        mark = changes.mark()
                        savepoint = await savepoints.open()
                        try:
                            result = await pending.job(conn)
                        except Exception as exc:
                            await savepoint.rollback()
                            changes.drop_after(mark)  # its changes go with its effects
                            if not patient and is_lock_timeout(exc):
                                deferred.append(pending)  # a row another worker holds: step aside, do the rest first
                                continue
                            if translate_db_error(exc) is not None:
                                raise
                            outcomes.append((pending, False, translate_value_error(exc) or exc))
                        else:
                            await savepoint.release()
                            outcomes.append((pending, True, result))
                    await changes.flush(conn)
        finally:
            conn.info.pop(PENDING, None)
        self.changes_committed += changes.flushed  # the group committed: its changes wait to be published
        return outcomes, deferred

    async def _all_or_nothing(
        self, batch: list[_Pending], conn: AsyncConnection, changes: PendingChanges
    ) -> list[tuple[_Pending, bool, Any]]:
        """Every job, then the rows they deferred (``deferred.GroupRows``), then their changes (last: see
        ``store.changes``); any failure rolls all of it back."""
        outcomes: list[tuple[_Pending, bool, Any]] = []
        if len(batch) > 1:  # one job's rows go in as they come: gathering them would only add the flush's cost
            conn.info[GROUP_ROWS] = GroupRows()
        try:
            for pending in batch:
                outcomes.append((pending, True, await pending.job(conn)))
            if (rows := conn.info.get(GROUP_ROWS)) is not None:
                await rows.flush(conn)
            await changes.flush(conn)
        except Exception as exc:
            if translate_db_error(exc) is not None:
                raise  # the database failed, or a conflict rolled the whole transaction back
            if len(batch) == 1 and not is_lock_timeout(exc):  # run alone it would fail the same way
                raise _OneByOne((batch[0], False, translate_value_error(exc) or exc)) from exc
            raise _OneByOne from exc  # rolls the group back; its jobs run again, each isolated
        finally:
            conn.info.pop(GROUP_ROWS, None)
        return outcomes

    def _fail(self, batch: list[_Pending], exc: Exception) -> None:
        unavailable = translate_db_error(exc)
        if unavailable is None:
            log.exception("write batch of %d failed", len(batch), exc_info=exc)
            unavailable = Unavailable("write failed, retry later", {"reason": type(exc).__name__})
        else:
            log.warning("database unavailable, %d writes refused: %s", len(batch), unavailable.details)
        for pending in batch:
            _settle(pending.future, False, unavailable)


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value if isinstance(value, BaseException) else StorageError(str(value)))
