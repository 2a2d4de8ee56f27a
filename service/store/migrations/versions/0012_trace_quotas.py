"""Per-trace usage for STORAGE_TRACE_MAX_ARTIFACTS / STORAGE_TRACE_MAX_BYTES: ``trace_usage``, backfilled.

One row per trace: its live artifacts and their bytes, bumped in the transaction of every registration,
deletion (a tombstone), restore and expiry, so the quota check is one statement on one row. The backfill
counts the live rows (no ``deleted_at``, where revision 0009 added it) in the upgrade's transaction.
Workers of an older revision must not register into the upgraded database: they would not count.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "trace_usage",
        sa.Column("trace_id", sa.String(length=255), nullable=False),
        sa.Column("artifacts", sa.BigInteger(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("warned_by", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("trace_id", name="pk_trace_usage"),
    )
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("artifacts")}
    live = "WHERE deleted_at IS NULL" if "deleted_at" in columns else ""
    op.execute(
        "INSERT INTO trace_usage (trace_id, artifacts, size_bytes) "
        f"SELECT trace_id, count(*), coalesce(sum(size_bytes), 0) FROM artifacts {live} GROUP BY trace_id"
    )


def downgrade() -> None:
    op.drop_table("trace_usage")
