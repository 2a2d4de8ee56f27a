"""The schema as SQLAlchemy 2 typed models. Queries use Core on these tables (cheaper than ORM sessions)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, MetaData, String, Text, UniqueConstraint, Uuid, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from service.store.types import JsonType, UtcDateTime

if TYPE_CHECKING:
    from sqlalchemy import Table

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JsonType}

    if TYPE_CHECKING:
        # Every model here maps one declared Table; SQLAlchemy types __table__ as the wider FromClause,
        # which insert/update/delete do not take.
        __table__: ClassVar[Table]


def _set_only(table: str, column: str) -> Index:
    """A partial index over the rows where ``column`` is set: cleanup finds them, and the planner never
    mistakes it for a way to find the (many) live rows where it is NULL."""
    where = text(f"{column} IS NOT NULL")
    return Index(f"ix_{table}_{column}_set", column, sqlite_where=where, postgresql_where=where)


def _verify_queue() -> Index:
    """The scrubber's queue: completed artifacts, never verified first (in registration order), then the
    longest unverified. Partial, so failed and uploading rows cost it nothing (revision 0013)."""
    where = text("status = 'completed'")
    return Index(
        "ix_artifacts_verify_queue",
        "verified_at",
        "registered_at",
        "id",
        sqlite_where=where,
        postgresql_where=where,
    )


def _trigram(table: str) -> Index:
    """PostgreSQL's ``pg_trgm`` GIN index on ``search_text``, which serves ``LIKE '%…%'`` (revision 0010).

    Only on PostgreSQL: on SQLite an FTS5 table with the trigram tokenizer does its job, a virtual table
    made by the revision and kept by triggers, not a model (``service.store.search``)."""
    return Index(
        f"ix_{table}_search_text_trgm",
        "search_text",
        postgresql_using="gin",
        postgresql_ops={"search_text": "gin_trgm_ops"},
    ).ddl_if(dialect="postgresql")


SEARCH_TEXT_DOC = "The row's searchable values, folded and separated (``service.store.search``); revision 0010."


class Artifact(Base):
    """One registered artifact; ``manifest`` keeps the manifest as registered, as the JSON text replies carry.

    The text is what ``ArtifactManifest.model_dump_json()`` writes, so a listing splices it into its reply
    instead of parsing and writing it again (``status``, the one field that changes, is also its own column
    and wins over the text). Indexes: the listing walks ``(created_at, id)`` newest first, or
    ``(trace_id, created_at, id)`` for one trace, or ``(status, created_at, id)`` for a rare status, or a
    label's rows in that order (``ArtifactLabel``), and checks every other filter on the rows it walks
    (revision 0008 says why that stays flat); the rest serve cleanup and start-up recovery.
    """

    __tablename__ = "artifacts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    supersedes: Mapped[str | None] = mapped_column(String(40), unique=True)
    trace_id: Mapped[str] = mapped_column(String(255))
    step_id: Mapped[str | None] = mapped_column(String(255))
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
    artifact_type: Mapped[str] = mapped_column(String(50))
    uri: Mapped[str] = mapped_column(String(2048))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    checksum: Mapped[str] = mapped_column(String(71))
    status: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str | None] = mapped_column(String(255))
    visibility: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime | None]
    registered_at: Mapped[datetime]
    manifest: Mapped[str] = mapped_column(Text)
    search_text: Mapped[str] = mapped_column(Text, server_default=text("''"), doc=SEARCH_TEXT_DOC)
    deleted_at: Mapped[datetime | None]
    """Set by ``delete_artifact``: a tombstone, in no reply, until ``purge_deleted`` or ``restore_artifact``."""
    deleted_by: Mapped[str | None] = mapped_column(String(255))
    """The broker-validated admin who deleted it (revision 0009)."""
    verified_at: Mapped[datetime | None]
    """When the ``verify_checksums`` scope last re-hashed the file and found the registered bytes (revision 0013)."""
    failure_reason: Mapped[str | None] = mapped_column(String(16))
    """Why a ``failed`` artifact failed, when known (``corrupted``, ``missing``): reads report it as details.reason."""

    __table_args__ = (
        Index(None, "created_at", "id"),
        Index(None, "trace_id", "created_at", "id"),
        Index(None, "status", "created_at", "id"),
        Index(None, "expires_at"),
        Index(None, "registered_at", "id"),
        _trigram("artifacts"),
        _set_only("artifacts", "deleted_at"),
        _verify_queue(),
    )


class ArtifactLabel(Base):
    """Labels as rows, so an all-must-match filter is an index lookup per label, not a JSON scan.

    ``created_at`` is the artifact's, copied (it never changes): a listing filtered by a label walks
    ``(key, value, created_at, artifact_id)`` newest first, its own order, and so reads only that label's
    artifacts however rare or old they are (revision 0015).
    """

    __tablename__ = "artifact_labels"

    artifact_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime]

    __table_args__ = (Index(None, "key", "value", "created_at", "artifact_id"),)


class ArtifactInput(Base):
    """An artifact's ``context.input_artifacts`` as rows: ``get_lineage`` walks them both ways by index.

    The input is only an id (it may never have been registered, or be gone): no foreign key on it. The row
    goes with the artifact that names it.
    """

    __tablename__ = "artifact_inputs"

    artifact_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True)
    input_id: Mapped[str] = mapped_column(String(40), primary_key=True)

    __table_args__ = (Index(None, "input_id", "artifact_id"),)


class InboxRecord(Base):
    """The reply to an executed write command, committed with its effect: how duplicates find their answer."""

    __tablename__ = "inbox"

    requester: Mapped[str] = mapped_column(String(255), primary_key=True)
    """Who sent the command ("" when anonymous): one requester's ids and keys never match another's."""
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    action: Mapped[str] = mapped_column(String(100))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    reply_id: Mapped[str] = mapped_column(String(64))
    reply_type: Mapped[str] = mapped_column(String(32))
    reply_data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("requester", "action", "idempotency_key"),
        Index(None, "created_at"),
    )


class TraceUsage(Base):
    """What one trace's live artifacts hold, kept in the transaction of every change to them (revision 0012).

    The quota check reads and bumps this row in one statement: its row lock is what makes two workers'
    registrations into one trace count exactly. A trace without live artifacts may keep a row of zeros.
    """

    __tablename__ = "trace_usage"

    trace_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    artifacts: Mapped[int] = mapped_column(BigInteger)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    warned_by: Mapped[str | None] = mapped_column(String(40))
    """The artifact whose registration took the trace to 80% of a limit: set once, with its quota warning."""


# --- threads, messages and thread labels (issue "Threads, cleanup and startup recovery") ---


class Thread(Base):
    """A conversation history. ``next_seq`` hands out message positions; ``message_count`` counts active ones."""

    __tablename__ = "threads"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata")
    version: Mapped[int] = mapped_column(BigInteger)
    message_count: Mapped[int] = mapped_column(BigInteger)
    next_seq: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    owner: Mapped[str | None] = mapped_column(String(255))
    """The requester of the first save; NULL on threads saved before ownership existed (admins alone write those)."""
    visibility: Mapped[str] = mapped_column(String(16))
    trace_id: Mapped[str | None] = mapped_column(String(255))
    """The first saver's trace: who may read a ``trace`` thread besides its owner."""
    search_text: Mapped[str] = mapped_column(Text, server_default=text("''"), doc=SEARCH_TEXT_DOC)
    max_messages: Mapped[int | None] = mapped_column(Integer)
    """The ``max_messages`` a save set last: every later save trims to it (revision 0011)."""
    ttl_seconds: Mapped[int | None] = mapped_column(BigInteger)
    """The ``ttl_seconds`` a save set last: every later save moves ``expires_at`` to now + it (revision 0011)."""

    __table_args__ = (
        Index(None, "created_at", "id"),
        Index(None, "owner", "created_at", "id"),
        _set_only("threads", "deleted_at"),
        _set_only("threads", "expires_at"),
        _trigram("threads"),
        # SQLite only: a common search walks it newest first and tests ``search_text`` on the index entry,
        # reading the row only for a match (revision 0010; PostgreSQL's planner has the GIN index).
        Index(None, "created_at", "id", "search_text").ddl_if(dialect="sqlite"),
    )


