"""Artifact actions: register (the file checks, then the commit point, then the move), read, list.

Delete and restore are in ``artifact_tombstones``."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, Self

from pydantic import PrivateAttr
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import (
    Aborted,
    AlreadyExists,
    ArtifactDetails,
    ArtifactFailure,
    ArtifactManifest,
    ArtifactStatus,
    ChangeKind,
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
from service.core import paging
from service.core.context import HandlerContext
from service.core.recording import Committed
from service.core.replies import Prewritten
from service.files import Upload
from service.handlers import trace_quota
from service.handlers.artifact_access import check_readable, expired, live_row, readable
from service.identity import Requester
from service.store import artifacts as store
from service.store import changes, cursor, lineage
from service.store.types import AnyRow

log = logging.getLogger(__name__)

MAX_CHAIN = 10_000


async def register_artifact(
    params: RegisterArtifactParams, ctx: HandlerContext
) -> RegisterArtifactOutput | Committed[RegisterArtifactOutput]:
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
    source = files.resolve_upload(manifest.uri)
    limit = ctx.settings.max_file_bytes
    try:
        upload = await files.stage(source, manifest.uri, expected_size=manifest.size_bytes, max_bytes=limit)
    except NotFound as missing:
        return await _twin_or_raise(ctx, manifest, missing)
    try:  # the upload holds the hashed file open until it is placed: closed whatever happens
        _check_upload(upload, manifest, limit)
        return await _commit_and_place(ctx, manifest, upload)
    finally:
        upload.close()


def _check_upload(upload: Upload, manifest: ArtifactManifest, limit: int) -> None:
    """Size cap, size, checksum; the errors give what the agent claimed, never what the file holds.

    A refused file stays where it is: anyone can name any temp file, so a refusal must not consume it.
    """
    if upload.size > limit:
        raise OutOfRange(
            f"file is larger than the limit of {limit} bytes",
            {"field": "manifest.uri", "limit_bytes": limit, "uri": manifest.uri},
        )
    if upload.size != manifest.size_bytes:
        raise InvalidArgument(
            "size_bytes does not match the file",
            {"field": "manifest.size_bytes", "expected": manifest.size_bytes},
        )
    if upload.checksum != manifest.checksum:
        raise InvalidArgument(
            "checksum does not match the file",
            {"field": "manifest.checksum", "expected": manifest.checksum},
        )


async def _commit_and_place(
    ctx: HandlerContext, manifest: ArtifactManifest, upload: Upload
) -> Committed[RegisterArtifactOutput]:
    """The commit point, then the move: a crash between them is repaired by recovery from temp/."""
    files = ctx.files
    requester = ctx.requester
    dest = files.artifact_path(manifest.trace_id, manifest.id, upload.path)
    applied_retention = manifest.retention or ctx.settings.retention_defaults.for_type(manifest.artifact_type)
    final = manifest.model_copy(
        update={
            "status": ArtifactStatus.COMPLETED,
            "uri": files.url(dest),
            "owner": manifest.owner or requester.id,
            "retention": applied_retention,
        }
    )
    retention = parse_retention(applied_retention)
    expires_at = ctx.now + retention if retention is not None else None

    async def commit(conn: AsyncConnection) -> RegisterArtifactOutput:
        if final.supersedes is not None:  # a twin that won meanwhile is already the successor: answer as it
            if (raced := await store.get(conn, final.id)) is not None:
                return _already_registered(raced, manifest, requester)
            await _check_supersedes(conn, final, requester, ctx.now)
        if not await store.insert_artifact(conn, final, expires_at=expires_at, now=ctx.now):
            return await _lost_race(conn, final, manifest, requester)
        await lineage.record_inputs(conn, final)
        await changes.record(conn, registered(final, ctx))  # before its quota warning, if it earns one
        await trace_quota.charge(conn, ctx, final)  # over the quota: raises, and the row and its change go back out
        return _registration(final, new=True)

    async def place(output: RegisterArtifactOutput) -> None:
        if output.registered:
            ctx.services.faults.hit("after_commit")
            if not await files.place(upload, dest):
                await _fail_tampered(ctx, final.id, manifest.uri)

    committed = await ctx.commit(commit, then=place)
    return committed


def registered(manifest: ArtifactManifest, ctx: HandlerContext) -> dict[str, Any]:
    """The ``artifact_registered`` change of a registration (or of a restore: the artifact is live again)."""
    return changes.new_change(
        ChangeKind.ARTIFACT_REGISTERED,
        node=ctx.settings.node_name,
        at=ctx.now,
        visibility=manifest.visibility.value,
        owner=manifest.owner,
        trace_id=manifest.trace_id,
        artifact_id=manifest.id,
        version=manifest.version,
    )


async def _fail_tampered(ctx: HandlerContext, artifact_id: str, uri: str) -> None:
    """The upload was written to after it was hashed: no file holds the registered bytes, so the committed
    artifact is ``failed``, as the missing_files scope marks one whose file is gone."""
    log.warning("artifact %s: %s changed after it was hashed; nothing placed, marked failed", artifact_id, uri)
    await ctx.services.writer.submit(lambda conn: store.set_status(conn, [artifact_id], ArtifactStatus.FAILED.value))


async def _twin_or_raise(ctx: HandlerContext, manifest: ArtifactManifest, missing: NotFound) -> RegisterArtifactOutput:
    """The file is gone: a twin of this command (another envelope, another worker) may have just moved it."""
    async with ctx.read() as conn:
        twin = await store.get(conn, manifest.id)
    if twin is None:
        raise missing
    return _already_registered(twin, manifest, ctx.requester)


def _already_registered(row: AnyRow, manifest: ArtifactManifest, requester: Requester) -> RegisterArtifactOutput:
    """A retry of a registration gets the stored result; anything else about that id is a conflict.

    A tombstone keeps its id taken (a restore may bring it back): the same bare conflict, with reason
    ``deleted`` for a requester who could read it. A retry of the registration under its own envelope is
    answered from the inbox before this, with the reply it got then.
    """
    if not readable(row, requester):  # a bare conflict: nothing of someone else's artifact is told
        raise AlreadyExists(f"artifact {manifest.id} is already registered", {"artifact_id": manifest.id})
    if row.deleted_at is not None:
        raise AlreadyExists(
            f"artifact {manifest.id} was registered and deleted: its id stays taken",
            {"artifact_id": manifest.id, "reason": "deleted"},
        )
    stored = store.manifest_of(row)
    if stored.checksum != manifest.checksum:
        raise AlreadyExists(
            f"artifact {manifest.id} is already registered with another checksum",
            {"artifact_id": manifest.id, "checksum": stored.checksum, "requested_checksum": manifest.checksum},
        )
    return _registration(stored, new=False)


def _registration(manifest: ArtifactManifest, *, new: bool) -> RegisterArtifactOutput:
    """The reply to a register: ``new`` for this command's own commit, else the stored registration it repeats."""
    return RegisterArtifactOutput(
        artifact_id=manifest.id,
        registered=new,
        already_exists=not new,
        uri=manifest.uri,
        checksum=manifest.checksum,
        manifest=manifest,
    )


