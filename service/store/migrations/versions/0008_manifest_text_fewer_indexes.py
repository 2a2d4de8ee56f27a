"""Artifacts keep their manifest as the reply's JSON text, and four fewer list indexes.

**The manifest as text.** ``list_artifacts`` used to parse every stored manifest with pydantic and write it
again into the reply, about a fifth of a listing's CPU. The stored text is now exactly what
``ArtifactManifest.model_dump_json()`` writes (nulls included, the model's key order), so the listing
splices the texts into its reply as they are. PostgreSQL's ``jsonb`` re-normalises what it is given (key
order, spaces), so it cannot hold that text; the column becomes ``text`` on both databases. Nothing queries
the manifest as JSON (the filters, cleanup, recovery and the importer read the columns beside it), so no
JSON copy is kept: one text column, a little smaller than the ``jsonb`` it replaces (a typical manifest:
595 bytes as text with its nulls, 605 as ``jsonb`` without them). Every row is re-serialised by the contract's
model in batches, with ``status`` from its column (the one field that changes after registration), so it
reads as replies gave it before (on PostgreSQL with the key order jsonb had given labels and context); a row
the model no longer accepts keeps its text as it was (get_artifact would refuse it alike). A later change
of ``ArtifactManifest``'s fields needs a revision that re-serialises the texts the same way. On the 2-core
bench host the upgrade takes about 80 s per million artifacts on SQLite and 140 s on PostgreSQL (the column's
rewrite, then the batches); run it with the workers stopped (``storage-worker migrate``).

**Indexes.** The listing is a keyset walk newest first: ``(created_at, id)``, or ``(trace_id, created_at,
id)`` for one trace (traces are small, and the one filter an agent always has). The filters on ``created_by``,
``artifact_type``, ``step_id`` and the read rule are checked on the rows walked, which costs the rows newer
than the page's last match, not the table: flat at 1,000,000 rows for values that keep occurring
(bench/scaling.py, docs/bench/scaling-*). Their four ``(column, created_at, id)`` indexes go, and with them
four B-tree insertions per registration. An ``owner`` index could not serve the read rule anyway: it is an
OR of public, owner and trace, which no single ordered index walks. The cost is a filter on a value that
stopped occurring long ago (an agent retired a year back): its walk reaches back to its last rows, and
``get_stats``'s count by type reads the table instead of an index (at 1,000,000 rows on the bench host:
0.9-1.4 s on SQLite, 0.5-0.9 s on PostgreSQL, against 0.2-0.3 s with an index; an admin's read, off the writer).
``(status, created_at, id)`` stays: status is skewed (nearly every row ``completed``), so a walk for the rare
``failed`` or ``uploading`` would cross the table, and cleanup's stale-upload scope, which runs in the single
writer, finds its ``uploading`` rows through it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"

log = logging.getLogger(__name__)

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_FOLDED = ("created_by", "artifact_type", "step_id", "owner")
BATCH = 2000

_rows = sa.table(
    "artifacts",
    sa.column("id", sa.String()),
    sa.column("status", sa.String()),
    sa.column("manifest", sa.Text()),
)


def _reserialise(connection: sa.Connection) -> None:
    """Every manifest rewritten as the contract's model writes it, ``BATCH`` rows per round trip, by id."""
    from contracts import ArtifactManifest, ArtifactStatus

    after = ""
    kept = 0
    update = sa.update(_rows).where(_rows.c.id == sa.bindparam("row_id")).values(manifest=sa.bindparam("text"))
    while True:
        batch = connection.execute(
            sa.select(_rows.c.id, _rows.c.status, _rows.c.manifest)
            .where(_rows.c.id > after)
            .order_by(_rows.c.id)
            .limit(BATCH)
        ).all()
        if not batch:
            break
        changed = []
        for row_id, status, text in batch:
            try:
                manifest = ArtifactManifest.model_validate_json(text)
                manifest.status = ArtifactStatus(status)
            except ValueError:
                kept += 1
                continue
            if (rewritten := manifest.model_dump_json()) != text:
                changed.append({"row_id": row_id, "text": rewritten})
        if changed:
            connection.execute(update, changed)
        after = batch[-1].id
    if kept:
        log.warning("%d artifact manifests no longer match the contract: kept as they were stored", kept)


def upgrade() -> None:
    with op.batch_alter_table("artifacts") as batch:
        for column in _FOLDED:
            batch.drop_index(f"ix_artifacts_{column}_created_at_id")
        batch.alter_column(
            "manifest",
            type_=sa.Text(),
            existing_type=_JSON,
            existing_nullable=False,
            postgresql_using="manifest::text",
        )
    _reserialise(op.get_bind())


def downgrade() -> None:
    with op.batch_alter_table("artifacts") as batch:
        batch.alter_column(
            "manifest",
            type_=_JSON,
            existing_type=sa.Text(),
            existing_nullable=False,
            postgresql_using="manifest::jsonb",
        )
        for column in _FOLDED:
            batch.create_index(f"ix_artifacts_{column}_created_at_id", [column, "created_at", "id"])
