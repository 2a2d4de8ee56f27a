"""The worker's maintenance life cycle: recovery before consuming, then a cleanup every interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from contracts import StorageError
from service.maintenance.cleanup import run_cleanup
from service.maintenance.recovery import recover

if TYPE_CHECKING:
    from service.transport.worker import Worker

log = logging.getLogger(__name__)


class Maintenance:
    """Hooked into a Worker: ``on_started`` runs recovery and starts the timer, ``on_stopping`` stops it."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self.last_counts: dict[str, int] | None = None
        """What the last periodic cleanup did (None before the first one)."""
        self.runs = 0
        self.ran = asyncio.Condition()
        """Notified after every periodic run, so a caller can wait for the next one instead of sleeping."""
        self.recovered: dict[str, int] | None = None
        """What startup recovery did."""

    async def start(self, worker: Worker) -> None:
        assert worker.services is not None
        self.recovered = await recover(worker.services)
        interval = worker.settings.cleanup_interval_s
        if interval > 0:
            self._task = asyncio.create_task(self._every(worker, interval), name="storage-periodic-cleanup")

    async def stop(self, worker: Worker) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _every(self, worker: Worker, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            assert worker.services is not None
            try:
                self.last_counts = await run_cleanup(worker.services)
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


def install(worker: Worker) -> Maintenance:
    maintenance = Maintenance()
    worker.on_started.append(maintenance.start)
    worker.on_stopping.append(maintenance.stop)
    return maintenance
