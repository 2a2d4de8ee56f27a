"""The thread calls of ``StorageClient``: save incrementally, read, list, delete, inspect, restore."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, Final, Literal

from typing_extensions import Unpack

from buffer._calls import drop_none, every_item
from buffer._core import ClientCore, validated
from buffer.outcomes import Buffered, CallOptions
from contracts import (
    DeleteThreadOutput,
    DeleteThreadParams,
    GetThreadInfoOutput,
    GetThreadInfoParams,
    GetThreadOutput,
    GetThreadParams,
    ListThreadsOutput,
    ListThreadsParams,
    RestoreThreadOutput,
    RestoreThreadParams,
    SaveThreadOutput,
    SaveThreadParams,
    ThreadInfo,
    ThreadMessage,
    Visibility,
)


class Clear(Enum):
    """The type of ``CLEAR``."""

    CLEAR = "clear"


CLEAR: Final = Clear.CLEAR
"""Pass as ``max_messages`` or ``ttl_seconds`` of ``save_thread`` to make the thread forget that setting (the
wire's ``null``); ``None``, the default, leaves the remembered setting as it is."""


class ThreadCalls(ClientCore):
    """One typed method per thread action."""

    async def save_thread(
        self,
        thread_id: str,
        messages: Sequence[ThreadMessage | dict[str, Any]] = (),
        *,
        metadata: dict[str, Any] | None = None,
        expected_version: int | None = None,
        max_messages: int | Literal[Clear.CLEAR] | None = None,
        ttl_seconds: int | Literal[Clear.CLEAR] | None = None,
        clear: bool = False,
        visibility: Visibility | None = None,
        **options: Unpack[CallOptions],
    ) -> SaveThreadOutput | Buffered:
        """Add or update messages. ``max_messages`` and ``ttl_seconds`` are remembered by the thread and apply to
        every later save; ``None`` keeps what it remembers, ``CLEAR`` forgets it (no trimming, no expiry).
        ``visibility`` (``private``, ``trace`` or ``public``; the owner's to set) stays as it is when ``None``."""
        values = drop_none(
            thread_id=thread_id,
            messages=list(messages),
            metadata=metadata,
            expected_version=expected_version,
            max_messages=max_messages,
            ttl_seconds=ttl_seconds,
            clear=clear,
            visibility=visibility,
        )
        for name in ("max_messages", "ttl_seconds"):
            if values.get(name) is CLEAR:
                values[name] = None  # explicitly null: sent as null, where an absent setting is left out
        params = validated(SaveThreadParams, values)
        return await self._write("save_thread", params, options, SaveThreadOutput)

    async def get_thread(
        self,
        thread_id: str,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        include_deleted: bool = False,
        **options: Unpack[CallOptions],
    ) -> GetThreadOutput:
        """The newest ``limit`` messages; with ``cursor`` (an earlier page's ``next_cursor``) the page just older."""
        params = validated(
            GetThreadParams,
            drop_none(thread_id=thread_id, limit=limit, cursor=cursor, include_deleted=include_deleted),
        )
        return await self._read("get_thread", params, options, GetThreadOutput)

    async def list_threads(
        self,
        *,
        metadata: dict[str, str | int | float | bool] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        search: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        **options: Unpack[CallOptions],
    ) -> ListThreadsOutput:
        """One page, newest first; ``iter_threads`` walks all of them.

        ``search``: only those with a top-level metadata string or number holding it, ignoring case
        (3 to 128 characters).
        """
        params = validated(
            ListThreadsParams,
            drop_none(
                metadata=metadata,
                created_after=created_after,
                created_before=created_before,
                search=search,
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

    async def get_thread_info(
        self, thread_id: str, *, include_deleted: bool = False, **options: Unpack[CallOptions]
    ) -> GetThreadInfoOutput:
        """Owner, visibility, version, message count, remembered settings, times, metadata and the current
        system prompt (``system_prompt_omitted`` when too large for one reply)."""
        params = validated(GetThreadInfoParams, {"thread_id": thread_id, "include_deleted": include_deleted})
        return await self._read("get_thread_info", params, options, GetThreadInfoOutput)

    async def restore_thread(
        self, thread_id: str, *, messages: Literal["trimmed"] | None = None, **options: Unpack[CallOptions]
    ) -> RestoreThreadOutput:
        """Owner or admin. Undelete a deleted thread, or with ``messages="trimmed"`` bring back its trimmed
        messages, within the worker's purge window. Retried like any call, never buffered: the window may
        close while a buffered restore waits, and the caller wants to know it happened."""
        params = validated(RestoreThreadParams, drop_none(thread_id=thread_id, messages=messages))
        return await self._read("restore_thread", params, options, RestoreThreadOutput)
