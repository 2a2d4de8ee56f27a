"""The worker's maintenance life cycle: recovery before consuming, then a cleanup every interval.

``service.bootstrap`` hooks ``start`` and ``stop`` into the worker's start and stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from contracts import StorageError
from service.core.context import Services
from service.maintenance.cleanup import run_cleanup
from service.maintenance.recovery import recover

log = logging.getLogger(__name__)


class Maintenance:
    """Recovery and the timer at ``start``; ``stop`` cancels the timer."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self.last_counts: dict[str, int] | None = None
        """What the last periodic cleanup did (None before the first one)."""
        self.runs = 0
        self.ran = asyncio.Condition()
        """Notified after every periodic run, so a caller can wait for the next one instead of sleeping."""
        self.recovered: dict[str, int] | None = None
        """What startup recovery did."""
        self._rescheduled = asyncio.Event()

    async def start(self, services: Services) -> None:
        self.recovered = await recover(services)
        self._task = asyncio.create_task(self._every(services), name="storage-periodic-cleanup")

    def reschedule(self) -> None:
        """The interval changed (a CONTROL ``config`` signal): the timer starts over with the new one."""
        self._rescheduled.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _every(self, services: Services) -> None:
        """Every ``cleanup_interval_s`` (read anew after each run or change; 0: wait for a change)."""
        while True:
            interval_s = services.settings.cleanup_interval_s
            self._rescheduled.clear()
            try:
                async with asyncio.timeout(interval_s if interval_s > 0 else None):
                    await self._rescheduled.wait()
                continue
            except TimeoutError:
                pass
            try:
                self.last_counts = await run_cleanup(services)
            except StorageError as exc:
                log.warning("periodic cleanup failed, next try in %.0fs: %s %s", interval_s, exc.message, exc.details)
            except Exception:
                log.exception("periodic cleanup failed, next try in %.0fs", interval_s)
            else:
                done = {scope: count for scope, count in self.last_counts.items() if count}
                log.info("periodic cleanup done: %s", done or "nothing to clean")
            async with self.ran:
                self.runs += 1
                self.ran.notify_all()

    async def wait_for_run(self, after: int) -> int:
        """Wait until more than ``after`` periodic runs have finished; returns the run count."""
        async with self.ran:
            await self.ran.wait_for(lambda: self.runs > after)
            return self.runs
