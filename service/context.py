"""What a handler gets besides its params: who asks, a read connection, the writer, the files.

Handlers know nothing of AMQP. ``write`` is the commit point: the pipeline wraps the job so the inbox
record of the command commits in the same transaction as its effect.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts import utc_now
from service.faults import FaultHooks
from service.files import FileStore
from service.settings import Settings
from service.store.db import read_connection
from service.store.lookups import PointLookups
from service.store.writer import SingleWriter

if TYPE_CHECKING:
    from service.recording import Recorder

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
        """Commit ``job`` through the single writer; with a recorder, the inbox record commits with it."""
        if self.recorder is None:
            return await self.services.writer.submit(job)
        if self.services.faults.raises_in(self.recorder.action):
            job = _failing(job, self.services.faults, self.recorder.action)
        return await self.recorder.write(self.services.writer, job)


def _failing(
    job: Callable[[AsyncConnection], Awaitable[T]], faults: FaultHooks, action: str
) -> Callable[[AsyncConnection], Awaitable[T]]:
    """The job, then the injected exception (``STORAGE_FAULTS=raise_in:<action>``): its effect must roll back."""

    async def failing(conn: AsyncConnection) -> T:
        await job(conn)
        faults.fail(action)

    return failing
