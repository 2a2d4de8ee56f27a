"""Thread actions: incremental save with optimistic concurrency, read of the recent tail, list, soft delete,
info (settings and system prompt) and restore.

Semantics beyond docs/contract.md §4 (Threads), chosen for agents that re-send their whole history on every turn:
- A message's place in the thread is fixed when it is first saved (messages sent in one call keep the
  request order); a known id keeps its place when updated. ``get_thread`` returns messages in that order.
- A known message is rewritten only when its role, content, sent metadata or sent ``created_at`` differ.
  A trimmed message sent again stays trimmed (re-sending a long history does not undo ``max_messages``);
  with ``clear`` every message sent is active afterwards, placed in request order.
- A thread that was deleted, or whose TTL ran out, is started afresh by the next ``save_thread``: its old
  messages and metadata are gone from view, it counts as version 0 for ``expected_version`` and its
  version number keeps growing (a stale writer can never match it again).
- ``max_messages`` and ``ttl_seconds`` are remembered by the thread (revision 0011) and apply to every later
  save until one sends another value, or ``null`` to forget it (absent and ``null`` differ). A remembered TTL
  moves ``expires_at`` to ``now + ttl`` on every save; a thread without one keeps the expiry it has. A fresh
  start (see above) forgets both. The version grows only on saves that change something: messages, metadata,
  visibility or a setting; the expiry moving forward by the remembered TTL alone is no change.
- A trimmed message is soft-deleted and marked ``trimmed_at``: ``restore_thread`` brings such messages back
  while they are within ``STORAGE_PURGE_AFTER`` (cleanup's ``purge_deleted`` removes them after it). A
  ``clear`` or a fresh start ends the dialog: what was trimmed before it is no longer restorable.

Ownership (docs/contract.md §3): the first save makes its requester the owner, with the requester's trace and the
given ``visibility`` (``private`` by default). Reads follow the artifact rule; only the owner or an admin
saves (``clear`` included) or deletes, and a thread that was deleted or expired stays its owner's, so nobody
else can take its id over by saving to it. An anonymous requester cannot save (it could never own the
thread). Threads saved before owners existed have none: they are public, and only admins write them. A
thread its requester cannot read answers exactly as an unknown one (nothing about it is revealed); one it
can read but not change is PERMISSION_DENIED.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import (
    Aborted,
    ChangeKind,
    DeleteThreadOutput,
    DeleteThreadParams,
    FailedPrecondition,
    GetThreadInfoOutput,
    GetThreadInfoParams,
    GetThreadOutput,
    GetThreadParams,
    ListThreadsOutput,
    ListThreadsParams,
    NotFound,
    PermissionDenied,
    RestoreThreadOutput,
    RestoreThreadParams,
    SaveThreadOutput,
    SaveThreadParams,
    StorageError,
    StoredMessage,
    ThreadInfo,
    Unauthenticated,
    Visibility,
)
from contracts.threads import MAX_THREAD_READ
from service.core import paging
from service.core.context import HandlerContext
from service.core.recording import Committed
from service.handlers.thread_save import Save, check_request
from service.identity import Requester, can_read
from service.store import changes, cursor
from service.store import thread_history as history
from service.store import threads as store
from service.store.types import AnyRow


def thread_info(row: AnyRow) -> ThreadInfo:
    return ThreadInfo(**_info_fields(row))


def _info_fields(row: AnyRow) -> dict[str, Any]:
    """The fields of ``ThreadInfo`` from a thread row (``get_thread_info`` adds its own to them)."""
    return dict(
        thread_id=row.id,
        metadata=row.metadata,
        version=row.version,
        message_count=row.message_count,
        created_at=row.created_at,
        updated_at=row.updated_at,
        deleted_at=row.deleted_at,
        expires_at=row.expires_at,
        owner=row.owner,
        visibility=row.visibility,
    )


# -- save_thread -------------------------------------------------------------------------------


async def save_thread(params: SaveThreadParams, ctx: HandlerContext) -> Committed[SaveThreadOutput]:
    check_request(params)
    now, requester = ctx.now, ctx.requester
    if requester.id is None and not requester.is_admin:
        raise Unauthenticated(  # as for memory items: ownership needs an identity
            "an anonymous requester cannot save a thread: a thread belongs to the requester that creates it",
            {"thread_id": params.thread_id, "reason": "anonymous_requester"},
        )
    visibility = (params.visibility or Visibility.PRIVATE).value

    async def job(conn: AsyncConnection) -> SaveThreadOutput:
        row, created = await store.lock(
            conn, params.thread_id, now, owner=requester.id, visibility=visibility, trace_id=requester.trace_id
        )
        if not created:
            _check_writable(row, params.thread_id, requester, now)
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
        saved = await Save(params, now, row, created=created, restart=not live).apply(conn)
        if created or saved.version != row.version:  # a save that changed nothing is no change
            after = params.visibility.value if params.visibility is not None else row.visibility
            await changes.record(conn, _change(ChangeKind.THREAD_SAVED, row, ctx, saved.version, after))
        return saved

    return await ctx.commit(job)


def _change(kind: ChangeKind, row: AnyRow, ctx: HandlerContext, version: int, visibility: str) -> dict[str, Any]:
    """A thread's change: its read rule after the change (owner and trace are its first saver's, for good)."""
    return changes.new_change(
        kind,
        node=ctx.settings.node_name,
        at=ctx.now,
        visibility=visibility,
        owner=row.owner,
        trace_id=row.trace_id,
        thread_id=row.id,
        version=version,
    )


# -- access ------------------------------------------------------------------------------------


def _readable(row: AnyRow, requester: Requester) -> bool:
    return can_read(row.visibility, row.owner, row.trace_id, requester)


def _may_write(row: AnyRow, requester: Requester) -> bool:
    """The owner or an admin; an ownerless (legacy) thread is written by admins only."""
    return requester.is_admin or (row.owner is not None and row.owner == requester.id)


def _not_found(thread_id: str) -> NotFound:
    return NotFound(f"thread {thread_id} not found", {"thread_id": thread_id})


def _refuse_write(row: AnyRow, thread_id: str, requester: Requester, now: datetime) -> PermissionDenied:
    """The refusal of a write, naming neither the owner nor anything its requester may not read."""
    details: dict[str, Any] = {"thread_id": thread_id, "requester": requester.id}
    if _readable(row, requester) and store.is_live(row, now):
        details["visibility"] = row.visibility
        return PermissionDenied(f"thread {thread_id} is {row.visibility}: only its owner changes it", details)
    # A save to the id of a thread its requester cannot see: whatever the answer, the id is taken, but nothing
    # else about the thread (not its visibility, whether it is deleted or expired) is told.
    return PermissionDenied(f"thread id {thread_id} belongs to another requester", details)


def _check_writable(row: AnyRow, thread_id: str, requester: Requester, now: datetime) -> None:
    if not _may_write(row, requester):
        raise _refuse_write(row, thread_id, requester, now)


# -- reads -------------------------------------------------------------------------------------


async def get_thread(params: GetThreadParams, ctx: HandlerContext) -> GetThreadOutput:
    before = store.decode_message_cursor(params.cursor) if params.cursor is not None else None
    async with ctx.read() as conn:
        row = await store.get(conn, params.thread_id)
        _check_visible(row, params.thread_id, ctx, include_deleted=params.include_deleted)
        assert row is not None
        info = thread_info(row)
        budget = paging.page_budget(ctx.settings, spent=paging.json_size(row.metadata) + paging.ITEM_OVERHEAD)
        rows, more = await store.message_page(
            conn,
            params.thread_id,
            params.limit or MAX_THREAD_READ,
            include_deleted=params.include_deleted,
            before_seq=before,
            budget=budget,
        )
    next_cursor = store.message_cursor(rows[-1].seq) if more and rows else None
    rows.reverse()  # fetched newest first; a page reads oldest first
    return GetThreadOutput(
        thread=info,
        messages=[StoredMessage.model_validate(r, from_attributes=True) for r in rows],  # columns named as its fields
        next_cursor=next_cursor,
    )


def _check_visible(row: AnyRow | None, thread_id: str, ctx: HandlerContext, *, include_deleted: bool) -> None:
    """Unknown, unreadable and expired threads are not found; a deleted one only with ``include_deleted``.

    A thread the requester may not read gets the very answer of an unknown id: not even its expiry shows.
    """
    now = ctx.now
    if row is None or not _readable(row, ctx.requester):
        raise _not_found(thread_id)
    if row.expires_at is not None and row.expires_at <= now:
        raise NotFound(
            f"thread {thread_id} expired", {"thread_id": thread_id, "expires_at": row.expires_at.isoformat()}
        )
    if row.deleted_at is not None and not include_deleted:
        raise NotFound(
            f"thread {thread_id} was deleted", {"thread_id": thread_id, "deleted_at": row.deleted_at.isoformat()}
        )


async def get_thread_info(params: GetThreadInfoParams, ctx: HandlerContext) -> GetThreadInfoOutput:
    """The thread's info, remembered settings and current system prompt, under ``get_thread``'s read rule.

    The system prompt is left out (``system_prompt_omitted``) when it would take the reply past
    ``STORAGE_MAX_REPLY_BYTES``; the database compares its size, so such a prompt is never loaded.
    """
    async with ctx.read() as conn:
        row = await store.get(conn, params.thread_id)
        _check_visible(row, params.thread_id, ctx, include_deleted=params.include_deleted)
        assert row is not None
        budget = paging.page_budget(ctx.settings, spent=_thread_size(row)) - paging.ITEM_OVERHEAD
        prompt = await history.system_prompt(conn, params.thread_id, budget)
    return GetThreadInfoOutput(
        **_info_fields(row),
        max_messages=row.max_messages,
        ttl_seconds=row.ttl_seconds,
        system_prompt=prompt.content if prompt is not None else None,
        system_prompt_id=prompt.id if prompt is not None else None,
        system_prompt_omitted=prompt is not None and prompt.content is None,
    )


def _thread_size(row: AnyRow) -> int:
    return paging.json_size(row.metadata) + paging.ITEM_OVERHEAD


def _thread_cursor(row: AnyRow) -> str:
    return cursor.encode(row.created_at, row.id)


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
            requester=ctx.requester,
            search=params.search,
        )
    rows, next_cursor = paging.cut_page(
        rows, next_cursor, budget=paging.page_budget(ctx.settings), size_of=_thread_size, cursor_of=_thread_cursor
    )
    infos = [thread_info(row) for row in rows]
    return ListThreadsOutput(count=len(infos), threads=infos, next_cursor=next_cursor)


# -- delete_thread -----------------------------------------------------------------------------


async def delete_thread(params: DeleteThreadParams, ctx: HandlerContext) -> Committed[DeleteThreadOutput]:
    """Soft delete by the owner or an admin. Deleting a thread its requester cannot read answers as for an
    unknown id (``deleted: false``, nothing changed); one it can read but not change is PERMISSION_DENIED."""
    now, requester = ctx.now, ctx.requester

    async def job(conn: AsyncConnection) -> DeleteThreadOutput:
        row = await store.get(conn, params.thread_id, for_update=True)
        if row is None or not store.is_live(row, now) or not _readable(row, requester):
            return DeleteThreadOutput(thread_id=params.thread_id, deleted=False)
        _check_writable(row, params.thread_id, requester, now)
        await store.update_thread(
            conn, params.thread_id, {"deleted_at": now, "updated_at": now, "version": row.version + 1}
        )
        await changes.record(conn, _change(ChangeKind.THREAD_DELETED, row, ctx, row.version + 1, row.visibility))
        return DeleteThreadOutput(thread_id=params.thread_id, deleted=True)

    return await ctx.commit(job)


# -- restore_thread ----------------------------------------------------------------------------


async def restore_thread(params: RestoreThreadParams, ctx: HandlerContext) -> Committed[RestoreThreadOutput]:
    """Undelete a soft-deleted thread, or bring back its trimmed messages, within ``STORAGE_PURGE_AFTER``.

    Owner or admin only, answered as ``delete_thread`` is: a thread its requester cannot read is NOT_FOUND
    exactly as an unknown id, one it can read but not change PERMISSION_DENIED. Either restore bumps the
    version. Restored messages are live in their old places; the thread keeps its ``max_messages``, so the
    next save trims them again unless it sends ``max_messages: null`` (or a larger one).
    """
    now, requester = ctx.now, ctx.requester
    cutoff = now - timedelta(seconds=ctx.settings.purge_after_s)

    async def job(conn: AsyncConnection) -> RestoreThreadOutput:
        row = await store.get(conn, params.thread_id, for_update=True)
        if row is None or not _readable(row, requester):
            raise _not_found(params.thread_id)
        _check_writable(row, params.thread_id, requester, now)
        details: dict[str, Any] = {"thread_id": params.thread_id}
        if row.expires_at is not None and row.expires_at <= now:
            raise NotFound(f"thread {params.thread_id} expired", {**details, "expires_at": row.expires_at.isoformat()})
        restored = 0
        if params.messages is None:
            _check_undeletable(row, details, cutoff)
            values: dict[str, object] = {"deleted_at": None}
        else:
            if row.deleted_at is not None:
                raise FailedPrecondition(
                    f"thread {params.thread_id} is deleted: restore the thread first",
                    {**details, "reason": "deleted", "deleted_at": row.deleted_at.isoformat()},
                )
            restored = await history.restore_trimmed(conn, params.thread_id, cutoff)
            if restored == 0:
                raise await _nothing_trimmed(conn, details, cutoff)
            values = {"message_count": row.message_count + restored}
        version = row.version + 1
        await store.update_thread(conn, params.thread_id, {**values, "version": version, "updated_at": now})
        await changes.record(conn, _change(ChangeKind.THREAD_SAVED, row, ctx, version, row.visibility))
        return RestoreThreadOutput(
            thread_id=params.thread_id,
            version=version,
            message_count=row.message_count + restored,
            restored_messages=restored,
        )

    return await ctx.commit(job)


def _check_undeletable(row: AnyRow, details: dict[str, Any], cutoff: datetime) -> None:
    if row.deleted_at is None:
        raise FailedPrecondition(
            f"thread {row.id} is not deleted: nothing to restore", {**details, "reason": "not_deleted"}
        )
    if row.deleted_at < cutoff:
        raise NotFound(
            f"thread {row.id} was deleted longer than STORAGE_PURGE_AFTER ago: it can no longer be restored",
            {**details, "reason": "purge_window_passed", "deleted_at": row.deleted_at.isoformat()},
        )


async def _nothing_trimmed(conn: AsyncConnection, details: dict[str, Any], cutoff: datetime) -> StorageError:
    """Why no trimmed message came back: all were trimmed before the window (NOT_FOUND), or none was."""
    if await history.count_trimmed_before(conn, details["thread_id"], cutoff):
        return NotFound(
            f"the trimmed messages of thread {details['thread_id']} were trimmed longer than STORAGE_PURGE_AFTER "
            "ago: they can no longer be restored",
            {**details, "reason": "purge_window_passed"},
        )
    return FailedPrecondition(
        f"thread {details['thread_id']} has no trimmed messages to restore", {**details, "reason": "nothing_trimmed"}
    )
