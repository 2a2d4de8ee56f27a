"""A label filter walks its label's rows in the listing's order: ``artifact_labels.created_at``.

``list_artifacts`` is a keyset walk newest first on ``(created_at, id)``. A label filter used to be checked
on the rows that walk passed (an ``EXISTS`` per row), so a label on few artifacts, or on artifacts long
past, crossed the table to fill its page: a client's INN on one trace's 50 artifacts in the middle of
1,000,000 took 2.2 s on SQLite. Each label row now carries its artifact's ``created_at`` (set once, as the
artifact's never changes) and ``(key, value, created_at, artifact_id)`` replaces ``(key, value,
artifact_id)``: the listing starts from the first label's index range, already in the listing's order, and
reads only that label's artifacts, newest first, until its page is full, however rare or old they are.

Under a rare status (``failed``, ``uploading``) the status index still drives the walk and labels are probed
on its rows: that index holds fewer rows than a common label's.

The upgrade copies each artifact's ``created_at`` into its labels. PostgreSQL drops the old index, adds the
column, fills it with one ``UPDATE ... FROM`` and then makes it ``NOT NULL``; SQLite, which cannot add a
``NOT NULL`` column without a default, builds the table again from a join. Both rewrite every label row: on
the 2-core bench host, about 100 s per million artifacts of three labels on SQLite and 130 s on PostgreSQL
(bench/console.py's data); run it with the workers stopped (``storage-worker migrate``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from service.store.types import UtcDateTime

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_INDEX = "ix_artifact_labels_key_value_artifact_id"
_NEW_INDEX = "ix_artifact_labels_key_value_created_at_artifact_id"


def _labels(name: str) -> None:
    """``artifact_labels`` as this revision makes it, under ``name`` (SQLite's copy is built beside it)."""
    op.create_table(
        name,
        sa.Column("artifact_id", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["artifact_id"],
            ["artifacts.id"],
            name="fk_artifact_labels_artifact_id_artifacts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("artifact_id", "key", name="pk_artifact_labels"),
    )


def _upgrade_sqlite() -> None:
    """A new table filled from a join (labels whose artifact is gone have nothing to list: left behind)."""
    op.drop_index(_OLD_INDEX, table_name="artifact_labels")
    _labels("_artifact_labels_new")
    op.execute(
        "INSERT INTO _artifact_labels_new (artifact_id, key, value, created_at) "
        "SELECT l.artifact_id, l.key, l.value, a.created_at "
        "FROM artifact_labels AS l JOIN artifacts AS a ON a.id = l.artifact_id"
    )
    op.drop_table("artifact_labels")
    op.rename_table("_artifact_labels_new", "artifact_labels")


def _upgrade_postgresql() -> None:
    """The old index goes first: the ``UPDATE`` writes a new version of every row, and each would enter it."""
    op.drop_index(_OLD_INDEX, table_name="artifact_labels")
    op.add_column("artifact_labels", sa.Column("created_at", UtcDateTime(), nullable=True))
    op.execute(
        "UPDATE artifact_labels AS l SET created_at = a.created_at FROM artifacts AS a WHERE a.id = l.artifact_id"
    )
    op.execute("DELETE FROM artifact_labels WHERE created_at IS NULL")  # none: the foreign key cascades
    op.alter_column("artifact_labels", "created_at", nullable=False)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _upgrade_sqlite()
    else:
        _upgrade_postgresql()
    op.create_index(_NEW_INDEX, "artifact_labels", ["key", "value", "created_at", "artifact_id"], unique=False)


def downgrade() -> None:
    op.drop_index(_NEW_INDEX, table_name="artifact_labels")
    with op.batch_alter_table("artifact_labels") as batch:
        batch.drop_column("created_at")
    op.create_index(_OLD_INDEX, "artifact_labels", ["key", "value", "artifact_id"], unique=False)
