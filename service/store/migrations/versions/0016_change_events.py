"""Change events (issue 21): ``changes``, the ``outbox`` of changes not yet published, ``changes_purged``.

Every committed write records one ``changes`` row in its own transaction, and its node an ``outbox`` row
naming it; the node publishes each as an ``evt.storage.<kind>`` EVENT once committed and deletes the outbox
row when the broker confirmed it. ``changes_since`` reads the log by id; the ``changes`` cleanup scope purges
a prefix of it older than ``STORAGE_CHANGES_RETENTION`` and records where it stopped in ``changes_purged``'s
one row, so a cursor from before that is told so instead of silently missing changes.

New tables only: nothing to backfill (what was written before has no change to tell).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from service.store.types import UtcDateTime

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAMESPACE = sa.String(length=1024).with_variant(sa.String(length=1024, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("node", sa.String(length=255), nullable=False),
        sa.Column("occurred_at", UtcDateTime(), nullable=False),
        sa.Column("trace_id", sa.String(length=255), nullable=True),
        sa.Column("visibility", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("artifact_id", sa.String(length=40), nullable=True),
        sa.Column("thread_id", sa.String(length=255), nullable=True),
        sa.Column("ns_path", _NAMESPACE, nullable=True),
        sa.Column("key", sa.String(length=512), nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=True),
        sa.Column("quota", sa.String(length=16), nullable=True),
        sa.Column("quota_limit", sa.BigInteger(), nullable=True),
        sa.Column("usage", sa.BigInteger(), nullable=True),
        sa.Column("threshold_percent", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_changes"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_changes_trace_id_id", "changes", ["trace_id", "id"])
    op.create_table(
        "outbox",
        sa.Column("change_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("node", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("change_id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_node_change_id", "outbox", ["node", "change_id"])
    purged = op.create_table(
        "changes_purged",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("through", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_changes_purged"),
    )
    op.bulk_insert(purged, [{"id": 1, "through": 0}])


def downgrade() -> None:
    op.drop_table("changes_purged")
    op.drop_index("ix_outbox_node_change_id", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("ix_changes_trace_id_id", table_name="changes")
    op.drop_table("changes")
