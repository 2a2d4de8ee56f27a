"""Threads get an owner, a visibility and the owner's trace: the read rule of artifacts, writes by the owner.

Threads saved before this revision keep no owner (NULL) and become ``public``: everyone could read them
before, everyone still can; only admins may save, clear or delete them (README, "Threads").
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"


def upgrade() -> None:
    with op.batch_alter_table("threads") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("visibility", sa.String(length=16), nullable=False, server_default="public"))
        batch.add_column(sa.Column("trace_id", sa.String(length=255), nullable=True))
    with op.batch_alter_table("threads") as batch:
        batch.alter_column("visibility", server_default=None)  # new rows say their visibility themselves
    op.create_index("ix_threads_owner_created_at_id", "threads", ["owner", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_threads_owner_created_at_id", table_name="threads")
    with op.batch_alter_table("threads") as batch:
        batch.drop_column("trace_id")
        batch.drop_column("visibility")
        batch.drop_column("owner")
