"""What a handler gets besides its params: who asks, a read connection, the writer, the files.

Handlers know nothing of AMQP. ``write`` is the commit point: the pipeline wraps the job so the inbox
record of the command commits in the same transaction as its effect. It is also where the command's own
``timeout_seconds`` stops applying: a write that starts in time runs to its end, post-commit work included.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts import DeadlineExceeded, utc_now
from service.faults import FaultHooks
from service.files import FileStore
from service.settings import Settings
from service.store.engine.db import read_connection
from service.store.engine.lookups import PointLookups
from service.store.engine.writer import SingleWriter

if TYPE_CHECKING:
    from service.core.recording import Recorder

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Requester:
    """The identity a command acts as; ``id`` None is anonymous (sees only public data)."""

    id: str | None
    trace_id: str | None = None
    is_admin: bool = False


SYSTEM = Requester(id=None, is_admin=True)
"""The CLI and the periodic jobs: admin rights, no identity."""


@dataclass(slots=True)
class Services:
    """The long-lived parts every command shares."""

    settings: Settings
    engine: AsyncEngine
    writer: SingleWriter
    files: FileStore
    faults: FaultHooks = field(default_factory=FaultHooks)
    started_monotonic: float = field(default_factory=time.monotonic)
    lookups: PointLookups | None = None
    """Held for point lookups on SQLite (started by the worker); without it lookups use the pool."""

    def lookup(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for point lookups only (statements marked with ``point_lookup``)."""
        if self.lookups is None:
            return read_connection(self.engine)
        return self.lookups.connection()


@dataclass(slots=True)
class HandlerContext:
    services: Services
    requester: Requester
    now: datetime = field(default_factory=utc_now)
    recorder: Recorder | None = None
    deadline: asyncio.Timeout | None = None
    """The command's ``timeout_seconds``, as the ``asyncio.timeout`` the pipeline runs the handler under."""

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def files(self) -> FileStore:
        return self.services.files

    def read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return read_connection(self.services.engine)

    def lookup(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """For point lookups only: on SQLite the worker's held connection, run on the event loop."""
        return self.services.lookup()

    async def write(self, job: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Commit ``job`` through the single writer; with a recorder, the inbox record commits with it.

        Under a deadline the job first checks it, inside the writer: run out (the handler was told
        DEADLINE_EXCEEDED while the job waited in the queue) → it raises, its savepoint rolls back and
        nothing commits; still running → it disarms it, and the command runs to its end whatever the clock.
        """
        if self.deadline is not None:
            job = _within(job, self.deadline)
        if self.recorder is None:
            return await self.services.writer.submit(job)
        if self.services.faults.raises_in(self.recorder.action):
            job = _failing(job, self.services.faults, self.recorder.action)
        return await self.recorder.write(self.services.writer, job)


def _within(
    job: Callable[[AsyncConnection], Awaitable[T]], deadline: asyncio.Timeout
) -> Callable[[AsyncConnection], Awaitable[T]]:
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


def _failing(
    job: Callable[[AsyncConnection], Awaitable[T]], faults: FaultHooks, action: str
) -> Callable[[AsyncConnection], Awaitable[T]]:
    """The job, then the injected exception (``STORAGE_FAULTS=raise_in:<action>``): its effect must roll back."""

    async def failing(conn: AsyncConnection) -> T:
        await job(conn)
        faults.fail(action)

    return failing
