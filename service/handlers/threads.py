"""Thread actions: incremental save with optimistic concurrency, read of the recent tail, list, soft delete.

Semantics beyond CONTRACT.md, chosen for agents that re-send their whole history on every turn:
- A message's place in the thread is fixed when it is first saved (messages sent in one call keep the
  request order); a known id keeps its place when updated. ``get_thread`` returns messages in that order.
- A known message is rewritten only when its role, content, sent metadata or sent ``created_at`` differ.
  A trimmed message sent again stays trimmed (re-sending a long history does not undo ``max_messages``);
  with ``clear`` every message sent is active afterwards, placed in request order.
- A thread that was deleted, or whose TTL ran out, is started afresh by the next ``save_thread``: its old
  messages and metadata are gone from view, it counts as version 0 for ``expected_version`` and its
  version number keeps growing (a stale writer can never match it again).
- ``ttl_seconds`` sets ``expires_at = now + ttl`` on every save that passes it; a save without it keeps
  the expiry the thread has. The version grows only on saves that change something.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import (
    Aborted,
    AlreadyExists,
    DeleteThreadOutput,
    DeleteThreadParams,
    GetThreadOutput,
    GetThreadParams,
    InvalidArgument,
    ListThreadsOutput,
    ListThreadsParams,
    NotFound,
    SaveThreadOutput,
    SaveThreadParams,
    StoredMessage,
    ThreadInfo,
    ThreadMessage,
)
from contracts.threads import MAX_THREAD_READ
from service.context import HandlerContext
from service.store import threads as store

METADATA_KEY_MAX = 128


def thread_info(row: Row[Any]) -> ThreadInfo:
    return ThreadInfo(
        thread_id=row.id,
        metadata=row.metadata,
        version=row.version,
        message_count=row.message_count,
        created_at=row.created_at,
        updated_at=row.updated_at,
        deleted_at=row.deleted_at,
        expires_at=row.expires_at,
    )


def stored_message(row: Row[Any]) -> StoredMessage:
    return StoredMessage(
        id=row.id,
        role=row.role,
        content=row.content,
        created_at=row.created_at,
        metadata=row.metadata,
        deleted_at=row.deleted_at,
    )


# -- save_thread -------------------------------------------------------------------------------


def _check_request(params: SaveThreadParams) -> None:
    for key in params.metadata or {}:
        if not 1 <= len(key) <= METADATA_KEY_MAX:
            raise InvalidArgument(
                f"metadata keys must be 1 to {METADATA_KEY_MAX} characters",
                {"field": f"metadata.{key[:METADATA_KEY_MAX]}", "length": len(key)},
            )
    seen: dict[uuid.UUID, int] = {}
    for index, message in enumerate(params.messages):
        if message.id is None:
            continue
        if message.id in seen:
            raise InvalidArgument(
                "the same message id is sent twice",
                {"field": f"messages[{index}].id", "id": str(message.id), "first": f"messages[{seen[message.id]}].id"},
            )
        seen[message.id] = index


@dataclass(slots=True)
class _Save:
    """One save_thread applied to one locked thread row."""

    params: SaveThreadParams
    now: datetime
    row: Row[Any]
    created: bool
    restart: bool
    next_seq: int = 0
    active: int = 0
    inserted: int = 0
    updated: int = 0
    trimmed: int = 0
    changed: bool = False
    ids: list[uuid.UUID] = field(default_factory=list)

    async def apply(self, conn: AsyncConnection) -> SaveThreadOutput:
        params, thread_id = self.params, self.params.thread_id
        self.next_seq = self.row.next_seq
        self.active = 0 if self.restart else self.row.message_count
        self.changed = self.created or self.restart
        if self.restart or params.clear:
            if await store.soft_delete_active(conn, thread_id, self.now):
                self.changed = True
            self.active = 0
        await self._messages(conn)
        if params.max_messages is not None:
            self.trimmed = await store.trim(conn, thread_id, params.max_messages, self.now)
            self.active -= self.trimmed
        metadata = await self._metadata(conn)
        expires_at = self.row.expires_at if not self.restart else None
        if params.ttl_seconds is not None:
            expires_at = self.now + timedelta(seconds=params.ttl_seconds)
        self.changed = self.changed or bool(self.inserted or self.updated or self.trimmed)
        self.changed = self.changed or expires_at != self.row.expires_at
        version = self.row.version
        if self.changed:
            version += 1
            values: dict[str, Any] = {
                "metadata": metadata,
                "version": version,
                "message_count": self.active,
                "next_seq": self.next_seq,
                "updated_at": self.now,
                "deleted_at": None,
                "expires_at": expires_at,
            }
            if self.restart:
                values["created_at"] = self.now
            await store.update_thread(conn, thread_id, values)
        return SaveThreadOutput(
            thread_id=thread_id,
            version=version,
            message_ids=self.ids,
            inserted=self.inserted,
            updated=self.updated,
            trimmed=self.trimmed,
        )

    async def _messages(self, conn: AsyncConnection) -> None:
        thread_id = self.params.thread_id
        known = await store.find_messages(conn, [m.id for m in self.params.messages if m.id is not None])
        fresh: list[dict[str, Any]] = []
        renew = self.restart or self.params.clear
        for index, message in enumerate(self.params.messages):
            existing = known.get(message.id) if message.id is not None else None
            if existing is None:
                message_id = message.id or uuid.uuid4()
                fresh.append(self._new_row(message_id, message))
                self.ids.append(message_id)
                continue
            if existing.thread_id != thread_id:
                raise AlreadyExists(
                    "message id already belongs to another thread",
                    {"field": f"messages[{index}].id", "id": str(existing.id), "thread_id": existing.thread_id},
                )
            changes = _changes(existing, message)
            if renew:  # a clear (or a fresh start) makes every message sent active, in request order
                changes.update(deleted_at=None, seq=self._take_seq())
                self.active += 1
            if changes:
                await store.update_message(conn, existing.id, changes)
                self.updated += 1
            self.ids.append(existing.id)
        await store.insert_messages(conn, fresh)
        self.inserted = len(fresh)
        self.active += len(fresh)

    def _take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq

    def _new_row(self, message_id: uuid.UUID, message: ThreadMessage) -> dict[str, Any]:
        return {
            "id": message_id,
            "thread_id": self.params.thread_id,
            "seq": self._take_seq(),
            "role": message.role.value,
            "content": message.content,
            "metadata": message.metadata,
            "created_at": message.created_at or self.now,
            "deleted_at": None,
        }

    async def _metadata(self, conn: AsyncConnection) -> dict[str, Any]:
        before: dict[str, Any] = {} if self.restart else dict(self.row.metadata)
        after = dict(before)
        for key, value in (self.params.metadata or {}).items():
            if value is None:
                after.pop(key, None)
            else:
                after[key] = value
        old_labels = store.labels_of(self.row.metadata)
        new_labels = store.labels_of(after)
        if old_labels != new_labels:
            await store.set_labels(conn, self.params.thread_id, old_labels, new_labels)
        if after != self.row.metadata:
            self.changed = True
        return after


def _changes(existing: Row[Any], message: ThreadMessage) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if existing.role != message.role.value:
        changes["role"] = message.role.value
    if existing.content != message.content:
        changes["content"] = message.content
    if "metadata" in message.model_fields_set and existing.metadata != message.metadata:
        changes["metadata"] = message.metadata
    if message.created_at is not None and existing.created_at != message.created_at:
        changes["created_at"] = message.created_at
    return changes


async def save_thread(params: SaveThreadParams, ctx: HandlerContext) -> SaveThreadOutput:
    _check_request(params)
    now = ctx.now

    async def job(conn: AsyncConnection) -> SaveThreadOutput:
        row, created = await store.lock(conn, params.thread_id, now)
        live = store.is_live(row, now)
        current = row.version if live else 0
        if params.expected_version is not None and params.expected_version != current:
            raise Aborted(
                f"thread {params.thread_id} is at version {current}, not {params.expected_version}",
                {
                    "reason": "version_mismatch",
                    "thread_id": params.thread_id,
                    "expected_version": params.expected_version,
                    "version": current,
                },
            )
        return await _Save(params, now, row, created=created, restart=not live).apply(conn)

    return await ctx.write(job)


# -- reads -------------------------------------------------------------------------------------


async def get_thread(params: GetThreadParams, ctx: HandlerContext) -> GetThreadOutput:
    async with ctx.read() as conn:
        row = await store.get(conn, params.thread_id)
        _check_visible(row, params.thread_id, ctx.now, include_deleted=params.include_deleted)
        assert row is not None
        rows = await store.recent_messages(
            conn, params.thread_id, params.limit or MAX_THREAD_READ, include_deleted=params.include_deleted
        )
    return GetThreadOutput(thread=thread_info(row), messages=[stored_message(r) for r in rows])


def _check_visible(row: Row[Any] | None, thread_id: str, now: datetime, *, include_deleted: bool) -> None:
    """Unknown and expired threads are not found; a deleted one only with ``include_deleted``."""
    if row is None:
        raise NotFound(f"thread {thread_id} not found", {"thread_id": thread_id})
    if row.expires_at is not None and row.expires_at <= now:
        raise NotFound(
            f"thread {thread_id} expired", {"thread_id": thread_id, "expires_at": row.expires_at.isoformat()}
        )
    if row.deleted_at is not None and not include_deleted:
        raise NotFound(
            f"thread {thread_id} was deleted", {"thread_id": thread_id, "deleted_at": row.deleted_at.isoformat()}
        )


async def list_threads(params: ListThreadsParams, ctx: HandlerContext) -> ListThreadsOutput:
    async with ctx.read() as conn:
        rows, next_cursor = await store.list_page(
            conn,
            metadata=params.metadata,
            created_after=params.created_after,
            created_before=params.created_before,
            limit=params.limit,
            after=params.cursor,
            now=ctx.now,
        )
    infos = [thread_info(row) for row in rows]
    return ListThreadsOutput(count=len(infos), threads=infos, next_cursor=next_cursor)


# -- delete_thread -----------------------------------------------------------------------------


async def delete_thread(params: DeleteThreadParams, ctx: HandlerContext) -> DeleteThreadOutput:
    now = ctx.now

    async def job(conn: AsyncConnection) -> DeleteThreadOutput:
        row = await store.get(conn, params.thread_id, for_update=True)
        if row is None or not store.is_live(row, now):
            return DeleteThreadOutput(thread_id=params.thread_id, deleted=False)
        await store.update_thread(
            conn, params.thread_id, {"deleted_at": now, "updated_at": now, "version": row.version + 1}
        )
        return DeleteThreadOutput(thread_id=params.thread_id, deleted=True)

    return await ctx.write(job)


HANDLERS = {
    "save_thread": save_thread,
    "get_thread": get_thread,
    "list_threads": list_threads,
    "delete_thread": delete_thread,
}
