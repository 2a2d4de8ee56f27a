"""Replay: send the buffered commands again, oldest first, each removed only once the worker answered.

A command goes out exactly as it was spilled (same envelope id and idempotency key, no ``expiration``),
so whatever the worker already executed comes back as its stored reply instead of a second effect.
RESULT → the file is removed. An ERROR that retrying cannot cure → the file moves to ``failed/`` with the
error. The service being unreachable, overloaded or slow → the pass stops there and resumes later, so
order is kept. Only the holder of the buffer's replay lock replays.

A registration kept with a copy of its file gets the file put back first when the staged one is gone (the
worker's cleanup moves temp files older than an hour): see ``buffer.restage``. A copy that turns out damaged
sends its command to ``quarantine/`` instead of a replay that could only fail.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from buffer.restage import CopyDamaged, StorageFiles
from buffer.spill import SpillBuffer
from contracts import CommandEnvelope, ErrorCode, ErrorEnvelope, ResultEnvelope, StorageError

log = logging.getLogger(__name__)

Send = Callable[[CommandEnvelope], Awaitable[ResultEnvelope | ErrorEnvelope]]
Progress = Callable[[int, int], None]
"""Called with (items settled so far, items at the start of the pass)."""

STOP_CODES = frozenset({ErrorCode.UNAVAILABLE, ErrorCode.DEADLINE_EXCEEDED, ErrorCode.RESOURCE_EXHAUSTED})
"""Errors that say "not now" rather than "never": replay stops and tries again later."""


@dataclass(frozen=True, slots=True)
class ReplayReport:
    sent: int = 0
    """Commands the worker answered with RESULT (executed now or before): removed from the buffer."""
    failed: int = 0
    """Commands the worker refused for good: moved to ``failed/``."""
    remaining: int = 0
    stopped: StorageError | None = None
    """Why the pass stopped early (the service is unavailable); None when it got through."""
    busy: bool = False
    """Another client holds the replay lock; this one did nothing."""

    @property
    def complete(self) -> bool:
        return not self.busy and self.stopped is None


class Replayer:
    def __init__(self, buffer: SpillBuffer, send: Send, files: StorageFiles | None = None) -> None:
        self.buffer = buffer
        self.send = send
        self.files = files
        """Where buffered registrations' files are put back from their copies; None: sent as they are."""

    async def run(self, *, progress: Progress | None = None) -> ReplayReport:
        with self.buffer.replay_lock() as mine:
            if not mine:
                remaining = len(await asyncio.to_thread(self.buffer.entries))
                return ReplayReport(remaining=remaining, busy=True)
            return await self._pass(progress)

    async def _pass(self, progress: Progress | None) -> ReplayReport:
        entries = await asyncio.to_thread(self.buffer.entries)
        sent = failed = 0
        stopped: StorageError | None = None
        for settled, entry in enumerate(entries, start=1):
            item = await asyncio.to_thread(self.buffer.load, entry)
            restaged = False
            if item is not None and item.blob is not None and self.files is not None:
                try:
                    restaged = await asyncio.to_thread(self.files.ensure, item)
                except CopyDamaged as exc:
                    await asyncio.to_thread(self.buffer.quarantine, item, str(exc))
                    item = None
                except StorageError as exc:  # the storage root is out of reach: the worker could not read it
                    stopped = exc
                    break
                if restaged:
                    self.buffer.counters.restaged += 1
            if item is not None:
                try:
                    reply = await self.send(item.envelope)
                except StorageError as exc:  # no answer (or an unreadable one): try this item again later
                    stopped = exc
                    break
                if isinstance(reply, ResultEnvelope):
                    if restaged and self.files is not None:
                        await asyncio.to_thread(self.files.discard_leftover, item, reply.data.output)
                    await asyncio.to_thread(self.buffer.remove, item)
                    sent += 1
                else:
                    error = reply.data.error
                    if error.code in STOP_CODES and error.retryable:
                        stopped = StorageError.from_wire(error.code, error.message, error.details, error.retryable)
                        break
                    await asyncio.to_thread(self.buffer.fail, item, error.model_dump(mode="json"))
                    failed += 1
            if progress is not None:
                progress(settled, len(entries))
        remaining = len(await asyncio.to_thread(self.buffer.entries))
        if sent or failed or stopped:
            log.info(
                "buffer replay: %d sent, %d failed, %d remaining%s",
                sent,
                failed,
                remaining,
                f" (stopped: {stopped.message})" if stopped else "",
            )
        return ReplayReport(sent=sent, failed=failed, remaining=remaining, stopped=stopped)
