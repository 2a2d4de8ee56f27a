"""What a handler or a cleanup scope gets besides its params: who asks, the clock, reads, the writer, the files.

Handlers know nothing of AMQP. ``commit`` is a command's commit point: with a recorder, the inbox record of
the command commits in the same transaction as its effect, and the reply built there is the one published.
It is also where the command's own ``timeout_seconds`` stops applying: a commit that starts in time runs to
its end, post-commit work included. ``write`` is a plain short transaction (cleanup batches, imports).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts import DeadlineExceeded, StorageError, utc_now
from service.core.recording import Committed, Recorder
from service.faults import FaultHooks
from service.files import FileStore
from service.identity import SYSTEM, Requester
from service.settings import Settings
from service.store.engine.db import read_connection
from service.store.engine.lock import DatabaseLock
from service.store.engine.lookups import PointLookups
from service.store.engine.writer import SingleWriter

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[AsyncConnection], Awaitable[T]]


@dataclass(slots=True)
class Services:
    """The long-lived parts every command shares, built once by ``service.bootstrap``."""

    settings: Settings
    engine: AsyncEngine
    writer: SingleWriter
    files: FileStore
    faults: FaultHooks = field(default_factory=FaultHooks)
    started_monotonic: float = field(default_factory=time.monotonic)
    lookups: PointLookups | None = None
    """Connections held for point lookups and reads (started by the worker); without it, the pool's."""
    lock: DatabaseLock | None = None
    """The embedded database's file lock, held while these services are open."""
    on_cleanup: list[Callable[[str, int], None]] = field(default_factory=list)
    """Told ``(scope, count)`` after every cleanup scope that changed something (metrics count it)."""
    on_verified: list[Callable[[str, int, int], None]] = field(default_factory=list)
    """Told ``(result, files, bytes)`` after every batch the scrubber checked: result ``ok``, ``corrupted`` or
    ``missing`` (metrics count it)."""

    def lookup(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for point lookups only (statements marked with ``point_lookup``)."""
        if self.lookups is None:
            return read_connection(self.engine)
        return self.lookups.connection()

    def read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for any read, under the read limit (``STORAGE_READ_TIMEOUT_MS``)."""
        if self.lookups is None:
            return read_connection(self.engine)
        return self.lookups.reads()


@dataclass(slots=True)
class HandlerContext:
    """One command's (or one cleanup run's) view of the services."""

    services: Services
    requester: Requester = SYSTEM
    now: datetime = field(default_factory=utc_now)
    recorder: Recorder | None = None
    deadline: asyncio.Timeout | None = None
    """The command's ``timeout_seconds``, as the ``asyncio.timeout`` the pipeline runs the handler under."""
    dry_run: bool = False
    """A cleanup run that only counts what it would do."""

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def files(self) -> FileStore:
        return self.services.files

    @property
    def batch(self) -> int:
        """How many rows or files one cleanup batch handles (``STORAGE_CLEANUP_BATCH``)."""
        return self.services.settings.cleanup_batch

    def read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self.services.read()

    def lookup(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """For point lookups only: on SQLite the worker's held connection, run on the event loop."""
        return self.services.lookup()

    async def write(self, job: Job[T]) -> T:
        """One short transaction through the single writer, unrecorded: a cleanup batch, an import step.

        The loop turns once after it, so commands that arrived meanwhile reach the writer before the next batch.
        """
        result = await self.services.writer.submit(job)
        await asyncio.sleep(0)
        return result

    async def repeat(self, job: Job[int]) -> int:
        """Run a batch job until it reports fewer than ``batch`` items; the total it reported."""
        total = 0
        while True:
            done = await self.write(job)
            total += done
            if done < self.batch:
                return total

    async def commit(self, job: Job[T], *, then: Callable[[T], Awaitable[None]] | None = None) -> Committed[T]:
        """The command's commit point: ``job`` through the single writer, with its inbox record when recorded.

        ``then`` is the work that follows the commit (moving a file into place, retiring one): it may fail
        (a storage outage) without changing the answer, since the commit stands and recovery or cleanup
        finishes what it left; the failure is logged and the committed reply is still the command's reply.

        Under a deadline the job first checks it, inside the writer: run out (the handler was told
        DEADLINE_EXCEEDED while the job waited in the queue) → it raises, its savepoint rolls back and
        nothing commits; still running → it disarms it, and the command runs to its end whatever the clock.
        """
        if self.deadline is not None:
            job = _within(job, self.deadline)
        if self.recorder is None:
            committed = Committed(await self.services.writer.submit(job))
        else:
            if self.services.faults.raises_in(self.recorder.action):
                job = _failing(job, self.services.faults, self.recorder.action)
            committed = await self.recorder.write(self.services.writer, job)
        if then is not None:
            try:
                await then(committed.output)
            except StorageError as exc:
                log.warning(
                    "committed; what follows the commit failed and is left to recovery: %s %s", exc, exc.details
                )
        return committed


def _within(job: Job[T], deadline: asyncio.Timeout) -> Job[T]:
    """The job, if it starts before ``deadline`` fired; from its start on, the deadline no longer cancels.

    Both happen on the event loop, so "fired" and "started" never overlap: the timeout either cancelled the
    handler before the writer reached the job (the job refuses) or finds itself disarmed. A job the writer
    runs again (a conflict rolled its group back) finds the deadline disarmed and runs again.
    """

    async def within(conn: AsyncConnection) -> T:
        if not deadline.expired():
            try:
                deadline.reschedule(None)
            except RuntimeError:  # the handler left its timeout some other way: nobody waits for this write
                pass
            else:
                return await job(conn)
        raise DeadlineExceeded("the command's own timeout ran out before its write could start")

    return within


def _failing(job: Job[T], faults: FaultHooks, action: str) -> Job[T]:
    """The job, then the injected exception (``STORAGE_FAULTS=raise_in:<action>``): its effect must roll back."""

    async def failing(conn: AsyncConnection) -> T:
        await job(conn)
        faults.fail(action)

    return failing
