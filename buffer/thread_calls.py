"""The thread calls of ``StorageClient``: save incrementally, read, list, delete."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from typing_extensions import Unpack

from buffer._calls import drop_none, every_item
from buffer._core import ClientCore, validated
from buffer.outcomes import Buffered, CallOptions
from contracts import (
    DeleteThreadOutput,
    DeleteThreadParams,
    GetThreadOutput,
    GetThreadParams,
    ListThreadsOutput,
    ListThreadsParams,
    SaveThreadOutput,
    SaveThreadParams,
    ThreadInfo,
    ThreadMessage,
)


class ThreadCalls(ClientCore):
    """One typed method per thread action."""

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
            drop_none(
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
            GetThreadParams, drop_none(thread_id=thread_id, limit=limit, include_deleted=include_deleted)
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
            drop_none(
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
        return every_item(
            lambda cursor: self.list_threads(limit=page_size, cursor=cursor, **filters), lambda page: page.threads
        )

    async def delete_thread(self, thread_id: str, **options: Unpack[CallOptions]) -> DeleteThreadOutput | Buffered:
        params = validated(DeleteThreadParams, {"thread_id": thread_id})
        return await self._write("delete_thread", params, options, DeleteThreadOutput)
