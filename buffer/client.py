"""``StorageClient``: what an agent imports. One typed method per action, plus upload and page iterators.

Reads return the action's output model or raise the ``StorageError`` of the reply's code. Writes the
buffer may keep (``register_artifact``, ``save_thread``, ``delete_thread``, ``put_memory``,
``delete_memory``) return ``Buffered`` instead of raising when the worker stays unreachable through the
retries; the command is then replayed in the background until the worker has it.

    async with StorageClient(agent_id="agent.researcher", trace_id="trace-42") as storage:
        result = await storage.upload_artifact(b"report", artifact_type="report", filename="report.md")
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from typing_extensions import Unpack

from buffer._core import ClientCore, validated
from buffer.outcomes import Buffered, CallOptions
from buffer.upload import Source, Stager, new_artifact_id
from contracts import (
    AIContext,
    ArtifactManifest,
    ArtifactStatus,
    CleanupOutput,
    CleanupParams,
    CleanupScope,
    DeleteArtifactOutput,
    DeleteArtifactParams,
    DeleteMemoryOutput,
    DeleteMemoryParams,
    DeleteThreadOutput,
    DeleteThreadParams,
    GetArtifactOutput,
    GetArtifactParams,
    GetArtifactUriOutput,
    GetArtifactUriParams,
    GetMemoryParams,
    GetStatsOutput,
    GetStatsParams,
    GetThreadOutput,
    GetThreadParams,
    ListArtifactsOutput,
    ListArtifactsParams,
    ListNamespacesOutput,
    ListNamespacesParams,
    ListThreadsOutput,
    ListThreadsParams,
    MemoryItem,
    PingOutput,
    PingParams,
    PutMemoryOutput,
    PutMemoryParams,
    RegisterArtifactOutput,
    RegisterArtifactParams,
    SaveThreadOutput,
    SaveThreadParams,
    SearchMemoryOutput,
    SearchMemoryParams,
    ThreadInfo,
    ThreadMessage,
    Visibility,
)
from contracts.retention import INFINITE


def _drop_none(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class _Page(Protocol):
    @property
    def next_cursor(self) -> str | None: ...


P = TypeVar("P", bound=_Page)
T = TypeVar("T")


async def _every_item(fetch: Callable[[str | None], Awaitable[P]], items: Callable[[P], list[T]]) -> AsyncIterator[T]:
    """Every item of a keyset-paged listing: one call per page, until a page has no ``next_cursor``."""
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        for item in items(page):
            yield item
        if not page.next_cursor:
            return
        cursor = page.next_cursor


class StorageClient(ClientCore):
    """An async context manager; safe to share between the tasks of one event loop."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- artifacts -----------------------------------------------------------------------------

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
        retention: str = INFINITE,
        labels: dict[str, str] | None = None,
        ai_context: AIContext | dict[str, Any] | None = None,
        supersedes: str | None = None,
        version: int | None = None,
        artifact_id: str | None = None,
        **options: Unpack[CallOptions],
    ) -> RegisterArtifactOutput | Buffered:
        """Write ``data`` (bytes or a local file path) to ``<STORAGE_ROOT>/temp/`` and register it.

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
            _drop_none(
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
        limit: int = 100,
        cursor: str | None = None,
        **options: Unpack[CallOptions],
    ) -> ListArtifactsOutput:
        """One page, newest first; ``iter_artifacts`` walks all of them."""
        params = validated(
            ListArtifactsParams,
            _drop_none(
                trace_id=trace_id,
                artifact_type=artifact_type,
                created_by=created_by,
                step_id=step_id,
                status=status,
                labels=labels,
                created_after=created_after,
                created_before=created_before,
                latest_only=latest_only,
                limit=limit,
                cursor=cursor,
            ),
        )
        return await self._read("list_artifacts", params, options, ListArtifactsOutput)

    def iter_artifacts(self, *, page_size: int = 100, **filters: Any) -> AsyncIterator[ArtifactManifest]:
        """Every matching manifest, newest first, fetching ``page_size`` per call (filters as ``list_artifacts``)."""
        return _every_item(
            lambda cursor: self.list_artifacts(limit=page_size, cursor=cursor, **filters), lambda page: page.artifacts
        )

    async def get_artifact_uri(
        self, artifact_id: str, *, expires_in_seconds: int = 3600, **options: Unpack[CallOptions]
    ) -> GetArtifactUriOutput:
        params = validated(GetArtifactUriParams, {"artifact_id": artifact_id, "expires_in_seconds": expires_in_seconds})
        return await self._read("get_artifact_uri", params, options, GetArtifactUriOutput)

    async def delete_artifact(self, artifact_id: str, **options: Unpack[CallOptions]) -> DeleteArtifactOutput:
        """Admin only. Retried like any call, never buffered: an operator wants to know it happened."""
        params = validated(DeleteArtifactParams, {"artifact_id": artifact_id})
        return await self._read("delete_artifact", params, options, DeleteArtifactOutput)

    # -- threads -------------------------------------------------------------------------------

    async def save_thread(
        self,
        thread_id: str,
        messages: Sequence[ThreadMessage | dict[str, Any]] = (),
        *,
        metadata: dict[str, Any] | None = None,
        expected_version: int | None = None,
        max_messages: int | None = None,
        ttl_seconds: int | None = None,
        clear: bool = False,
        **options: Unpack[CallOptions],
    ) -> SaveThreadOutput | Buffered:
        params = validated(
            SaveThreadParams,
            _drop_none(
                thread_id=thread_id,
                messages=list(messages),
                metadata=metadata,
                expected_version=expected_version,
                max_messages=max_messages,
                ttl_seconds=ttl_seconds,
                clear=clear,
            ),
        )
        return await self._write("save_thread", params, options, SaveThreadOutput)

    async def get_thread(
        self, thread_id: str, *, limit: int | None = None, include_deleted: bool = False, **options: Unpack[CallOptions]
    ) -> GetThreadOutput:
        params = validated(
            GetThreadParams, _drop_none(thread_id=thread_id, limit=limit, include_deleted=include_deleted)
        )
        return await self._read("get_thread", params, options, GetThreadOutput)

    async def list_threads(
        self,
        *,
        metadata: dict[str, str | int | float | bool] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
        **options: Unpack[CallOptions],
    ) -> ListThreadsOutput:
        """One page, newest first; ``iter_threads`` walks all of them."""
        params = validated(
            ListThreadsParams,
            _drop_none(
                metadata=metadata,
                created_after=created_after,
                created_before=created_before,
                limit=limit,
                cursor=cursor,
            ),
        )
        return await self._read("list_threads", params, options, ListThreadsOutput)

    def iter_threads(self, *, page_size: int = 100, **filters: Any) -> AsyncIterator[ThreadInfo]:
        """Every matching thread, newest first (filters as ``list_threads``)."""
        return _every_item(
            lambda cursor: self.list_threads(limit=page_size, cursor=cursor, **filters), lambda page: page.threads
        )

    async def delete_thread(self, thread_id: str, **options: Unpack[CallOptions]) -> DeleteThreadOutput | Buffered:
        params = validated(DeleteThreadParams, {"thread_id": thread_id})
        return await self._write("delete_thread", params, options, DeleteThreadOutput)

    # -- memory --------------------------------------------------------------------------------

    async def put_memory(
        self,
        namespace: Sequence[str],
        key: str,
        value: dict[str, Any],
        *,
        ttl_seconds: int | None = None,
        labels: dict[str, str] | None = None,
        expected_version: int | None = None,
        visibility: Visibility | str | None = None,
        **options: Unpack[CallOptions],
    ) -> PutMemoryOutput | Buffered:
        params = validated(
            PutMemoryParams,
            _drop_none(
                namespace=list(namespace),
                key=key,
                value=value,
                ttl_seconds=ttl_seconds,
                labels=labels,
                expected_version=expected_version,
                visibility=visibility,
            ),
        )
        return await self._write("put_memory", params, options, PutMemoryOutput)

    async def get_memory(
        self, namespace: Sequence[str], key: str, *, refresh_ttl: bool = False, **options: Unpack[CallOptions]
    ) -> MemoryItem:
        params = validated(GetMemoryParams, {"namespace": list(namespace), "key": key, "refresh_ttl": refresh_ttl})
        return await self._read("get_memory", params, options, MemoryItem)

    async def search_memory(
        self,
        *,
        namespace_prefix: Sequence[str] = (),
        labels: dict[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
        **options: Unpack[CallOptions],
    ) -> SearchMemoryOutput:
        params = validated(
            SearchMemoryParams,
            _drop_none(namespace_prefix=list(namespace_prefix), labels=labels, limit=limit, cursor=cursor),
        )
        return await self._read("search_memory", params, options, SearchMemoryOutput)

    def iter_memory(self, *, page_size: int = 100, **filters: Any) -> AsyncIterator[MemoryItem]:
        """Every matching memory item over all pages (filters as ``search_memory``)."""
        return _every_item(
            lambda cursor: self.search_memory(limit=page_size, cursor=cursor, **filters), lambda page: page.items
        )

    async def list_namespaces(
        self,
        *,
        prefix: Sequence[str] = (),
        max_depth: int | None = None,
        limit: int = 100,
        cursor: str | None = None,
        **options: Unpack[CallOptions],
    ) -> ListNamespacesOutput:
        params = validated(
            ListNamespacesParams,
            _drop_none(prefix=list(prefix), max_depth=max_depth, limit=limit, cursor=cursor),
        )
        return await self._read("list_namespaces", params, options, ListNamespacesOutput)

    async def delete_memory(
        self, namespace: Sequence[str], key: str, **options: Unpack[CallOptions]
    ) -> DeleteMemoryOutput | Buffered:
        params = validated(DeleteMemoryParams, {"namespace": list(namespace), "key": key})
        return await self._write("delete_memory", params, options, DeleteMemoryOutput)

    # -- maintenance ---------------------------------------------------------------------------

    async def cleanup(
        self,
        *,
        dry_run: bool = False,
        scopes: Sequence[CleanupScope | str] | None = None,
        **options: Unpack[CallOptions],
    ) -> CleanupOutput:
        """Admin only; never buffered."""
        params = validated(
            CleanupParams, _drop_none(dry_run=dry_run, scopes=list(scopes) if scopes is not None else None)
        )
        return await self._read("cleanup", params, options, CleanupOutput)

    async def get_stats(self, **options: Unpack[CallOptions]) -> GetStatsOutput:
        return await self._read("get_stats", GetStatsParams(), options, GetStatsOutput)

    async def ping(self, **options: Unpack[CallOptions]) -> PingOutput:
        return await self._read("ping", PingParams(), options, PingOutput)