async def _lost_race(
    conn: AsyncConnection, final: ArtifactManifest, requested: ArtifactManifest, requester: Requester
) -> RegisterArtifactOutput:
    """Another worker committed this artifact, or another successor of its predecessor, meanwhile."""
    if (twin := await store.get(conn, final.id)) is not None:
        return _already_registered(twin, requested, requester)
    if final.supersedes is not None and (successor := await store.successor_of(conn, final.supersedes)) is not None:
        raise _successor_exists(final.supersedes, successor, requester)
    raise Aborted("the artifact raced with a concurrent change, retry", {"artifact_id": final.id})


def _successor_exists(supersedes: str, successor: AnyRow, requester: Requester) -> AlreadyExists:
    """The chain would fork; the existing successor is named only to a requester who may read it."""
    details = {"supersedes": supersedes}
    if readable(successor, requester):
        details["existing_successor"] = successor.id
    return AlreadyExists(f"artifact {supersedes} already has a successor", details)


async def _check_supersedes(
    conn: AsyncConnection, manifest: ArtifactManifest, requester: Requester, now: datetime
) -> None:
    """Only the predecessor's owner (or an admin) extends its chain.

    A predecessor that is unknown, expired or unreadable gets one and the same NOT_FOUND, so the answer
    says nothing of an artifact the requester may not see: not that it exists, not its version. A deleted
    predecessor may be superseded: it keeps its place (and its successor's slot) in the chain, so the
    chain goes on past it, and ``latest`` walks past it to the new version.
    """
    assert manifest.supersedes is not None
    previous = await store.get(conn, manifest.supersedes)
    if previous is None or expired(previous, now) or not readable(previous, requester):
        raise NotFound(
            f"supersedes names unknown artifact {manifest.supersedes}",
            {"field": "manifest.supersedes", "supersedes": manifest.supersedes},
        )
    if not requester.is_admin and (requester.id is None or previous.owner != requester.id):
        raise PermissionDenied(
            f"only the owner of artifact {manifest.supersedes} may register its successor",
            {"field": "manifest.supersedes", "supersedes": manifest.supersedes, "requester": requester.id},
        )
    if manifest.version != previous.version + 1:
        raise FailedPrecondition(
            f"a successor of version {previous.version} must have version {previous.version + 1}",
            {"field": "manifest.version", "expected": previous.version + 1, "actual": manifest.version},
        )
    successor = await store.successor_of(conn, manifest.supersedes)
    if successor is not None:
        raise _successor_exists(manifest.supersedes, successor, requester)


