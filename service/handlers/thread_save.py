"""How one ``save_thread`` changes a locked thread row: its messages, metadata, labels, expiry and version.

The rules are the module docstring of ``service.handlers.threads``; this is their bookkeeping, apart from
the handler that locks the row and checks who may write it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import AlreadyExists, InvalidArgument, SaveThreadOutput, SaveThreadParams, ThreadMessage
from service.store import thread_history as history
from service.store import threads as store
from service.store.types import AnyRow

METADATA_KEY_MAX = 128


def check_request(params: SaveThreadParams) -> None:
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


class Settings(NamedTuple):
    """What a thread remembers between saves (revision 0011); None: not set."""

    max_messages: int | None
    ttl_seconds: int | None

    def updated_by(self, params: SaveThreadParams) -> Settings:
        """A setting the save names (even as ``null``) replaces the remembered one; an absent one stays."""
        sent = params.model_fields_set
        return Settings(
            params.max_messages if "max_messages" in sent else self.max_messages,
            params.ttl_seconds if "ttl_seconds" in sent else self.ttl_seconds,
        )


@dataclass(slots=True)
class Save:
    """One save_thread applied to one locked thread row."""

    params: SaveThreadParams
    now: datetime
    row: AnyRow
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
            await history.forget_trimmed(conn, thread_id)
            self.active = 0
        await self._messages(conn)
        before = Settings(None, None) if self.restart else Settings(self.row.max_messages, self.row.ttl_seconds)
        after = before.updated_by(params)
        if after.max_messages is not None and self.active > after.max_messages:  # else nothing can be over it
            self.trimmed = await history.trim(conn, thread_id, after.max_messages, self.now)
            self.active -= self.trimmed
        metadata = await self._metadata(conn)
        expires_at = self.row.expires_at if not self.restart else None
        if after.ttl_seconds is not None:
            expires_at = self.now + timedelta(seconds=after.ttl_seconds)
        elif "ttl_seconds" in params.model_fields_set:  # null: the thread no longer expires
            expires_at = None
        self.changed = self.changed or bool(self.inserted or self.updated or self.trimmed) or after != before
        # The expiry sliding forward by the thread's own TTL is no change of the thread (no new version).
        self.changed = self.changed or (expires_at != self.row.expires_at and after.ttl_seconds is None)
        self.changed = self.changed or (params.visibility is not None and params.visibility != self.row.visibility)
        version = self.row.version
        if self.changed:
            version += 1
            values: dict[str, object] = {
                "metadata": metadata,
                "version": version,
                "message_count": self.active,
                "next_seq": self.next_seq,
                "updated_at": self.now,
                "deleted_at": None,
                "expires_at": expires_at,
                "max_messages": after.max_messages,
                "ttl_seconds": after.ttl_seconds,
            }
            if self.restart:
                values["created_at"] = self.now
            if params.visibility is not None:
                values["visibility"] = params.visibility.value
            await store.update_thread(conn, thread_id, values)
        elif expires_at != self.row.expires_at:
            await store.update_thread(conn, thread_id, {"expires_at": expires_at})
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
        fresh: list[dict[str, object]] = []
        renew = self.restart or self.params.clear
        for index, message in enumerate(self.params.messages):
            existing = known.get(message.id) if message.id is not None else None
            if existing is None:
                message_id = message.id or uuid.uuid4()
                fresh.append(self._new_row(message_id, message))
                self.ids.append(message_id)
                continue
            if existing.thread_id != thread_id:
                raise AlreadyExists(  # never naming that thread: its requester may not be able to read it
                    "message id already belongs to another thread",
                    {"field": f"messages[{index}].id", "id": str(existing.id)},
                )
            changes = changes_of(existing, message)
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

    def _new_row(self, message_id: uuid.UUID, message: ThreadMessage) -> dict[str, object]:
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


def changes_of(existing: AnyRow, message: ThreadMessage) -> dict[str, object]:
    changes: dict[str, object] = {}
    if existing.role != message.role.value:
        changes["role"] = message.role.value
    if existing.content != message.content:
        changes["content"] = message.content
    if "metadata" in message.model_fields_set and existing.metadata != message.metadata:
        changes["metadata"] = message.metadata
    if message.created_at is not None and existing.created_at != message.created_at:
        changes["created_at"] = message.created_at
    return changes