class ThreadMessageRow(Base):
    """One message. ``seq`` is its position in the thread (request order within a save, then append order).

    (thread_id, deleted_at, seq) is the classic thread/deleted_at/time index with the position as the time
    key: "the last N active messages" is one backwards range scan, whatever the size of the table.
    """

    __tablename__ = "messages"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    thread_id: Mapped[str] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[Any] = mapped_column(JsonType)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata")
    created_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]
    trimmed_at: Mapped[datetime | None]
    """Set with ``deleted_at`` when ``max_messages`` hid the message: ``restore_thread`` may bring it back."""

    __table_args__ = (
        UniqueConstraint("thread_id", "seq"),
        Index(None, "thread_id", "deleted_at", "seq"),
        _set_only("messages", "deleted_at"),
        Index(
            "ix_messages_system",
            "thread_id",
            "seq",
            sqlite_where=text("role = 'system'"),
            postgresql_where=text("role = 'system'"),
        ),
    )


class ThreadLabel(Base):
    """A thread's scalar metadata as rows (value in canonical text), so filters are index lookups."""

    __tablename__ = "thread_labels"

    thread_id: Mapped[str] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))

    __table_args__ = (Index(None, "key", "value", "thread_id"),)


# --- agent memory (issue "Agent memory with TTL") ---

