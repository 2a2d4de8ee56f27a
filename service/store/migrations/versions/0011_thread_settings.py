"""Threads remember ``max_messages`` and ``ttl_seconds``; trimmed messages are marked, restorable in the purge window.

- ``threads.max_messages`` and ``threads.ttl_seconds`` hold the settings a save gave last (NULL: none). Every
  later save applies them until a save changes them or sends ``null``. Threads saved before this revision
  have none: their ``expires_at`` stays as it was until a save sets a TTL (it cannot be told back from it).
- ``messages.trimmed_at`` marks a message ``max_messages`` hid (``deleted_at`` is set alike, so every reader
  and the purge of soft-deleted rows treat it as before); ``restore_thread`` with ``messages: "trimmed"`` brings
  back those still within ``STORAGE_PURGE_AFTER``. Messages trimmed before this revision are not marked, so
  they cannot be told from cleared ones and stay hidden.
- ``ix_messages_system``: the system messages of a thread, newest first, so ``get_thread_info`` finds the
  current system prompt in one probe instead of walking a long thread back to its first message. It is
  partial (``role = 'system'``): other messages never enter it, a save of user turns pays nothing for it.

The new columns are nullable and carry no default: adding them rewrites no row on either database. The index
is built by one pass over ``messages`` (on PostgreSQL under a lock that blocks writes while it builds).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SYSTEM = sa.text("role = 'system'")


def upgrade() -> None:
    with op.batch_alter_table("threads") as batch:
        batch.add_column(sa.Column("max_messages", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("ttl_seconds", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("trimmed_at", sa.DateTime(), nullable=True))
    op.create_index(
        "ix_messages_system", "messages", ["thread_id", "seq"], sqlite_where=_SYSTEM, postgresql_where=_SYSTEM
    )


def downgrade() -> None:
    op.drop_index("ix_messages_system", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("trimmed_at")
    with op.batch_alter_table("threads") as batch:
        batch.drop_column("ttl_seconds")
        batch.drop_column("max_messages")
