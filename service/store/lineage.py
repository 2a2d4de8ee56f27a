"""The lineage index: which artifacts named which as inputs, and the steps of a walk over it.

``artifact_inputs`` holds ``context.input_artifacts`` as rows, written with the artifact in one transaction;
``artifacts.supersedes`` already links the versions. One step of a walk is two indexed queries per direction
for the whole frontier, so a walk of depth 3 is a handful of statements whatever the table's size.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import ArtifactManifest, EdgeKind
from service.store.artifacts import ROW_COLUMNS, artifacts
from service.store.engine.deferred import DeferredInsert
from service.store.models import ArtifactInput
from service.store.types import AnyRow

inputs = ArtifactInput.__table__
_INSERT_INPUTS = DeferredInsert(inputs, list(inputs.c))
"""On PostgreSQL sent with the group's other rows at its end: only lineage walks, outside the group, read them."""


class Edge(NamedTuple):
    source: str
    target: str
    kind: EdgeKind


def inputs_of(manifest: ArtifactManifest) -> list[str]:
    """The distinct ids the manifest names as inputs, in its order, itself left out (no edge to itself)."""
    named = manifest.context.input_artifacts if manifest.context is not None else []
    return [i for i in dict.fromkeys(named) if i != manifest.id]


async def record_inputs(conn: AsyncConnection, manifest: ArtifactManifest) -> None:
    """Index the manifest's inputs in the registration's own transaction."""
    rows = [{"artifact_id": manifest.id, "input_id": input_id} for input_id in inputs_of(manifest)]
    await _INSERT_INPUTS.insert(conn, rows)


async def upstream(conn: AsyncConnection, ids: Collection[str]) -> list[Edge]:
    """Edges into ``ids``: their inputs, and the versions they supersede."""
    named = await conn.execute(select(inputs.c.input_id, inputs.c.artifact_id).where(inputs.c.artifact_id.in_(ids)))
    older = await conn.execute(
        select(artifacts.c.supersedes, artifacts.c.id).where(
            artifacts.c.id.in_(ids), artifacts.c.supersedes.is_not(None)
        )
    )
    return [*_edges(named, EdgeKind.INPUT), *_edges(older, EdgeKind.SUPERSEDES)]


async def downstream(conn: AsyncConnection, ids: Collection[str]) -> list[Edge]:
    """Edges out of ``ids``: what names them as an input, and their successors."""
    made = await conn.execute(select(inputs.c.input_id, inputs.c.artifact_id).where(inputs.c.input_id.in_(ids)))
    newer = await conn.execute(select(artifacts.c.supersedes, artifacts.c.id).where(artifacts.c.supersedes.in_(ids)))
    return [*_edges(made, EdgeKind.INPUT), *_edges(newer, EdgeKind.SUPERSEDES)]


async def rows_by_id(conn: AsyncConnection, ids: Collection[str]) -> dict[str, AnyRow]:
    """The artifact rows of ``ids`` that exist (any state: the caller decides what it may show)."""
    if not ids:
        return {}
    result = await conn.execute(select(*ROW_COLUMNS).where(artifacts.c.id.in_(ids)))
    return {row.id: row for row in result}


def _edges(rows: Iterable[tuple[str | None, str]], kind: EdgeKind) -> list[Edge]:
    return [Edge(source, target, kind) for source, target in rows if source is not None]