NamespacePath = String(1024).with_variant(String(1024, collation="C"), "postgresql")
"""Compared bytewise on both databases, so a namespace prefix is an index range (see store/memory_keys.py)."""


class MemoryRecord(Base):
    """One memory item. ``id`` is sha256 of (namespace path, key): get is a primary-key lookup."""

    __tablename__ = "memory_items"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ns_path: Mapped[str] = mapped_column(NamespacePath)
    ns_top: Mapped[str] = mapped_column(String(128))
    key: Mapped[str] = mapped_column(String(512))
    value: Mapped[dict[str, Any]]
    labels: Mapped[dict[str, Any]]
    version: Mapped[int] = mapped_column(Integer)
    owner: Mapped[str | None] = mapped_column(String(255))
    visibility: Mapped[str] = mapped_column(String(16))
    trace_id: Mapped[str | None] = mapped_column(String(255))
    ttl_seconds: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]

    __table_args__ = (
        Index(None, "ns_path", "updated_at", "id"),
        Index(None, "updated_at", "id"),
        Index(None, "expires_at"),
    )


class MemoryLabel(Base):
    """Labels as rows, each with its item's namespace path (fixed for an item: the path is part of its id).

    ``(key, value, ns_path)`` makes "this label under this prefix" one index range, so a search driven by
    a label costs what it finds, not what the store holds.
    """

    __tablename__ = "memory_labels"

    item_id: Mapped[str] = mapped_column(ForeignKey("memory_items.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))
    ns_path: Mapped[str] = mapped_column(NamespacePath)

    __table_args__ = (Index(None, "key", "value", "ns_path", "item_id"),)


# --- change events (issue 21): the change log, the outbox of unpublished changes, the purge watermark ---

ChangeId = BigInteger().with_variant(Integer(), "sqlite")
"""SQLite: ``INTEGER PRIMARY KEY`` (the rowid) with AUTOINCREMENT, so an id is never handed out twice, even
after retention emptied the table; PostgreSQL: a BIGINT identity."""


class ChangeRow(Base):
    """One committed write, recorded in its own transaction: ``id`` is the change id, in commit order.

    ``owner`` and ``visibility`` (with ``trace_id``) are what ``changes_since`` filters on, the read rule of
    the changed object as it stood after the change (``read_rule``); ``owner`` is never published. Ids grow
    in commit order on both databases (PostgreSQL: a group's changes go in under one advisory lock, right
    before its commit; ``service.store.changes``), so a reader that saw id n has seen every change before it.
    """

    __tablename__ = "changes"

    id: Mapped[int] = mapped_column(ChangeId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    node: Mapped[str] = mapped_column(String(255))
    occurred_at: Mapped[datetime]
    trace_id: Mapped[str | None] = mapped_column(String(255))
    visibility: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str | None] = mapped_column(String(255))
    artifact_id: Mapped[str | None] = mapped_column(String(40))
    thread_id: Mapped[str | None] = mapped_column(String(255))
    ns_path: Mapped[str | None] = mapped_column(NamespacePath)
    key: Mapped[str | None] = mapped_column(String(512))
    version: Mapped[int | None] = mapped_column(BigInteger)
    quota: Mapped[str | None] = mapped_column(String(16))
    quota_limit: Mapped[int | None] = mapped_column(BigInteger)
    usage: Mapped[int | None] = mapped_column(BigInteger)
    threshold_percent: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index(None, "trace_id", "id"), {"sqlite_autoincrement": True})


class OutboxRow(Base):
    """A change its node has not yet seen confirmed by the broker: published in id order, deleted once confirmed."""

    __tablename__ = "outbox"

    change_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    node: Mapped[str] = mapped_column(String(255))

    __table_args__ = (Index(None, "node", "change_id"),)


class ChangesPurged(Base):
    """One row: every change with an id up to ``through`` may be gone (retention purges a prefix of the log)."""

    __tablename__ = "changes_purged"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    through: Mapped[int] = mapped_column(BigInteger)
