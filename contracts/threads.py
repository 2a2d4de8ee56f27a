"""Params and outputs of the thread actions: agent conversation histories."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from contracts._base import Output, Page, PageParams, Params
from contracts.envelope import UtcDatetime
from contracts.manifest import Visibility

ThreadId = Annotated[str, StringConstraints(min_length=1, max_length=255)]
MetadataScalar = str | int | float | bool
MAX_THREAD_READ = 10_000
MAX_METADATA_FILTERS = 32
"""Metadata filters one ``list_threads`` may carry: each is a join, and hundreds made one call run for minutes."""


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class ThreadMessage(Params):
    """A message as an agent sends it; ``id`` is assigned when absent."""

    id: uuid.UUID | None = None
    role: Role
    content: str | list[Any] | dict[str, Any]
    created_at: UtcDatetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class StoredMessage(Output):
    id: uuid.UUID
    role: Role
    content: str | list[Any] | dict[str, Any]
    created_at: UtcDatetime
    metadata: dict[str, Any] = Field(default_factory=dict)
    deleted_at: UtcDatetime | None = None


class ThreadInfo(Output):
    thread_id: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    version: int
    message_count: int
    created_at: UtcDatetime
    updated_at: UtcDatetime
    deleted_at: UtcDatetime | None = None
    expires_at: UtcDatetime | None = None
    owner: str | None = None
    """The requester of the first save; None on threads saved before threads had owners."""
    visibility: Visibility = Visibility.PRIVATE


class SaveThreadParams(Params):
    thread_id: ThreadId
    messages: list[ThreadMessage] = Field(default_factory=list, max_length=10_000)
    metadata: dict[str, Any] | None = None
    expected_version: int | None = Field(default=None, ge=0)
    max_messages: int | None = Field(default=None, ge=1)
    ttl_seconds: int | None = Field(default=None, ge=1)
    clear: bool = False
    visibility: Visibility | None = None
    """Who may read the thread (the artifact rule); a new thread without it is ``private``, a save without it
    keeps the thread's. Only the owner (or an admin) saves at all, so only they change it."""


class SaveThreadOutput(Output):
    thread_id: str
    version: int
    message_ids: list[uuid.UUID]
    inserted: int
    updated: int
    trimmed: int


class GetThreadParams(Params):
    thread_id: ThreadId
    limit: int | None = Field(default=None, ge=1, le=MAX_THREAD_READ)
    cursor: str | None = Field(default=None, max_length=1024)
    """A ``next_cursor`` of an earlier page: the page of messages just older than that page."""
    include_deleted: bool = False


class GetThreadOutput(Output):
    thread: ThreadInfo
    messages: list[StoredMessage]
    """The newest messages (older than the cursor's page), in chronological order within the page."""
    next_cursor: str | None = None
    """Where the older messages continue; None when the page reaches the start of the history."""


class ListThreadsParams(PageParams):
    metadata: dict[Annotated[str, StringConstraints(min_length=1, max_length=128)], MetadataScalar] = Field(
        default_factory=dict, max_length=MAX_METADATA_FILTERS
    )
    created_after: UtcDatetime | None = None
    created_before: UtcDatetime | None = None


class ListThreadsOutput(Page):
    threads: list[ThreadInfo]


class DeleteThreadParams(Params):
    thread_id: ThreadId


class DeleteThreadOutput(Output):
    thread_id: str
    deleted: bool
