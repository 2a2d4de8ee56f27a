"""Cleanup scopes over rows: expired artifacts and threads, purge of soft-deleted rows (artifact tombstones
included), stale uploads, inbox, the change log.

Expiry and purges record no change event: an expired item is gone for every read from its ``expires_at``
on (known in advance), so its removal here tells nobody anything, and a purged item's deletion was told
when it was deleted."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import StorageError
from service.core.context import HandlerContext
from service.maintenance.fileops import remove, retire
from service.maintenance.limits import STALE_UPLOADING_AGE
from service.store import changes as change_log
from service.store import maintenance as q
from service.store import memory as memory_store
from service.store import threads as thread_store

log = logging.getLogger(__name__)


async def expired_artifacts(ctx: HandlerContext) -> int:
    """Artifacts past their retention: the row goes (the commit point), then its file moves to orphans/."""
    if ctx.dry_run:
        async with ctx.read() as conn:
            return await q.count_expired_artifacts(conn, ctx.now)

    async def job(conn: AsyncConnection) -> list[tuple[str, str]]:
        return [(row.id, row.uri) for row in await q.delete_expired_artifacts(conn, ctx.now, ctx.batch)]

    total = 0
    while True:
        removed = await ctx.write(job)
        for artifact_id, uri in removed:
            try:
                path = ctx.files.resolve_stored(uri)
            except StorageError:
                log.warning("expired artifact %s removed; its uri %s is outside the storage root", artifact_id, uri)
                continue
            await retire(ctx.files, path, reason=f"artifact {artifact_id} expired")
        total += len(removed)
        if len(removed) < ctx.batch:
            return total


async def expired_threads(ctx: HandlerContext) -> int:
    """Threads past their TTL are removed with their messages and labels; the count is of threads."""
    condition = thread_store.expired_clause(ctx.now)
    if ctx.dry_run:
        async with ctx.read() as conn:
            return await thread_store.count_threads(conn, condition)
    return await _purge_threads(ctx, condition)


async def _purge_threads(ctx: HandlerContext, condition: ColumnElement[bool]) -> int:
    async def job(conn: AsyncConnection) -> tuple[int, int]:
        return await thread_store.purge_threads_batch(conn, condition, ctx.batch)

    threads = 0
    while True:
        removed_threads, removed_messages = await ctx.write(job)
        threads += removed_threads
        if removed_threads == 0 and removed_messages == 0:
            return threads


async def purge_deleted(ctx: HandlerContext) -> int:
    """Soft-deleted messages, threads and artifacts (tombstones) older than the purge window are removed for
    good, a tombstone's file with it; the count is of items of all three."""
    cutoff = ctx.now - timedelta(seconds=ctx.settings.purge_after_s)
    condition = thread_store.deleted_before_clause(cutoff)
    if ctx.dry_run:
        async with ctx.read() as conn:
            messages = await thread_store.count_messages_deleted_before(conn, cutoff)
            tombstones = await q.count_tombstones_before(conn, cutoff)
            return messages + tombstones + await thread_store.count_threads(conn, condition)

    async def messages_job(conn: AsyncConnection) -> int:
        return await thread_store.purge_messages_batch(conn, cutoff, ctx.batch)

    messages = await ctx.repeat(messages_job)
    threads = await _purge_threads(ctx, condition)
    return messages + threads + await _purge_tombstones(ctx, cutoff)


async def _purge_tombstones(ctx: HandlerContext, cutoff: datetime) -> int:
    """Tombstones deleted before ``cutoff``: the rows go (the commit point), then their files in orphans/.

    A file still at its place (the delete's move never ran) is left to ``orphan_files``, as any file no row
    points at: the id is free again once the row is gone, and a new registration may already lie there.
    """

    async def job(conn: AsyncConnection) -> list[tuple[str, str]]:
        return [(row.id, row.uri) for row in await q.purge_tombstones(conn, cutoff, ctx.batch)]

    total = 0
    while True:
        removed = await ctx.write(job)
        for artifact_id, uri in removed:
            try:
                orphan = ctx.files.orphan_path(ctx.files.resolve_stored(uri))
            except StorageError:
                log.warning("deleted artifact %s purged; its uri %s is outside the storage root", artifact_id, uri)
                continue
            if await remove(ctx.files, orphan):
                log.info("purged deleted artifact %s and %s", artifact_id, ctx.files.url(orphan))
        total += len(removed)
        if len(removed) < ctx.batch:
            return total


async def stale_uploading(ctx: HandlerContext) -> int:
    """Artifacts still ``uploading`` an hour after registration will never complete: they become failed."""
    cutoff = ctx.now - STALE_UPLOADING_AGE
    if ctx.dry_run:
        async with ctx.read() as conn:
            return await q.count_stale_uploading(conn, cutoff)

    async def job(conn: AsyncConnection) -> list[str]:
        return await q.fail_stale_uploading(conn, cutoff, ctx.batch)

    total = 0
    while True:
        failed = await ctx.write(job)
        for artifact_id in failed:
            log.warning("artifact %s was still uploading after %s: marked failed", artifact_id, STALE_UPLOADING_AGE)
        total += len(failed)
        if len(failed) < ctx.batch:
            return total


async def inbox(ctx: HandlerContext) -> int:
    """Inbox records older than the retention: duplicates of such old commands are no longer recognised."""
    cutoff = ctx.now - timedelta(seconds=ctx.settings.inbox_retention_s)
    if ctx.dry_run:
        async with ctx.read() as conn:
            return await q.count_inbox_before(conn, cutoff)

    async def job(conn: AsyncConnection) -> int:
        return await q.purge_inbox_before(conn, cutoff, ctx.batch)

    return await ctx.repeat(job)


async def changes(ctx: HandlerContext) -> int:
    """Changes older than ``STORAGE_CHANGES_RETENTION`` leave the log, oldest first, never one still waiting in
    an outbox (nor any after it); the watermark rises with them, so an older ``changes_since`` cursor is told."""
    cutoff = ctx.now - timedelta(seconds=ctx.settings.changes_retention_s)
    if ctx.dry_run:
        async with ctx.read() as conn:
            return await change_log.count_purgeable(conn, cutoff, ctx.batch)

    async def job(conn: AsyncConnection) -> int:
        return await change_log.purge_before(conn, cutoff, ctx.batch)

    return await ctx.repeat(job)


async def expired_memory(ctx: HandlerContext) -> int:
    """Rows of memory items past their TTL (already invisible to every read) go, in bounded batches."""
    if ctx.dry_run:
        async with ctx.read() as conn:
            return await memory_store.count_expired(conn, ctx.now)

    async def job(conn: AsyncConnection) -> int:
        return await memory_store.purge_expired(conn, ctx.now, ctx.batch)

    return await ctx.repeat(job)
