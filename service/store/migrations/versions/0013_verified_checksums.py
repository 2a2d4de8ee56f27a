"""Scrubbing: when each artifact's file was last verified, why a failed artifact failed, and the scrub queue.

``verified_at`` is set by the ``verify_checksums`` cleanup scope each time it re-hashes a completed artifact's
file and finds the registered size and sha256; NULL means never verified (every artifact before this
revision). ``failure_reason`` says why a ``failed`` artifact failed when the worker knows (``corrupted``: the
scrubber found other bytes; ``missing``: the file is gone and was not in temp/ either); reads report it as
``details.reason``. Both columns are nullable and added without a default, so the upgrade rewrites no row on
either database (a catalogue change only).

``ix_artifacts_verify_queue`` is ``(verified_at, registered_at, id)`` over completed rows only: the scrubber
takes the never-verified rows (``verified_at IS NULL``, one index range in registration order), then the
oldest-verified ones (the rest of the index in order), each batch a bounded range scan whatever the table
size. Partial on ``status = 'completed'`` because failed and uploading rows are never verified; the queries
spell the predicate as the same literal so both planners match the index.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from service.store.types import UtcDateTime

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_QUEUE = "ix_artifacts_verify_queue"
_COMPLETED = sa.text("status = 'completed'")


def upgrade() -> None:
    op.add_column("artifacts", sa.Column("verified_at", UtcDateTime(), nullable=True))
    op.add_column("artifacts", sa.Column("failure_reason", sa.String(length=16), nullable=True))
    op.create_index(
        _QUEUE,
        "artifacts",
        ["verified_at", "registered_at", "id"],
        sqlite_where=_COMPLETED,
        postgresql_where=_COMPLETED,
    )


def downgrade() -> None:
    op.drop_index(_QUEUE, table_name="artifacts")
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_column("failure_reason")
        batch.drop_column("verified_at")
