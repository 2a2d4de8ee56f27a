"""The cleanup registry and runner: one function per ``CleanupScope``, each working in bounded batches.

A scope function gets a ``CleanupRun`` and returns how many items it removed or changed (or, in a dry
run, would have). It must not hold the single writer for long: every batch is its own short job through
``run.write`` (``services.writer.submit``), so commands queued meanwhile commit between two batches.
Other domains add their scope the same way the built-in ones do::

    from service.maintenance import CleanupRun, register_scope

    async def expired_memory(run: CleanupRun) -> int: ...

    register_scope(CleanupScope.EXPIRED_MEMORY, expired_memory)

Registration happens at import; ``run_cleanup`` imports ``service.handlers`` (every domain's module)
first, so a scope registered beside its handlers is always known.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import CleanupScope, Unimplemented, utc_now
from service.core.context import Services
from service.files import FileStore
from service.settings import Settings
from service.store.engine.db import read_connection

log = logging.getLogger(__name__)

T = TypeVar("T")

ORDER: tuple[CleanupScope, ...] = (
    CleanupScope.EXPIRED_ARTIFACTS,
    CleanupScope.EXPIRED_THREADS,
    CleanupScope.EXPIRED_MEMORY,
    CleanupScope.PURGE_DELETED,
    CleanupScope.MISSING_FILES,
    CleanupScope.STALE_UPLOADING,
    CleanupScope.TEMP_ORPHANS,
    CleanupScope.ORPHAN_FILES,
    CleanupScope.OLD_ORPHANS,
    CleanupScope.INBOX,
)
"""Run order of a full cleanup: missing files are repaired from temp/ before old temp files are swept."""

TEMP_MAX_AGE = timedelta(hours=1)
ORPHAN_FILE_MIN_AGE = timedelta(hours=24)
ORPHAN_KEEP = timedelta(days=7)
STALE_UPLOADING_AGE = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class CleanupRun:
    """What a scope function works with: the worker's stores, the run's clock and its limits."""

    services: Services
    now: datetime
    dry_run: bool
    batch: int

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def files(self) -> FileStore:
        return self.services.files

    def read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return read_connection(self.services.engine)

    async def write(self, job: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """One short transaction through the single writer (never hold it across batches)."""
        result = await self.services.writer.submit(job)
        await asyncio.sleep(0)  # let commands that arrived meanwhile reach the writer before the next batch
        return result

    async def repeat(self, job: Callable[[AsyncConnection], Awaitable[int]]) -> int:
        """Run a batch job until it reports fewer than ``batch`` items; the total it reported."""
        total = 0
        while True:
            done = await self.write(job)
            total += done
            if done < self.batch:
                return total


ScopeFn = Callable[[CleanupRun], Awaitable[int]]

_SCOPES: dict[CleanupScope, ScopeFn] = {}
_RUNNING = asyncio.Lock()


def register_scope(scope: CleanupScope, fn: ScopeFn) -> None:
    """Make ``fn`` the implementation of ``scope`` (a later registration replaces an earlier one)."""
    _SCOPES[CleanupScope(scope)] = fn


def registered_scopes() -> list[CleanupScope]:
    _load_domains()
    return [scope for scope in ORDER if scope in _SCOPES] + sorted(set(_SCOPES) - set(ORDER))


def _load_domains() -> None:
    importlib.import_module("service.handlers")


async def run_cleanup(
    services: Services,
    scopes: Iterable[CleanupScope] | None = None,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> dict[str, int]:
    """Run the given scopes (all registered ones when None) one after another; counts per scope.

    One cleanup at a time per process: the periodic run, the admin action and the CLI queue up rather
    than race each other over the same rows and files.
    """
    available = registered_scopes()
    if scopes is None:
        chosen = available
    else:
        wanted = list(dict.fromkeys(CleanupScope(s) for s in scopes))
        missing = [s.value for s in wanted if s not in _SCOPES]
        if missing:
            raise Unimplemented(
                f"cleanup scope {', '.join(missing)} is not served by this worker",
                {"field": "scopes", "unsupported": missing, "supported": [s.value for s in available]},
            )
        chosen = [s for s in available if s in wanted]
    counts: dict[str, int] = {}
    async with _RUNNING:
        run = CleanupRun(services, now or utc_now(), dry_run, services.settings.cleanup_batch)
        for scope in chosen:
            started = time.monotonic()
            counts[scope.value] = await _SCOPES[scope](run)
            if counts[scope.value]:
                log.info(
                    "cleanup %s: %s %d in %.2fs",
                    scope.value,
                    "would handle" if dry_run else "handled",
                    counts[scope.value],
                    time.monotonic() - started,
                )
            if not dry_run:
                from service.ops.metrics import record_cleanup  # here: metrics imports the handlers, which import us

                record_cleanup(services, scope.value, counts[scope.value])
    return counts
