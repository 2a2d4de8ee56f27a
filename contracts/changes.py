"""Change events: what the worker tells the bus after every committed write, and ``changes_since`` to catch up.

Every committed write records its change in the same transaction (a transactional outbox); after the commit
the worker publishes it as an EVENT on ``evt.storage.<kind>``, with the change's id as the envelope id, and
keeps it for ``STORAGE_CHANGES_RETENTION`` so an agent that was away can ask ``changes_since`` for what it
missed. A change holds pointers only (ids, trace, version, visibility): never content, never metadata.
Delivery is at least once: a subscriber drops an envelope id it has seen.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final

from pydantic import BaseModel, Field

from contracts._base import Page, PageParams
from contracts.envelope import UtcDatetime
from contracts.manifest import Visibility
from contracts.quotas import TraceQuota

EVENT_PREFIX: Final = "evt.storage."


class ChangeKind(StrEnum):
    ARTIFACT_REGISTERED = "artifact_registered"
    ARTIFACT_DELETED = "artifact_deleted"
    THREAD_SAVED = "thread_saved"
    THREAD_DELETED = "thread_deleted"
    MEMORY_PUT = "memory_put"
    MEMORY_DELETED = "memory_deleted"
    QUOTA_WARNING = "quota_warning"

    @property
    def routing_key(self) -> str:
        """``evt.storage.<kind>``: the event type and routing key of this kind's events."""
        return f"{EVENT_PREFIX}{self.value}"


def kind_of_event(event_type: str) -> ChangeKind | None:
    """The change kind an event type names, or None for any other event."""
    if not event_type.startswith(EVENT_PREFIX):
        return None
    try:
        return ChangeKind(event_type.removeprefix(EVENT_PREFIX))
    except ValueError:
        return None


class Change(BaseModel):
    """``event_data`` of every ``evt.storage.*`` event and one item of ``changes_since``: pointers only."""

    change_id: int
    """Position in the worker's change log, growing in commit order; the event's envelope id is its decimal."""
    kind: ChangeKind
    occurred_at: UtcDatetime
    node: str
    """The storage node that committed the change."""
    trace_id: str | None = None
    visibility: Visibility | None = None
    artifact_id: str | None = None
    thread_id: str | None = None
    namespace: list[str] | None = None
    key: str | None = None
    version: int | None = None
    """The artifact's, thread's or memory item's version after the change."""
    quota: TraceQuota | None = None
    """``quota_warning`` only, with ``limit``, ``usage`` and ``threshold_percent`` (as ``contracts.QuotaWarning``)."""
    limit: int | None = None
    usage: int | None = None
    threshold_percent: int | None = None

    @property
    def event_id(self) -> str:
        return str(self.change_id)


ChangeKinds = Annotated[list[ChangeKind], Field(min_length=1, max_length=len(ChangeKind))]


class ChangesSinceParams(PageParams):
    """Changes after ``cursor`` (a ``cursor`` of an earlier answer; none: the oldest kept), oldest first.

    Only the changes the requester may read are returned: an artifact or thread it may read, a memory
    namespace it may read, a quota warning of a trace it may read; admins read every change.
    """

    kinds: ChangeKinds | None = None
    trace_id: str | None = Field(default=None, min_length=1, max_length=256)


class ChangesSinceOutput(Page):
    changes: list[Change]
    cursor: str
    """Where this answer stopped reading the log (past changes the requester may not read, too): pass it to
    the next ``changes_since`` to get only what came after. ``next_cursor`` is set as well while more wait."""
