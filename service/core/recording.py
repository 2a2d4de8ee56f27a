"""Exactly-once effects: the inbox record of a write command commits in the same savepoint as its effect."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import Aborted, InvalidArgument, Output
from service.core.replies import result_reply
from service.store import inbox
from service.store.engine.db import read_connection
from service.store.engine.writer import SingleWriter
from service.store.inbox import StoredReply

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Committed(Generic[T]):
    """A command's committed output and, when the command is recorded, the reply stored with it.

    A handler returns it as it is (after any post-commit work): the stored reply is then exactly what is
    published, and what a replay of the command answers byte for byte.
    """

    output: T
    reply: StoredReply | None = None


class Duplicate(Exception):
    """The command was executed before; its stored reply is the answer."""

    def __init__(self, reply: StoredReply) -> None:
        super().__init__(reply.reply_id)
        self.reply = reply


class _TwinCommitted(Exception):
    """The inbox already holds this command: its effect here is rolled back with the job's savepoint."""


@dataclass(slots=True)
class Recorder:
    """Bound to one command: its envelope id, action, idempotency key, request hash and requester."""

    envelope_id: str
    action: str
    idempotency_key: str | None
    req_hash: str
    started: float
    requester: str = inbox.ANONYMOUS

    def check_stored(self, stored: StoredReply | None) -> StoredReply | None:
        """The stored reply that answers this command: the same requester sent the same request before.

        The same envelope id (or idempotency key) with another action or other params is an error, never
        an answer: a replay must ask for exactly what was executed.
        """
        if stored is None or stored.request_hash == self.req_hash:
            return stored
        if stored.envelope_id == self.envelope_id:
            raise InvalidArgument(
                "envelope id was already used for another command by this requester",
                {"reason": "envelope_id_reused", "envelope_id": self.envelope_id},
            )
        raise InvalidArgument(
            "idempotency_key was already used with different params",
            {"reason": "idempotency_key_reused", "idempotency_key": self.idempotency_key},
        )

    async def lookup(self, conn: AsyncConnection) -> StoredReply | None:
        found = await inbox.find(conn, self.requester, self.envelope_id, self.action, self.idempotency_key)
        return self.check_stored(found)

    async def _insert(self, conn: AsyncConnection, reply: StoredReply) -> bool:
        return await inbox.record(
            conn,
            requester=self.requester,
            envelope_id=self.envelope_id,
            action=self.action,
            idempotency_key=self.idempotency_key,
            req_hash=self.req_hash,
            reply=reply,
        )

    async def _stored_after_conflict(self, conn: AsyncConnection) -> StoredReply:
        """The reply that beat us to the inbox row (it committed: a conflict only ever waits for a commit)."""
        if (existing := await self.lookup(conn)) is None:  # purged in between: let the sender try again
            raise Aborted("the command raced with another execution of it, retry", {"envelope_id": self.envelope_id})
        return existing

    async def write(self, writer: SingleWriter, job: Callable[[AsyncConnection], Awaitable[T]]) -> Committed[T]:
        """Run ``job`` and insert the inbox row with its reply, both in the writer's savepoint for the job.

        One insert, last: if a twin of this command (the same envelope id or idempotency key) committed
        first, or ran earlier in the same group, the insert finds its row, and raising here rolls this run's
        effect back with the savepoint; the twin's stored reply is the answer (``Duplicate``). On PostgreSQL
        the insert of a twin still running on another worker waits for that worker's commit. A job that
        raises commits nothing; the pipeline stores a non-retryable error as the reply afterwards.
        """

        async def recorded(conn: AsyncConnection) -> Committed[T]:
            output = await job(conn)
            if not isinstance(output, Output):
                raise TypeError(f"a recorded write must return the action's output, got {type(output).__name__}")
            reply = result_reply(output, self.started)
            if not await self._insert(conn, reply):
                raise _TwinCommitted
            return Committed(output, reply)

        try:
            return await writer.submit(recorded)
        except _TwinCommitted:
            async with read_connection(writer.engine) as conn:
                raise Duplicate(await self._stored_after_conflict(conn)) from None

    async def record(self, writer: SingleWriter, reply: StoredReply) -> StoredReply:
        """Store the reply of a write that committed nothing else (a refusal, an already-present artifact)."""

        async def job(conn: AsyncConnection) -> StoredReply:
            if await self._insert(conn, reply):
                return reply
            return await self._stored_after_conflict(conn)

        return await writer.submit(job)
