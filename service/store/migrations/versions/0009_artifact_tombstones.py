"""Deleting an artifact keeps its row as a tombstone: ``deleted_at`` and ``deleted_by`` (issue 20, item 1).

A deleted artifact used to lose its row, so a successor's ``supersedes`` named nothing and ``latest``
stopped at the gap. Its row now stays, marked with when and by whom (the broker-validated admin), until the
``purge_deleted`` cleanup scope removes it after ``STORAGE_PURGE_AFTER``; ``restore_artifact`` clears the
mark within that window. The manifest text (revision 0008) does not change: a tombstone is never in a
reply, so nothing of it needs splicing.

**Indexes.** One partial index on ``deleted_at`` over the tombstones alone: the purge scope walks it oldest
first, and it stays as small as the tombstones are few. Lists need none: they walk ``(created_at, id)``,
``(trace_id, created_at, id)`` or ``(status, created_at, id)`` as before and check ``deleted_at IS NULL`` on
the rows they walk, as they check the other filters, and a partial index over set values is one the planner
never picks for that. Both columns are nullable and added without a rewrite of the table (SQLite's ``ALTER
TABLE ADD COLUMN``, PostgreSQL's catalogue-only add): instant at any size.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_artifacts_deleted_at_set"


def upgrade() -> None:
    op.add_column("artifacts", sa.Column("deleted_at", sa.DateTime(), nullable=True))
    op.add_column("artifacts", sa.Column("deleted_by", sa.String(length=255), nullable=True))
    where = sa.text("deleted_at IS NOT NULL")
    op.create_index(_INDEX, "artifacts", ["deleted_at"], sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    """Tombstones become deletions, as before this revision: their rows and labels go (the files already
    lie in orphans/, where old_orphans finds them), then the columns."""
    connection = op.get_bind()
    artifacts = sa.table("artifacts", sa.column("id", sa.String()), sa.column("deleted_at", sa.DateTime()))
    labels = sa.table("artifact_labels", sa.column("artifact_id", sa.String()))
    doomed = sa.select(artifacts.c.id).where(artifacts.c.deleted_at.is_not(None))
    connection.execute(sa.delete(labels).where(labels.c.artifact_id.in_(doomed)))
    connection.execute(sa.delete(artifacts).where(artifacts.c.deleted_at.is_not(None)))
    op.drop_index(_INDEX, table_name="artifacts")
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_column("deleted_by")
        batch.drop_column("deleted_at")
