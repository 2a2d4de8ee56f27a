"""Artifact actions: register (the file checks, then the commit point, then the move), read, list, delete."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import (
    Aborted,
    AlreadyExists,
    ArtifactManifest,
    ArtifactStatus,
    DeleteArtifactOutput,
    DeleteArtifactParams,
    FailedPrecondition,
    GetArtifactOutput,
    GetArtifactParams,
    GetArtifactUriOutput,
    GetArtifactUriParams,
    InvalidArgument,
    ListArtifactsOutput,
    ListArtifactsParams,
    NotFound,
    OutOfRange,
    PermissionDenied,
    RegisterArtifactOutput,
    RegisterArtifactParams,
    parse_retention,
)
from service import paging
from service.context import HandlerContext, Requester
from service.files import TEMP
from service.identity import can_read, refuse_read
from service.store import artifacts as store
from service.store import cursor

log = logging.getLogger(__name__)

MAX_CHAIN = 10_000


async def register_artifact(params: RegisterArtifactParams, ctx: HandlerContext) -> RegisterArtifactOutput:
    manifest = params.manifest
    requester = ctx.requester
    if manifest.owner is not None and manifest.owner != requester.id and not requester.is_admin:
        raise PermissionDenied(
            "manifest.owner must be the requester (leave it out to own the artifact)",
            {"field": "manifest.owner", "owner": manifest.owner, "requester": requester.id},
        )
    async with ctx.lookup() as conn:
        existing = await store.get(conn, manifest.id)
    if existing is not None:
        return _already_registered(existing, manifest, requester)

    files = ctx.files
    source = files.resolve_incoming(manifest.uri)
    limit = ctx.settings.max_file_bytes
    try:
        info, actual = await files.inspect(source, expected_size=manifest.size_bytes, max_bytes=limit)
    except NotFound as missing:
        return await _twin_or_raise(ctx, manifest, missing)
    if info.size > limit:
        raise OutOfRange(
            f"file is {info.size} bytes, at most {limit} allowed",
            {"size_bytes": info.size, "limit_bytes": limit, "uri": manifest.uri},
        )
    if info.size != manifest.size_bytes:
        raise InvalidArgument(
            "size_bytes does not match the file",
            {"field": "manifest.size_bytes", "expected": manifest.size_bytes, "actual": info.size},
        )
    if actual != manifest.checksum:
        if files.in_folder(source, TEMP):
            await files.remove(source)
        raise InvalidArgument(
            "checksum does not match the file",
            {"field": "manifest.checksum", "expected": manifest.checksum, "actual": actual},
        )

    dest = files.artifact_path(manifest.trace_id, manifest.id, source)
    final = manifest.model_copy(
        update={
            "status": ArtifactStatus.COMPLETED,
            "uri": files.url(dest),
            "owner": manifest.owner or ctx.requester.id,
        }
    )
    retention = parse_retention(final.retention)
    expires_at = ctx.now + retention if retention is not None else None

    async def commit(conn: AsyncConnection) -> RegisterArtifactOutput:
        if final.supersedes is not None:  # a twin that won meanwhile is already the successor: answer as it
            if (raced := await store.get(conn, final.id)) is not None:
                return _already_registered(raced, manifest, requester)
            await _check_supersedes(conn, final)
        if not await store.insert_artifact(conn, final, expires_at=expires_at, now=ctx.now):
            return await _lost_race(conn, final, manifest, requester)
        return RegisterArtifactOutput(
            artifact_id=final.id,
            registered=True,
            already_exists=False,
            uri=final.uri,
            checksum=final.checksum,
            manifest=final,
        )

    output = await ctx.write(commit)
    if output.registered:
        ctx.services.faults.hit("after_commit")
        await files.place(source, dest)
    return output


async def _twin_or_raise(ctx: HandlerContext, manifest: ArtifactManifest, missing: NotFound) -> RegisterArtifactOutput:
    """The file is gone: a twin of this command (another envelope, another worker) may have just moved it."""
    async with ctx.read() as conn:
        twin = await store.get(conn, manifest.id)
    if twin is None:
        raise missing
    return _already_registered(twin, manifest, ctx.requester)


def _already_registered(row: object, manifest: ArtifactManifest, requester: Requester) -> RegisterArtifactOutput:
    """A retry of a registration gets the stored result; anything else about that id is a conflict."""
    stored = store.manifest_of(row)  # type: ignore[arg-type]
    if not can_read(stored.visibility, stored.owner, stored.trace_id, requester):
        raise AlreadyExists(f"artifact {manifest.id} is already registered", {"artifact_id": manifest.id})
    if stored.checksum != manifest.checksum:
        raise AlreadyExists(
            f"artifact {manifest.id} is already registered with another checksum",
            {"artifact_id": manifest.id, "checksum": stored.checksum, "requested_checksum": manifest.checksum},
        )
    return RegisterArtifactOutput(
        artifact_id=stored.id,
        registered=False,
        already_exists=True,
        uri=stored.uri,
        checksum=stored.checksum,
        manifest=stored,
    )


async def _lost_race(
    conn: AsyncConnection, final: ArtifactManifest, requested: ArtifactManifest, requester: Requester
) -> RegisterArtifactOutput:
    """Another worker committed this artifact, or another successor of its predecessor, meanwhile."""
    if (twin := await store.get(conn, final.id)) is not None:
        return _already_registered(twin, requested, requester)
    if final.supersedes is not None and (successor := await store.successor_of(conn, final.supersedes)) is not None:
        raise _successor_exists(final.supersedes, successor.id)
    raise Aborted("the artifact raced with a concurrent change, retry", {"artifact_id": final.id})


def _successor_exists(supersedes: str, successor_id: str) -> AlreadyExists:
    return AlreadyExists(
        f"artifact {supersedes} already has a successor",
        {"supersedes": supersedes, "existing_successor": successor_id},
    )


async def _check_supersedes(conn: AsyncConnection, manifest: ArtifactManifest) -> None:
    assert manifest.supersedes is not None
    previous = await store.get(conn, manifest.supersedes)
    if previous is None:
        raise FailedPrecondition(
            f"supersedes names unknown artifact {manifest.supersedes}",
            {"field": "manifest.supersedes", "supersedes": manifest.supersedes},
        )
    if manifest.version != previous.version + 1:
        raise FailedPrecondition(
            f"a successor of version {previous.version} must have version {previous.version + 1}",
            {"field": "manifest.version", "expected": previous.version + 1, "actual": manifest.version},
        )
    successor = await store.successor_of(conn, manifest.supersedes)
    if successor is not None:
        raise _successor_exists(manifest.supersedes, successor.id)


async def get_artifact(params: GetArtifactParams, ctx: HandlerContext) -> GetArtifactOutput:
    async with ctx.lookup() as conn:
        row = await store.get(conn, params.artifact_id)
        if row is None:
            raise NotFound(f"artifact {params.artifact_id} not found", {"artifact_id": params.artifact_id})
        if params.latest:
            for _ in range(MAX_CHAIN):
                newer = await store.successor_of(conn, row.id)
                if newer is None:
                    break
                row = newer
    _check_readable(row, ctx)
    return GetArtifactOutput(artifact_id=row.id, manifest=store.manifest_of(row))


def _check_readable(row: object, ctx: HandlerContext) -> None:
    r = row  # a Row with visibility, owner, trace_id, id
    if not can_read(r.visibility, r.owner, r.trace_id, ctx.requester):  # type: ignore[attr-defined]
        raise refuse_read("artifact", r.id, r.visibility, ctx.requester)  # type: ignore[attr-defined]


async def list_artifacts(params: ListArtifactsParams, ctx: HandlerContext) -> ListArtifactsOutput:
    async with ctx.read() as conn:
        rows, next_cursor = await store.list_page(conn, params, ctx.requester)
    rows, next_cursor = paging.cut_page(  # within STORAGE_MAX_REPLY_BYTES; the manifest is its stored JSON text
        rows,
        next_cursor,
        budget=paging.page_budget(ctx.settings),
        size_of=lambda row: paging.text_size(row.manifest) + paging.ITEM_OVERHEAD,
        cursor_of=lambda row: cursor.encode(row.created_at, row.id),
    )
    manifests = [store.manifest_of(row) for row in rows]
    return ListArtifactsOutput(count=len(manifests), artifacts=manifests, next_cursor=next_cursor)


async def get_artifact_uri(params: GetArtifactUriParams, ctx: HandlerContext) -> GetArtifactUriOutput:
    async with ctx.read() as conn:
        row = await store.get(conn, params.artifact_id)
    if row is None:
        raise NotFound(f"artifact {params.artifact_id} not found", {"artifact_id": params.artifact_id})
    _check_readable(row, ctx)
    path = ctx.files.resolve_incoming(row.uri)
    uri, signed, expires_at = await ctx.files.sign(path, params.expires_in_seconds)
    return GetArtifactUriOutput(artifact_id=row.id, uri=uri, signed=signed, expires_at=expires_at)


async def delete_artifact(params: DeleteArtifactParams, ctx: HandlerContext) -> DeleteArtifactOutput:
    removed: list[str] = []

    async def commit(conn: AsyncConnection) -> DeleteArtifactOutput:
        removed.clear()  # the writer may run a job again after a deadlock: only the committed run counts
        row = await store.delete_artifact(conn, params.artifact_id)
        if row is not None:
            removed.append(row.uri)
        return DeleteArtifactOutput(artifact_id=params.artifact_id, deleted=row is not None)

    output = await ctx.write(commit)
    for uri in removed:
        await ctx.files.to_orphans(ctx.files.resolve_incoming(uri))
    return output


HANDLERS = {
    "register_artifact": register_artifact,
    "get_artifact": get_artifact,
    "list_artifacts": list_artifacts,
    "get_artifact_uri": get_artifact_uri,
    "delete_artifact": delete_artifact,
}
