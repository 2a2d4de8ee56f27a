"""Agent memory: namespaced key-value items with TTL, and their labels.

``ns_path`` compares bytewise (``COLLATE "C"`` on PostgreSQL) so a namespace prefix is an index range.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0001"

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_PATH = sa.String(length=1024).with_variant(sa.String(length=1024, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "memory_items",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("ns_path", _PATH, nullable=False),
        sa.Column("ns_top", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("value", _JSON, nullable=False),
        sa.Column("labels", _JSON, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("visibility", sa.String(length=16), nullable=False),
        sa.Column("trace_id", sa.String(length=255), nullable=True),
        sa.Column("ttl_seconds", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memory_items")),
    )
    for columns in (("ns_path", "updated_at", "id"), ("updated_at", "id"), ("expires_at",)):
        op.create_index(op.f("ix_memory_items_" + "_".join(columns)), "memory_items", list(columns))

    op.create_table(
        "memory_labels",
        sa.Column("item_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.Column("ns_path", _PATH, nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["memory_items.id"], name=op.f("fk_memory_labels_item_id_memory_items"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("item_id", "key", name=op.f("pk_memory_labels")),
    )
    op.create_index(
        op.f("ix_memory_labels_key_value_ns_path_item_id"), "memory_labels", ["key", "value", "ns_path", "item_id"]
    )


def downgrade() -> None:
    op.drop_table("memory_labels")
    op.drop_table("memory_items")
