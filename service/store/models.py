"""The schema as SQLAlchemy 2 typed models. Queries use Core on these tables (cheaper than ORM sessions)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from service.store.types import JsonType, UtcDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JsonType}


class Artifact(Base):
    """One registered artifact; ``manifest`` keeps the exact manifest as registered."""

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
    manifest: Mapped[dict[str, Any]]

    __table_args__ = (
        Index(None, "created_at", "id"),
        Index(None, "trace_id", "created_at", "id"),
        Index(None, "created_by", "created_at", "id"),
        Index(None, "artifact_type", "created_at", "id"),
        Index(None, "step_id", "created_at", "id"),
        Index(None, "status", "created_at", "id"),
        Index(None, "owner", "created_at", "id"),
        Index(None, "expires_at"),
    )


class ArtifactLabel(Base):
    """Labels as rows, so an all-must-match filter is an index lookup per label, not a JSON scan."""

    __tablename__ = "artifact_labels"

    artifact_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))

    __table_args__ = (Index(None, "key", "value", "artifact_id"),)


class InboxRecord(Base):
    """The reply to an executed write command, committed with its effect: how duplicates find their answer."""

    __tablename__ = "inbox"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    action: Mapped[str] = mapped_column(String(100))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    reply_id: Mapped[str] = mapped_column(String(64))
    reply_type: Mapped[str] = mapped_column(String(32))
    reply_data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("action", "idempotency_key"),
        Index(None, "created_at"),
    )


# --- threads, messages and thread labels (issue "Threads, cleanup and startup recovery") ---


# --- agent memory (issue "Agent memory with TTL") ---
