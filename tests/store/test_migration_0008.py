"""Revision 0008 on a database with artifacts: manifests become the reply's JSON text, four list indexes go."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import ArtifactManifest, ArtifactStatus
from service.store.engine import schema
from tests.support.artifacts import checksum, new_artifact_id

FOLDED = {f"ix_artifacts_{c}_created_at_id" for c in ("created_by", "artifact_type", "step_id", "owner")}

_before = sa.table(  # the artifacts table as revision 0007 wrote it: the manifest as JSON (jsonb on PostgreSQL)
    "artifacts",
    *(sa.column(name) for name in ("id", "version", "trace_id", "created_by", "artifact_type", "uri")),
    *(sa.column(name) for name in ("size_bytes", "checksum", "status", "visibility", "owner")),
    sa.column("created_at", sa.DateTime()),
    sa.column("registered_at", sa.DateTime()),
    sa.column("manifest", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
)


def _manifest(n: int, **fields: Any) -> ArtifactManifest:
    artifact_id = new_artifact_id()
    return ArtifactManifest.model_validate(
        {
            "id": artifact_id,
            "trace_id": "trace-1",
            "created_by": "agent-test",
            "created_at": datetime(2026, 1, 1, 0, 0, n, 123456, tzinfo=UTC),
            "artifact_type": "report",
            "uri": f"file:///data/artifacts/trace-1/{artifact_id}.bin",
            "size_bytes": n,
            "checksum": checksum(str(n).encode()),
            "status": "completed",
            "owner": "agent-test",
            **fields,
        }
    )


def _row(manifest: ArtifactManifest, status: str) -> dict[str, Any]:
    """What 0007's insert_artifact wrote: the manifest without its nulls, as JSON."""
    return {
        **{k: getattr(manifest, k) for k in ("id", "version", "trace_id", "created_by", "artifact_type", "uri")},
        **{k: getattr(manifest, k) for k in ("size_bytes", "checksum", "owner")},
        "status": status,
        "visibility": manifest.visibility.value,
        "created_at": manifest.created_at.replace(tzinfo=None),
        "registered_at": manifest.created_at.replace(tzinfo=None),
        "manifest": manifest.wire(),
    }


async def _indexes(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        found = await conn.run_sync(lambda c: sa.inspect(c).get_indexes("artifacts"))
    return {index["name"] for index in found if index["name"]}


async def _replied_before(engine: AsyncEngine) -> dict[str, str]:
    """Each manifest as a reply carried it at 0007: the stored JSON parsed, its status from the column, written
    again (on PostgreSQL, jsonb had already put the keys of labels and context in its own order)."""
    query = sa.select(_before.c.id, _before.c.status, sa.cast(_before.c.manifest, sa.Text).label("text"))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return {
        row.id: ArtifactManifest.model_validate_json(row.text)
        .model_copy(update={"status": ArtifactStatus(row.status)})
        .model_dump_json()
        for row in rows
    }


async def test_0008_rewrites_manifests_as_replies_carry_them_and_back(engine: AsyncEngine) -> None:
    """Old rows read after the upgrade as the reply writes them (nulls, unicode, a status changed since
    registration taken from its column); the downgrade restores JSON and the indexes."""
    await schema.migrate(engine, "0007")
    assert await _indexes(engine) >= FOLDED
    plain = _manifest(1)
    rich = _manifest(
        2,
        step_id="шаг-1",
        labels={"город": "Москва", "emoji": "🚀"},
        context={"model_name": "m", "input_artifacts": [new_artifact_id()], "extra": {"k": [1, None, "é"]}},
        retention="30d",
    )
    failed_later = _manifest(3)
    stored = [(plain, "completed"), (rich, "completed"), (failed_later, "failed")]
    async with engine.begin() as conn:
        await conn.execute(sa.insert(_before), [_row(m, status) for m, status in stored])

    replied = await _replied_before(engine)

    await schema.migrate(engine)

    async with engine.connect() as conn:
        texts = {row.id: row.manifest for row in await conn.execute(sa.text("SELECT id, manifest FROM artifacts"))}
    assert texts == replied
    assert '"supersedes":null' in texts[plain.id] and "Москва" in texts[rich.id]
    assert '"status":"failed"' in texts[failed_later.id]
    assert not FOLDED & await _indexes(engine)

    await schema.downgrade(engine, "0007")
    async with engine.connect() as conn:
        back = {row.id: row.manifest for row in await conn.execute(sa.select(_before.c.id, _before.c.manifest))}
    for manifest, status in stored:
        expected = manifest.model_copy(update={"status": ArtifactStatus(status)})
        assert ArtifactManifest.model_validate(back[manifest.id]) == expected
    assert await _indexes(engine) >= FOLDED
