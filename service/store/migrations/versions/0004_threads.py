"""Threads: conversation histories, their messages and their metadata labels."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _set_only(table: str, column: str) -> None:
    """A partial index over the rows where ``column`` is set (what cleanup looks for)."""
    where = sa.text(f"{column} IS NOT NULL")
    op.create_index(f"ix_{table}_{column}_set", table, [column], sqlite_where=where, postgresql_where=where)


def upgrade() -> None:
    op.create_table(
        "threads",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("metadata", _JSON, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("message_count", sa.BigInteger(), nullable=False),
        sa.Column("next_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_threads")),
    )
    op.create_index(op.f("ix_threads_created_at_id"), "threads", ["created_at", "id"])
    _set_only("threads", "deleted_at")
    _set_only("threads", "expires_at")

    op.create_table(
        "messages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("thread_id", sa.String(length=255), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("content", _JSON, nullable=False),
        sa.Column("metadata", _JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["thread_id"], ["threads.id"], name=op.f("fk_messages_thread_id_threads"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("thread_id", "seq", name=op.f("uq_messages_thread_id_seq")),
    )
    op.create_index(op.f("ix_messages_thread_id_deleted_at_seq"), "messages", ["thread_id", "deleted_at", "seq"])
    _set_only("messages", "deleted_at")

    op.create_table(
        "thread_labels",
        sa.Column("thread_id", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(
            ["thread_id"], ["threads.id"], name=op.f("fk_thread_labels_thread_id_threads"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("thread_id", "key", name=op.f("pk_thread_labels")),
    )
    op.create_index(op.f("ix_thread_labels_key_value_thread_id"), "thread_labels", ["key", "value", "thread_id"])


def downgrade() -> None:
    op.drop_table("thread_labels")
    op.drop_table("messages")
    op.drop_table("threads")
