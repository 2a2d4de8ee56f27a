"""Params and outputs of the thread actions: agent conversation histories."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from contracts._base import Output, Page, PageParams, Params, SearchText
from contracts.envelope import UtcDatetime
from contracts.manifest import Visibility

ThreadId = Annotated[str, StringConstraints(min_length=1, max_length=255)]
MetadataScalar = str | int | float | bool
MAX_THREAD_READ = 10_000
MAX_METADATA_FILTERS = 32
"""Metadata filters one ``list_threads`` may carry: each is a join, and hundreds made one call run for minutes."""
MAX_TTL_SECONDS = 1000 * 365 * 86400
"""A thousand years: a longer TTL would put ``expires_at`` past the calendar; leave it out instead."""
MAX_KEPT_MESSAGES = 1_000_000_000


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
    max_messages: int | None = Field(default=None, ge=1, le=MAX_KEPT_MESSAGES)
    """Keep the newest N non-system messages. The thread remembers it: later saves without it trim alike;
    ``null`` (sent explicitly) forgets it. Absent and ``null`` differ: the worker reads ``model_fields_set``."""
    ttl_seconds: int | None = Field(default=None, ge=1, le=MAX_TTL_SECONDS)
    """``expires_at = now + ttl``. The thread remembers it: every later save moves the expiry alike;
    ``null`` (sent explicitly) forgets it and the thread no longer expires."""
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
    search: SearchText | None = None
    """Threads with a top-level metadata string or number holding this, ignoring case (3 to 128 characters)."""


class ListThreadsOutput(Page):
    threads: list[ThreadInfo]


class DeleteThreadParams(Params):
    thread_id: ThreadId


class DeleteThreadOutput(Output):
    thread_id: str
    deleted: bool


class GetThreadInfoParams(Params):
    thread_id: ThreadId
    include_deleted: bool = False
    """Also answer for a soft-deleted thread (as ``get_thread``): what ``restore_thread`` would bring back."""


class GetThreadInfoOutput(ThreadInfo):
    """The thread's info (as ``get_thread`` gives it), its remembered settings and its current system prompt."""

    max_messages: int | None = None
    ttl_seconds: int | None = None
    system_prompt: str | list[Any] | dict[str, Any] | None = None
    """The content of the newest live ``system`` message; None when there is none or it is omitted."""
    system_prompt_id: uuid.UUID | None = None
    system_prompt_omitted: bool = False
    """True when the system prompt would take the reply past ``STORAGE_MAX_REPLY_BYTES``: ``system_prompt``
    is then None; ``system_prompt_id`` still names the message."""


class RestoreThreadParams(Params):
    thread_id: ThreadId
    messages: Literal["trimmed"] | None = None
    """Absent: undelete the soft-deleted thread. ``"trimmed"``: bring back the messages ``max_messages`` hid."""


class RestoreThreadOutput(Output):
    thread_id: str
    version: int
    """The thread's new version: a restore always bumps it, so ``expected_version`` writers notice."""
    message_count: int
    """Live messages after the restore."""
    restored_messages: int = 0
    """Trimmed messages brought back (0 when the thread itself was undeleted)."""
