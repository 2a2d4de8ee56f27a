"""The artifact calls of ``StorageClient``: register (or upload and register), read, list, link, delete, restore."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from typing_extensions import Unpack

from buffer._calls import drop_none, every_item
from buffer._core import ClientCore, validated
from buffer.outcomes import Buffered, CallOptions
from buffer.upload import Source, Stager, new_artifact_id
from contracts import (
    AIContext,
    ArtifactManifest,
    ArtifactStatus,
    DeleteArtifactOutput,
    DeleteArtifactParams,
    GetArtifactOutput,
    GetArtifactParams,
    GetArtifactUriOutput,
    GetArtifactUriParams,
    GetLineageOutput,
    GetLineageParams,
    LineageDirection,
    ListArtifactsOutput,
    ListArtifactsParams,
    RegisterArtifactOutput,
    RegisterArtifactParams,
    RestoreArtifactOutput,
    RestoreArtifactParams,
    Visibility,
)


class ArtifactCalls(ClientCore):
    """One typed method per artifact action."""

    async def register_artifact(
        self, manifest: ArtifactManifest | dict[str, Any], **options: Unpack[CallOptions]
    ) -> RegisterArtifactOutput | Buffered:
        params = validated(RegisterArtifactParams, {"manifest": manifest})
        return await self._write("register_artifact", params, options, RegisterArtifactOutput)

    async def upload_artifact(
        self,
        data: Source,
        *,
        artifact_type: str,
        trace_id: str | None = None,
        filename: str | None = None,
        content_type: str | None = None,
        step_id: str | None = None,
        created_by: str | None = None,
        owner: str | None = None,
        visibility: Visibility | str = Visibility.TRACE,
        retention: str | None = None,
        labels: dict[str, str] | None = None,
        ai_context: AIContext | dict[str, Any] | None = None,
        supersedes: str | None = None,
        version: int | None = None,
        artifact_id: str | None = None,
        **options: Unpack[CallOptions],
    ) -> RegisterArtifactOutput | Buffered:
        """Write ``data`` (bytes or a local file path) to ``<STORAGE_ROOT>/temp/`` and register it.

        Without ``retention`` the worker applies its default for ``artifact_type`` (``STORAGE_DEFAULT_RETENTION``).
        The manifest gets a fresh ``art_<uuid4>`` id unless one is given, the size and sha256 measured
        while streaming, and the client's ``trace_id`` and ``agent_id`` unless others are given.
        """
        trace = trace_id or self.trace_id
        if not trace:
            raise ValueError("upload_artifact needs a trace_id (pass one, or give the client a trace_id)")
        artifact_id = artifact_id or new_artifact_id()
        stager = Stager(self.settings.storage_root)
        staged = await asyncio.to_thread(stager.stage, data, artifact_id, filename=filename, content_type=content_type)
        manifest = validated(
            ArtifactManifest,
            drop_none(
                id=artifact_id,
                version=version,
                supersedes=supersedes,
                trace_id=trace,
                step_id=step_id,
                created_by=created_by or self.settings.agent_id,
                artifact_type=artifact_type,
                content_type=staged.content_type,
                uri=staged.uri,
                size_bytes=staged.size_bytes,
                checksum=staged.checksum,
                retention=retention,
                owner=owner,
                visibility=visibility,
                context=ai_context,
                labels=labels,
            ),
        )
        return await self.register_artifact(manifest, **options)

    async def get_artifact(
        self, artifact_id: str, *, latest: bool = False, **options: Unpack[CallOptions]
    ) -> GetArtifactOutput:
        params = validated(GetArtifactParams, {"artifact_id": artifact_id, "latest": latest})
        return await self._read("get_artifact", params, options, GetArtifactOutput)

    async def list_artifacts(
        self,
        *,
        trace_id: str | None = None,
        artifact_type: str | None = None,
        created_by: str | None = None,
        step_id: str | None = None,
        status: ArtifactStatus | str | None = None,
        labels: dict[str, str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        latest_only: bool = False,
        search: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        **options: Unpack[CallOptions],
    ) -> ListArtifactsOutput:
        """One page, newest first; ``iter_artifacts`` walks all of them.

        ``search``: only those with a label value holding it, ignoring case (3 to 128 characters).
        """
        params = validated(
            ListArtifactsParams,
            drop_none(
                trace_id=trace_id,
                artifact_type=artifact_type,
                created_by=created_by,
                step_id=step_id,
                status=status,
                labels=labels,
                created_after=created_after,
                created_before=created_before,
                latest_only=latest_only,
                search=search,
                limit=limit,
                cursor=cursor,
            ),
        )
        return await self._read("list_artifacts", params, options, ListArtifactsOutput)

    def iter_artifacts(self, *, page_size: int = 100, **filters: Any) -> AsyncIterator[ArtifactManifest]:
        """Every matching manifest, newest first, fetching ``page_size`` per call (filters as ``list_artifacts``)."""
        return every_item(
            lambda cursor: self.list_artifacts(limit=page_size, cursor=cursor, **filters), lambda page: page.artifacts
        )

    async def get_artifact_uri(
        self, artifact_id: str, *, expires_in_seconds: int = 3600, **options: Unpack[CallOptions]
    ) -> GetArtifactUriOutput:
        params = validated(GetArtifactUriParams, {"artifact_id": artifact_id, "expires_in_seconds": expires_in_seconds})
        return await self._read("get_artifact_uri", params, options, GetArtifactUriOutput)

    async def get_lineage(
        self,
        artifact_id: str,
        *,
        direction: LineageDirection | str = LineageDirection.BOTH,
        depth: int = 3,
        **options: Unpack[CallOptions],
    ) -> GetLineageOutput:
        """Where the artifact came from (``upstream``) and what was made from it (``downstream``), ``depth`` steps
        (1-10) each way: manifests the requester may read, ``HiddenNode`` for the others, and the edges."""
        params = validated(GetLineageParams, {"artifact_id": artifact_id, "direction": direction, "depth": depth})
        return await self._read("get_lineage", params, options, GetLineageOutput)

    async def delete_artifact(self, artifact_id: str, **options: Unpack[CallOptions]) -> DeleteArtifactOutput:
        """Admin only. Retried like any call, never buffered: an operator wants to know it happened."""
        params = validated(DeleteArtifactParams, {"artifact_id": artifact_id})
        return await self._read("delete_artifact", params, options, DeleteArtifactOutput)

    async def restore_artifact(self, artifact_id: str, **options: Unpack[CallOptions]) -> RestoreArtifactOutput:
        """Admin only: a deleted artifact back, file included, within the worker's ``STORAGE_PURGE_AFTER``.
        Retried like any call, never buffered (as ``delete_artifact``)."""
        params = validated(RestoreArtifactParams, {"artifact_id": artifact_id})
        return await self._read("restore_artifact", params, options, RestoreArtifactOutput)
