"""Artifacts by registration time: startup recovery reads only the last day of registrations."""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"


def upgrade() -> None:
    op.create_index("ix_artifacts_registered_at_id", "artifacts", ["registered_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_artifacts_registered_at_id", table_name="artifacts")
