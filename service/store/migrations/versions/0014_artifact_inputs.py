"""The lineage index: ``artifact_inputs`` holds each artifact's ``context.input_artifacts`` as rows.

``get_lineage`` walks inputs both ways: upstream by the primary key ``(artifact_id, input_id)``, downstream by
``(input_id, artifact_id)``. An input is only an id (it may never have been registered, or be gone), so only
the artifact that names it has a foreign key; its rows go with it. The upgrade fills the table from the
stored manifests in one ``INSERT ... SELECT`` per database (SQLite's ``json_each``, PostgreSQL's
``jsonb_array_elements_text``), skipping an artifact naming itself and names that are not ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BACKFILL = {
    "sqlite": """
        INSERT OR IGNORE INTO artifact_inputs (artifact_id, input_id)
        SELECT a.id, j.value FROM artifacts AS a, json_each(a.manifest, '$.context.input_artifacts') AS j
        WHERE j.type = 'text' AND length(j.value) <= 40 AND j.value != a.id
    """,
    "postgresql": """
        INSERT INTO artifact_inputs (artifact_id, input_id)
        SELECT DISTINCT a.id, i.input_id
        FROM artifacts AS a
        CROSS JOIN LATERAL jsonb_array_elements_text(
            CASE WHEN jsonb_typeof(a.manifest::jsonb -> 'context' -> 'input_artifacts') = 'array'
                 THEN a.manifest::jsonb -> 'context' -> 'input_artifacts' ELSE '[]'::jsonb END
        ) AS i(input_id)
        WHERE length(i.input_id) <= 40 AND i.input_id <> a.id
        ON CONFLICT DO NOTHING
    """,
}


def upgrade() -> None:
    op.create_table(
        "artifact_inputs",
        sa.Column("artifact_id", sa.String(length=40), nullable=False),
        sa.Column("input_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["artifact_id"],
            ["artifacts.id"],
            name=op.f("fk_artifact_inputs_artifact_id_artifacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("artifact_id", "input_id", name=op.f("pk_artifact_inputs")),
    )
    op.create_index(
        op.f("ix_artifact_inputs_input_id_artifact_id"), "artifact_inputs", ["input_id", "artifact_id"], unique=False
    )
    op.execute(_BACKFILL[op.get_bind().dialect.name])


def downgrade() -> None:
    op.drop_index(op.f("ix_artifact_inputs_input_id_artifact_id"), table_name="artifact_inputs")
    op.drop_table("artifact_inputs")