async def get_artifact(params: GetArtifactParams, ctx: HandlerContext) -> GetArtifactOutput:
    """With ``latest``: the newest live version reachable through successors that are not expired and are
    readable by the requester; the walk goes on past deleted ones and stops before the first that is
    expired or unreadable (it is not the requester's to see). From a deleted start, ``latest`` is the
    newest live version after it, and NOT_FOUND (reason ``deleted``) when there is none."""
    async with ctx.lookup() as conn:
        row = await store.get(conn, params.artifact_id)
        row = live_row(row, params.artifact_id, ctx, allow_deleted=params.latest)
        check_readable(row, ctx)
        if params.latest:
            walked = row
            for _ in range(MAX_CHAIN):
                newer = await store.successor_of(conn, walked.id)
                if newer is None or expired(newer, ctx.now) or not readable(newer, ctx.requester):
                    break
                walked = newer
                if newer.deleted_at is None:
                    row = newer
            live_row(row, params.artifact_id, ctx)  # a deleted start with no live version after it
    return GetArtifactOutput(artifact_id=row.id, manifest=store.manifest_of(row), details=_failure(row))


async def list_artifacts(params: ListArtifactsParams, ctx: HandlerContext) -> ListArtifactsOutput:
    async with ctx.read() as conn:
        rows, next_cursor = await store.list_page(conn, params, ctx.requester, now=ctx.now)
    listed = [(row, store.manifest_json(row)) for row in rows]
    listed, next_cursor = paging.cut_page(  # within STORAGE_MAX_REPLY_BYTES: each text's exact size and its comma
        listed,
        next_cursor,
        budget=paging.page_budget(ctx.settings),
        size_of=lambda item: paging.text_size(item[1]) + 1,
        cursor_of=lambda item: cursor.encode(item[0].created_at, item[0].id),
    )
    return ListedArtifacts.of([text for _, text in listed], next_cursor)


class ListedArtifacts(ListArtifactsOutput, Prewritten):
    """A page whose manifests are their stored JSON texts, spliced into the reply as they are.

    Parsing and writing them again was a fifth of a listing's CPU. ``artifacts`` is parsed only when read
    (a caller in the process, a test); the reply never reads it.
    """

    _texts: list[str] = PrivateAttr(default_factory=list)

    @classmethod
    def of(cls, texts: list[str], next_cursor: str | None) -> Self:
        page = cls.model_construct(count=len(texts), next_cursor=next_cursor)
        page._texts = texts
        return page

    def output_json(self) -> str:
        """What ``ListArtifactsOutput.model_dump_json()`` writes for these manifests."""
        after = "null" if self.next_cursor is None else json.dumps(self.next_cursor, ensure_ascii=False)
        return f'{{"count":{self.count},"next_cursor":{after},"artifacts":[{",".join(self._texts)}]}}'

    if not TYPE_CHECKING:  # as pydantic's own __getattr__, hidden from type checkers (fields are typed)

        def __getattr__(self, name: str) -> Any:
            if name == "artifacts":
                parsed = [ArtifactManifest.model_validate_json(text) for text in self._texts]
                self.__dict__["artifacts"] = parsed
                return parsed
            return super().__getattr__(name)

        def model_dump(self, **options: Any) -> dict[str, Any]:
            self.artifacts  # noqa: B018  # parsed first: pydantic reads the fields from __dict__
            return super().model_dump(**options)

        def model_dump_json(self, **options: Any) -> str:
            self.artifacts  # noqa: B018
            return super().model_dump_json(**options)


def _failure(row: AnyRow) -> ArtifactDetails | None:
    """Why a failed artifact failed, when the worker recorded it (the scrubber, a lost file)."""
    if row.status != ArtifactStatus.FAILED.value or row.failure_reason is None:
        return None
    return ArtifactDetails(reason=ArtifactFailure(row.failure_reason))


def _check_servable(row: AnyRow) -> None:
    """A failed artifact has no bytes to hand out: its file is gone, holds other bytes, or never arrived.
    Called after the read check, so only a requester who may read the artifact learns this."""
    if row.status == ArtifactStatus.FAILED.value:
        reason = row.failure_reason or ArtifactStatus.FAILED.value
        raise FailedPrecondition(
            f"artifact {row.id} is failed ({reason}): it has no file to read",
            {"artifact_id": row.id, "status": ArtifactStatus.FAILED.value, "reason": reason},
        )


async def get_artifact_uri(params: GetArtifactUriParams, ctx: HandlerContext) -> GetArtifactUriOutput:
    async with ctx.read() as conn:
        row = await store.get(conn, params.artifact_id)
    row = live_row(row, params.artifact_id, ctx)
    check_readable(row, ctx)
    _check_servable(row)
    path = ctx.files.resolve_stored(row.uri)
    uri, signed, expires_at = await ctx.files.sign(path, params.expires_in_seconds)
    return GetArtifactUriOutput(artifact_id=row.id, uri=uri, signed=signed, expires_at=expires_at)
