"""Deleting an artifact keeps a tombstone; an admin restores it within ``STORAGE_PURGE_AFTER``, file included.

A delete marks the row (``deleted_at``, ``deleted_by``: the broker-validated admin), then moves the file to
``orphans/``: the commit point first, as everywhere, so a crash between the two leaves a tombstone whose
file still lies at its place (a restore takes it from either place; ``purge_deleted`` removes both).
A restore does it the other way round: the file goes back first, then the mark is cleared, so a crash
between them leaves a tombstone with its file at its place again, never a live artifact without a file.
Each records its change in its commit: a delete ``artifact_deleted``, a restore ``artifact_registered`` (the
artifact is live again, and whoever waits for it should hear so).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import (
    ChangeKind,
    DataLoss,
    DeleteArtifactOutput,
    DeleteArtifactParams,
    FailedPrecondition,
    NotFound,
    RestoreArtifactOutput,
    RestoreArtifactParams,
)
from service.core.context import HandlerContext
from service.core.recording import Committed
from service.handlers.artifacts import registered
from service.store import artifacts as store
from service.store import changes, quotas
from service.store.types import AnyRow


async def delete_artifact(params: DeleteArtifactParams, ctx: HandlerContext) -> Committed[DeleteArtifactOutput]:
    """Admin only. ``deleted: false`` for an unknown id and for a tombstone alike: a delete repeated under a new
    envelope changes nothing and says so (``get_artifact`` tells a tombstone, reason ``deleted``)."""
    removed: list[str] = []

    async def commit(conn: AsyncConnection) -> DeleteArtifactOutput:
        removed.clear()  # the writer may run a job again after a deadlock: only the committed run counts
        row = await store.tombstone(conn, params.artifact_id, by=ctx.requester.id, now=ctx.now)
        if row is not None:
            await quotas.release(conn, [(row.trace_id, row.size_bytes)])  # a tombstone counts in no quota
            await changes.record(conn, _deleted(row, ctx))
            removed.append(row.uri)
        return DeleteArtifactOutput(artifact_id=params.artifact_id, deleted=row is not None)

    async def retire(_: DeleteArtifactOutput) -> None:
        for uri in removed:
            await ctx.files.to_orphans(ctx.files.resolve_stored(uri))

    committed = await ctx.commit(commit, then=retire)
    return committed


async def restore_artifact(params: RestoreArtifactParams, ctx: HandlerContext) -> Committed[RestoreArtifactOutput]:
    """Admin only. A tombstone within the purge window becomes live again with its file, as it was.

    Unknown, purged, or past the window (cleanup has yet to purge it) → NOT_FOUND (reason ``purged`` while
    the row remains); past its retention → NOT_FOUND, reason ``expired``; not deleted → FAILED_PRECONDITION,
    reason ``not_deleted``; its file gone or no longer the registered bytes → DATA_LOSS, and it stays deleted.
    A successor registered while it was deleted keeps its place: the chain is whole again.
    """
    artifact_id = params.artifact_id
    async with ctx.lookup() as conn:
        row = _restorable(await store.get(conn, artifact_id), artifact_id, ctx)
    manifest = store.manifest_of(row)
    await _file_back(ctx, row, manifest.size_bytes)

    async def commit(conn: AsyncConnection) -> RestoreArtifactOutput:
        revived = await store.revive(conn, artifact_id)
        if revived is None:  # purged meanwhile (NOT_FOUND) or restored by a concurrent command (not deleted)
            _restorable(await store.get(conn, artifact_id), artifact_id, ctx)
        else:
            await quotas.restore(conn, revived.trace_id, revived.size_bytes)  # an admin's restore: over any limit
            await changes.record(conn, registered(manifest, ctx))  # live again: as if registered anew
        return RestoreArtifactOutput(artifact_id=artifact_id, restored=True, manifest=manifest)

    committed = await ctx.commit(commit)
    return committed


def _deleted(row: AnyRow, ctx: HandlerContext) -> dict[str, Any]:
    return changes.new_change(
        ChangeKind.ARTIFACT_DELETED,
        node=ctx.settings.node_name,
        at=ctx.now,
        visibility=row.visibility,
        owner=row.owner,
        trace_id=row.trace_id,
        artifact_id=row.id,
        version=row.version,
    )


def _restorable(row: AnyRow | None, artifact_id: str, ctx: HandlerContext) -> AnyRow:
    """The tombstone, or the precise refusal; every caller is an admin, who may read any artifact."""
    if row is None:
        raise NotFound(f"artifact {artifact_id} not found", {"artifact_id": artifact_id})
    if row.deleted_at is None:
        raise FailedPrecondition(
            f"artifact {artifact_id} is not deleted", {"artifact_id": artifact_id, "reason": "not_deleted"}
        )
    if row.deleted_at <= ctx.now - timedelta(seconds=ctx.settings.purge_after_s):
        raise NotFound(
            f"artifact {artifact_id} was deleted before the purge window",
            {"artifact_id": artifact_id, "reason": "purged"},
        )
    if row.expires_at is not None and row.expires_at <= ctx.now:
        raise NotFound(f"artifact {artifact_id} not found", {"artifact_id": artifact_id, "reason": "expired"})
    return row


async def _file_back(ctx: HandlerContext, row: AnyRow, size: int) -> None:
    """The file at its place again, checked to hold the registered bytes; else it stays (or goes back) in
    orphans/ and the restore is refused, the tombstone untouched."""
    files = ctx.files
    path = files.resolve_stored(row.uri)
    details = {"artifact_id": row.id, "uri": row.uri}
    if not await files.take_back(path):
        raise DataLoss(
            f"artifact {row.id}'s file is gone: it cannot be restored", {**details, "reason": "file_missing"}
        )
    if (await files.info(path)).size != size or await files.sha256(path) != row.checksum:
        await files.to_orphans(path)
        raise DataLoss(
            f"artifact {row.id}'s file no longer holds the registered bytes: not restored",
            {**details, "reason": "corrupted"},
        )
