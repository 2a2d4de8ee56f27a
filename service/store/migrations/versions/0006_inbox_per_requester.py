"""The inbox keyed by requester: one agent's envelope ids and idempotency keys never match another's.

Records written before this revision get the requester "" (anonymous): a named agent's retry of such an
old command is executed again (registrations answer it as already registered); they age out with
``STORAGE_INBOX_RETENTION``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"


def _inbox_before() -> sa.Table:
    """The inbox as revision 0001 made it, with its constraint names: SQLite's rebuild copies from this
    instead of reflecting (SQLite does not keep constraint names a table may have been created without)."""
    return sa.Table(
        "inbox",
        sa.MetaData(),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("reply_id", sa.String(length=64), nullable=False),
        sa.Column("reply_type", sa.String(length=32), nullable=False),
        sa.Column("reply_data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_inbox"),
        sa.UniqueConstraint("action", "idempotency_key", name="uq_inbox_action_idempotency_key"),
        sa.Index("ix_inbox_created_at", "created_at"),
    )


def upgrade() -> None:
    with op.batch_alter_table("inbox", copy_from=_inbox_before()) as batch:
        batch.add_column(sa.Column("requester", sa.String(length=255), nullable=False, server_default=""))
        batch.drop_constraint("pk_inbox", type_="primary")
        batch.drop_constraint("uq_inbox_action_idempotency_key", type_="unique")
        batch.create_primary_key("pk_inbox", ["requester", "id"])
        batch.create_unique_constraint(
            "uq_inbox_requester_action_idempotency_key", ["requester", "action", "idempotency_key"]
        )
    with op.batch_alter_table("inbox") as batch:
        batch.alter_column("requester", server_default=None)


def downgrade() -> None:
    op.execute("DELETE FROM inbox WHERE requester <> ''")
    with op.batch_alter_table("inbox") as batch:
        batch.drop_constraint("uq_inbox_requester_action_idempotency_key", type_="unique")
        batch.drop_constraint("pk_inbox", type_="primary")
        batch.create_primary_key("pk_inbox", ["id"])
        batch.create_unique_constraint("uq_inbox_action_idempotency_key", ["action", "idempotency_key"])
        batch.drop_column("requester")
