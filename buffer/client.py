"""``StorageClient``: what an agent imports. One typed method per action, plus upload and page iterators.

Reads return the action's output model or raise the ``StorageError`` of the reply's code. Writes the
buffer may keep (``register_artifact``, ``save_thread``, ``delete_thread``, ``put_memory``,
``delete_memory``) return ``Buffered`` instead of raising when the worker stays unreachable through the
retries; the command is then replayed in the background until the worker has it.

    async with StorageClient(agent_id="agent.researcher", trace_id="trace-42") as storage:
        result = await storage.upload_artifact(b"report", artifact_type="report", filename="report.md")
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any, Self

from typing_extensions import Unpack

from buffer._calls import drop_none, every_item
from buffer._core import validated
from buffer.artifact_calls import ArtifactCalls
from buffer.change_calls import ChangeCalls
from buffer.control_calls import ControlCalls
from buffer.outcomes import Buffered, CallOptions
from buffer.thread_calls import ThreadCalls
from contracts import (
    CleanupOutput,
    CleanupParams,
    CleanupScope,
    DeleteMemoryOutput,
    DeleteMemoryParams,
    GetMemoryParams,
    GetStatsOutput,
    GetStatsParams,
    ListNamespacesOutput,
    ListNamespacesParams,
    MemoryItem,
    PingOutput,
    PingParams,
    PutMemoryOutput,
    PutMemoryParams,
    SearchMemoryOutput,
    SearchMemoryParams,
    Visibility,
)


class StorageClient(ArtifactCalls, ThreadCalls, ChangeCalls, ControlCalls):
    """An async context manager; safe to share between the tasks of one event loop."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

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
            drop_none(
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
            drop_none(namespace_prefix=list(namespace_prefix), labels=labels, limit=limit, cursor=cursor),
        )
        return await self._read("search_memory", params, options, SearchMemoryOutput)

    def iter_memory(self, *, page_size: int = 100, **filters: Any) -> AsyncIterator[MemoryItem]:
        """Every matching memory item over all pages (filters as ``search_memory``)."""
        return every_item(
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
            drop_none(prefix=list(prefix), max_depth=max_depth, limit=limit, cursor=cursor),
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
            CleanupParams, drop_none(dry_run=dry_run, scopes=list(scopes) if scopes is not None else None)
        )
        return await self._read("cleanup", params, options, CleanupOutput)

    async def get_stats(self, **options: Unpack[CallOptions]) -> GetStatsOutput:
        return await self._read("get_stats", GetStatsParams(), options, GetStatsOutput)

    async def ping(self, **options: Unpack[CallOptions]) -> PingOutput:
        return await self._read("ping", PingParams(), options, PingOutput)
