"""Initial schema: artifacts with their labels, and the inbox of executed write commands.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("supersedes", sa.String(length=40), nullable=True),
        sa.Column("trace_id", sa.String(length=255), nullable=False),
        sa.Column("step_id", sa.String(length=255), nullable=True),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("artifact_type", sa.String(length=50), nullable=False),
        sa.Column("uri", sa.String(length=2048), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("checksum", sa.String(length=71), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("visibility", sa.String(length=16), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("registered_at", sa.DateTime(), nullable=False),
        sa.Column("manifest", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
        sa.UniqueConstraint("supersedes", name=op.f("uq_artifacts_supersedes")),
    )
    for columns in (
        ("created_at", "id"),
        ("trace_id", "created_at", "id"),
        ("created_by", "created_at", "id"),
        ("artifact_type", "created_at", "id"),
        ("step_id", "created_at", "id"),
        ("status", "created_at", "id"),
        ("owner", "created_at", "id"),
        ("expires_at",),
    ):
        op.create_index(op.f("ix_artifacts_" + "_".join(columns)), "artifacts", list(columns))

    op.create_table(
        "artifact_labels",
        sa.Column("artifact_id", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(
            ["artifact_id"],
            ["artifacts.id"],
            name=op.f("fk_artifact_labels_artifact_id_artifacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("artifact_id", "key", name=op.f("pk_artifact_labels")),
    )
    op.create_index(
        op.f("ix_artifact_labels_key_value_artifact_id"), "artifact_labels", ["key", "value", "artifact_id"]
    )

    op.create_table(
        "inbox",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("reply_id", sa.String(length=64), nullable=False),
        sa.Column("reply_type", sa.String(length=32), nullable=False),
        sa.Column("reply_data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox")),
        sa.UniqueConstraint("action", "idempotency_key", name=op.f("uq_inbox_action_idempotency_key")),
    )
    op.create_index(op.f("ix_inbox_created_at"), "inbox", ["created_at"])


def downgrade() -> None:
    op.drop_table("inbox")
    op.drop_table("artifact_labels")
    op.drop_table("artifacts")
