"""Replay: send the buffered commands again, oldest first, each removed only once the worker answered.

A command goes out exactly as it was spilled (same envelope id and idempotency key, no ``expiration``),
so whatever the worker already executed comes back as its stored reply instead of a second effect.
RESULT → the file is removed. An ERROR that retrying cannot cure → the file moves to ``failed/`` with the
error. The service being unreachable, overloaded or slow → the pass stops there and resumes later, so
order is kept. Only the holder of the buffer's replay lock replays.

A registration kept with a copy of its file gets the file put back first when the staged one is gone (the
worker's cleanup moves temp files older than an hour): see ``buffer.restage``. A copy that turns out damaged
sends its command to ``quarantine/`` instead of a replay that could only fail. If the worker answers that
the file was not found anyway (it had executed a queued copy of the envelope while the file was away and
keeps that answer), the file is put back and the registration goes again under a new envelope id and
idempotency key: the artifact id, which the worker never registers twice, keeps it exactly once.

A command spilled with an AMQP ``user_id`` is replayed only by a client connected as that same broker user
(and one spilled without it only by a client that sends none): sent under another identity it would run as
someone else, with other rights and outside the first attempt's deduplication. Any other item is skipped
and left for its own client (one buffer directory per identity is the intended setup).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from buffer.restage import CopyDamaged, StorageFiles
from buffer.spill import Item, SpillBuffer
from contracts import CommandEnvelope, ErrorCode, ErrorEnvelope, ResultEnvelope, StorageError, new_id, utc_now

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
    skipped: int = 0
    """Commands spilled under another broker identity (``user_id``): left pending for a client of that identity."""

    @property
    def complete(self) -> bool:
        return not self.busy and self.stopped is None


class Replayer:
    def __init__(
        self, buffer: SpillBuffer, send: Send, files: StorageFiles | None = None, *, user_id: str | None = None
    ) -> None:
        self.buffer = buffer
        self.send = send
        self.files = files
        """Where buffered registrations' files are put back from their copies; None: sent as they are."""
        self.user_id = user_id
        """The AMQP ``user_id`` ``send`` publishes with: only items spilled with the same one are replayed."""

    async def run(self, *, progress: Progress | None = None) -> ReplayReport:
        with self.buffer.replay_lock() as mine:
            if not mine:
                remaining = len(await asyncio.to_thread(self.buffer.entries))
                return ReplayReport(remaining=remaining, busy=True)
            return await self._pass(progress)

    async def _pass(self, progress: Progress | None) -> ReplayReport:
        entries = await asyncio.to_thread(self.buffer.entries)
        sent = failed = skipped = 0
        stopped: StorageError | None = None
        for settled, entry in enumerate(entries, start=1):
            item = await asyncio.to_thread(self.buffer.load, entry)
            if item is not None and item.user_id != self.user_id:
                skipped += 1
            elif item is not None:
                try:
                    reply = await self._deliver(item)
                except CopyDamaged as exc:
                    await asyncio.to_thread(self.buffer.quarantine, item, str(exc))
                    reply = None
                except StorageError as exc:  # no answer, or the storage root is out of reach: try again later
                    stopped = exc
                    break
                if reply is None:
                    pass
                elif isinstance(reply, ResultEnvelope):
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
        if sent or failed or stopped or skipped:
            log.info(
                "buffer replay: %d sent, %d failed, %d remaining%s%s",
                sent,
                failed,
                remaining,
                f" ({skipped} spilled under another broker user_id, left for it)" if skipped else "",
                f" (stopped: {stopped.message})" if stopped else "",
            )
        return ReplayReport(sent=sent, failed=failed, remaining=remaining, stopped=stopped, skipped=skipped)

    async def _deliver(self, item: Item) -> ResultEnvelope | ErrorEnvelope:
        """Send one item, its file put back first when it has a copy and the staged file is gone."""
        restaged = await self._put_back(item)
        reply = await self.send(item.envelope)
        if isinstance(reply, ErrorEnvelope) and self._file_was_missing(item, reply):
            # A copy of this envelope reached the worker while the file was gone (it sat in the queue through a
            # second long outage, say), and the worker keeps that answer for its idempotency key. With the file
            # back, register it under a new envelope: the artifact id still makes it happen once.
            restaged = await self._put_back(item) or restaged
            fresh = _fresh(item.envelope)
            log.warning(
                "buffer: %s answered NOT_FOUND for its file; sending it again with the file back as %s",
                item.envelope.id,
                fresh.id,
            )
            reply = await self.send(fresh)
        if isinstance(reply, ResultEnvelope) and restaged and self.files is not None:
            await asyncio.to_thread(self.files.discard_leftover, item, reply.data.output)
        return reply

    async def _put_back(self, item: Item) -> bool:
        if item.blob is None or self.files is None:
            return False
        restaged = await asyncio.to_thread(self.files.ensure, item)
        if restaged:
            self.buffer.counters.restaged += 1
        return restaged

    def _file_was_missing(self, item: Item, reply: ErrorEnvelope) -> bool:
        error = reply.data.error
        return (
            error.code == ErrorCode.NOT_FOUND
            and "uri" in error.details
            and item.blob is not None
            and self.files is not None
            and self.files.can_put_back(item)
        )


def _fresh(envelope: CommandEnvelope) -> CommandEnvelope:
    """The same command under a new envelope id and idempotency key."""
    data = envelope.data.model_copy(update={"idempotency_key": new_id()})
    return envelope.model_copy(update={"id": new_id(), "time": utc_now(), "data": data})
