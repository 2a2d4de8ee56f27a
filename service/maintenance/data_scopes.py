"""Cleanup scopes over rows: expired artifacts and threads, purge of soft-deleted rows, stale uploads, inbox."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import CleanupScope, StorageError
from service.maintenance.cleanup import STALE_UPLOADING_AGE, CleanupRun, register_scope
from service.maintenance.fileops import retire
from service.store import maintenance as q
from service.store import threads as thread_store

log = logging.getLogger(__name__)


async def expired_artifacts(run: CleanupRun) -> int:
    """Artifacts past their retention: the row goes (the commit point), then its file moves to orphans/."""
    if run.dry_run:
        async with run.read() as conn:
            return await q.count_expired_artifacts(conn, run.now)

    async def job(conn: AsyncConnection) -> list[tuple[str, str]]:
        return [(row.id, row.uri) for row in await q.delete_expired_artifacts(conn, run.now, run.batch)]

    total = 0
    while True:
        removed = await run.write(job)
        for artifact_id, uri in removed:
            try:
                path = run.files.resolve_stored(uri)
            except StorageError:
                log.warning("expired artifact %s removed; its uri %s is outside the storage root", artifact_id, uri)
                continue
            await retire(run.files, path, reason=f"artifact {artifact_id} expired")
        total += len(removed)
        if len(removed) < run.batch:
            return total


async def expired_threads(run: CleanupRun) -> int:
    """Threads past their TTL are removed with their messages and labels; the count is of threads."""
    condition = thread_store.expired_clause(run.now)
    if run.dry_run:
        async with run.read() as conn:
            return await thread_store.count_threads(conn, condition)
    return await _purge_threads(run, condition)


async def _purge_threads(run: CleanupRun, condition: ColumnElement[bool]) -> int:
    async def job(conn: AsyncConnection) -> tuple[int, int]:
        return await thread_store.purge_threads_batch(conn, condition, run.batch)

    threads = 0
    while True:
        removed_threads, removed_messages = await run.write(job)
        threads += removed_threads
        if removed_threads == 0 and removed_messages == 0:
            return threads


async def purge_deleted(run: CleanupRun) -> int:
    """Soft-deleted messages and threads older than the purge window are removed for good."""
    cutoff = run.now - timedelta(seconds=run.settings.purge_after_s)
    condition = thread_store.deleted_before_clause(cutoff)
    if run.dry_run:
        async with run.read() as conn:
            messages = await thread_store.count_messages_deleted_before(conn, cutoff)
            return messages + await thread_store.count_threads(conn, condition)

    async def messages_job(conn: AsyncConnection) -> int:
        return await thread_store.purge_messages_batch(conn, cutoff, run.batch)

    messages = await run.repeat(messages_job)
    return messages + await _purge_threads(run, condition)


async def stale_uploading(run: CleanupRun) -> int:
    """Artifacts still ``uploading`` an hour after registration will never complete: they become failed."""
    cutoff = run.now - STALE_UPLOADING_AGE
    if run.dry_run:
        async with run.read() as conn:
            return await q.count_stale_uploading(conn, cutoff)

    async def job(conn: AsyncConnection) -> list[str]:
        return await q.fail_stale_uploading(conn, cutoff, run.batch)

    total = 0
    while True:
        failed = await run.write(job)
        for artifact_id in failed:
            log.warning("artifact %s was still uploading after %s: marked failed", artifact_id, STALE_UPLOADING_AGE)
        total += len(failed)
        if len(failed) < run.batch:
            return total


async def inbox(run: CleanupRun) -> int:
    """Inbox records older than the retention: duplicates of such old commands are no longer recognised."""
    cutoff = run.now - timedelta(seconds=run.settings.inbox_retention_s)
    if run.dry_run:
        async with run.read() as conn:
            return await q.count_inbox_before(conn, cutoff)

    async def job(conn: AsyncConnection) -> int:
        return await q.purge_inbox_before(conn, cutoff, run.batch)

    return await run.repeat(job)


register_scope(CleanupScope.EXPIRED_ARTIFACTS, expired_artifacts)
register_scope(CleanupScope.EXPIRED_THREADS, expired_threads)
register_scope(CleanupScope.PURGE_DELETED, purge_deleted)
register_scope(CleanupScope.STALE_UPLOADING, stale_uploading)
register_scope(CleanupScope.INBOX, inbox)
