"""A label filter walks its label's rows in the listing's order (revision 0015): whether the label is on many
artifacts, on a few, or only on old ones, the listing gives exactly the artifacts the filter names, newest
first, page after page, with every other filter and the read rule; and labels saved before 0015 are found."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import ArtifactManifest, ListArtifactsParams
from service.identity import Requester
from service.store import artifacts as artifact_store
from service.store.engine import schema
from tests.support.artifacts import checksum, new_artifact_id

START = datetime(2026, 1, 1, tzinfo=UTC)
COUNT = 60
ADMIN = Requester(id="root", trace_id=None, is_admin=True)
BOB = Requester(id="bob", trace_id=None)


def _labels(n: int) -> dict[str, str]:
    """Every third ``risk: high`` (common); ``inn`` on two of the oldest and one of the newest (rare, and
    old: a newest-first walk of the table would pass nearly all of it); ``region`` alternating."""
    labels = {"region": str(n % 2)}
    if n % 3 == 0:
        labels["risk"] = "high"
    if n in (1, 2, COUNT - 2):
        labels["inn"] = "7701234567"
    return labels


def _manifest(n: int) -> ArtifactManifest:
    artifact_id = new_artifact_id()
    return ArtifactManifest.model_validate(
        {
            "id": artifact_id,
            "trace_id": f"trace-{n % 4}",
            "created_by": "agent-test",
            "created_at": START + timedelta(minutes=n),
            "artifact_type": "report",
            "uri": f"file:///data/artifacts/trace-{n % 4}/{artifact_id}.bin",
            "size_bytes": n,
            "checksum": checksum(str(n).encode()),
            "status": "failed" if n % 7 == 3 else "completed",
            "owner": "bob" if n % 5 == 0 else "alice",
            "visibility": "private" if n % 5 in (0, 1) else "public",
            "labels": _labels(n),
        }
    )


async def _registered(engine: AsyncEngine) -> list[ArtifactManifest]:
    await schema.migrate(engine)
    manifests = [_manifest(n) for n in range(COUNT)]
    async with engine.begin() as conn:
        for manifest in manifests:
            assert await artifact_store.insert_artifact(conn, manifest, expires_at=None, now=manifest.created_at)
    return manifests


async def _all_pages(engine: AsyncEngine, requester: Requester, **filters: Any) -> list[str]:
    """Every page of 4, following the cursor."""
    ids: list[str] = []
    cursor = None
    async with engine.connect() as conn:
        while True:
            params = ListArtifactsParams.model_validate({**filters, "limit": 4, "cursor": cursor})
            rows, cursor = await artifact_store.list_page(conn, params, requester)
            ids += [row.id for row in rows]
            if cursor is None:
                return ids


def _expected(manifests: list[ArtifactManifest], requester: Requester, **filters: Any) -> list[str]:
    """What the filters name, newest first, as the requester may read them."""
    wanted = filters.get("labels", {})
    after, before = filters.get("created_after"), filters.get("created_before")
    chosen = [
        m
        for m in manifests
        if all(m.labels.get(k) == v for k, v in wanted.items())
        and filters.get("trace_id", m.trace_id) == m.trace_id
        and filters.get("status", m.status.value) == m.status.value
        and (after is None or m.created_at > after)
        and (before is None or m.created_at < before)
        and (requester.is_admin or m.visibility.value == "public" or m.owner == requester.id)
    ]
    return [m.id for m in sorted(chosen, key=lambda m: (m.created_at, m.id), reverse=True)]


async def test_label_filters_list_what_they_name_newest_first(engine: AsyncEngine) -> None:
    manifests = await _registered(engine)
    cases: list[dict[str, Any]] = [
        {"labels": {"inn": "7701234567"}},
        {"labels": {"risk": "high"}},
        {"labels": {"risk": "high", "region": "0"}},
        {"labels": {"region": "1", "inn": "7701234567"}},
        {"labels": {"risk": "high"}, "trace_id": "trace-2"},
        {
            "labels": {"risk": "high"},
            "created_after": START + timedelta(minutes=9),
            "created_before": START + timedelta(minutes=40),
        },
        {"labels": {"risk": "none"}},
        {"labels": {"risk": "high"}, "status": "failed"},  # a rare status: its index drives, the label probed
        {"labels": {"region": "1", "risk": "high"}, "status": "completed"},
    ]
    for requester in (ADMIN, BOB):
        for filters in cases:
            listed = await _all_pages(engine, requester, **filters)
            assert listed == _expected(manifests, requester, **filters), (requester.id, filters)
    assert len(await _all_pages(engine, ADMIN, labels={"inn": "7701234567"})) == 3


_artifacts_0014 = sa.table(
    "artifacts",
    *(sa.column(name) for name in ("id", "version", "trace_id", "created_by", "artifact_type", "uri", "owner")),
    *(sa.column(name) for name in ("size_bytes", "checksum", "status", "visibility", "manifest")),
    sa.column("created_at", sa.DateTime()),
    sa.column("registered_at", sa.DateTime()),
)
_labels_0014 = sa.table("artifact_labels", sa.column("artifact_id"), sa.column("key"), sa.column("value"))


async def test_0015_gives_labels_saved_before_it_their_artifact_s_time(engine: AsyncEngine) -> None:
    """Labels written at revision 0014 (no time of their own) are found, in order, once 0015 ran."""
    await schema.migrate(engine, "0014")
    manifests = [_manifest(n) for n in range(6)]
    async with engine.begin() as conn:
        for manifest in manifests:
            await conn.execute(
                sa.insert(_artifacts_0014),
                {
                    **{k: getattr(manifest, k) for k in ("id", "trace_id", "created_by", "artifact_type", "uri")},
                    **{k: getattr(manifest, k) for k in ("version", "owner", "size_bytes", "checksum")},
                    "status": manifest.status.value,
                    "visibility": manifest.visibility.value,
                    "manifest": manifest.model_dump_json(),
                    "created_at": manifest.created_at.replace(tzinfo=None),
                    "registered_at": manifest.created_at.replace(tzinfo=None),
                },
            )
            await conn.execute(
                sa.insert(_labels_0014),
                [{"artifact_id": manifest.id, "key": k, "value": v} for k, v in manifest.labels.items()],
            )
    await schema.migrate(engine)

    assert await _all_pages(engine, ADMIN, labels={"region": "0"}) == [manifests[n].id for n in (4, 2, 0)]
    assert await _all_pages(engine, ADMIN, labels={"inn": "7701234567"}) == [manifests[n].id for n in (2, 1)]
    async with engine.connect() as conn:
        mismatched = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM artifact_labels AS l JOIN artifacts AS a ON a.id = l.artifact_id "
                "WHERE l.created_at <> a.created_at"
            )
        )
    assert mismatched == 0
