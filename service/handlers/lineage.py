"""``get_lineage``: a bounded walk over inputs and versions from one artifact the requester may read.

The walk goes level by level (one set of indexed queries per level and direction). A node the requester may
not read, or one that is gone (expired, deleted, never registered), is shown as ``hidden`` and is a dead end:
going on through it would tell the requester what that artifact was made from or into. The reply stays
within ``STORAGE_MAX_REPLY_BYTES`` and ``MAX_LINEAGE_NODES``; past either the walk stops with ``truncated``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import (
    MAX_LINEAGE_NODES,
    ArtifactManifest,
    GetLineageOutput,
    GetLineageParams,
    HiddenNode,
    LineageDirection,
    LineageEdge,
)
from service.core import paging
from service.core.context import HandlerContext
from service.handlers.artifact_access import check_readable, live_row, shown
from service.store import artifacts as store
from service.store import lineage
from service.store.lineage import Edge
from service.store.types import AnyRow

Step = Callable[[AsyncConnection, Collection[str]], Awaitable[list[Edge]]]


@dataclass
class _Graph:
    """What the walk has found so far, and what it may still add within the reply's limits."""

    budget: int
    nodes: dict[str, ArtifactManifest | HiddenNode] = field(default_factory=dict)
    edges: dict[Edge, None] = field(default_factory=dict)
    truncated: bool = False

    def add(self, artifact_id: str, node: ArtifactManifest | HiddenNode) -> bool:
        size = paging.text_size(node.model_dump_json()) + 1
        if len(self.nodes) >= MAX_LINEAGE_NODES or size > self.budget:
            self.truncated = True
            return False
        self.budget -= size
        self.nodes[artifact_id] = node
        return True


async def get_lineage(params: GetLineageParams, ctx: HandlerContext) -> GetLineageOutput:
    async with ctx.read() as conn:
        root = live_row(await store.get(conn, params.artifact_id), params.artifact_id, ctx)
        check_readable(root, ctx)
        graph = _Graph(budget=paging.page_budget(ctx.settings))
        graph.add(root.id, store.manifest_of(root))
        if params.direction in (LineageDirection.UPSTREAM, LineageDirection.BOTH):
            await _walk(conn, ctx, graph, root.id, lineage.upstream, params.depth)
        if params.direction in (LineageDirection.DOWNSTREAM, LineageDirection.BOTH):
            await _walk(conn, ctx, graph, root.id, lineage.downstream, params.depth)
    edges = [
        LineageEdge.model_validate({"from": e.source, "to": e.target, "kind": e.kind})
        for e in graph.edges
        if e.source in graph.nodes and e.target in graph.nodes
    ]
    return GetLineageOutput(
        artifact_id=root.id, nodes=list(graph.nodes.values()), edges=edges, truncated=graph.truncated
    )


async def _walk(conn: AsyncConnection, ctx: HandlerContext, graph: _Graph, start: str, step: Step, depth: int) -> None:
    """``depth`` levels from ``start``; only nodes the requester may read are walked on from."""
    frontier = {start}
    for _ in range(depth):
        if not frontier or graph.truncated:
            return
        found = await step(conn, frontier)
        reached = {end for edge in found for end in (edge.source, edge.target)} - graph.nodes.keys()
        rows = await lineage.rows_by_id(conn, reached)
        frontier = set()
        for artifact_id in sorted(reached, key=lambda i: (*_order(rows.get(i)), i)):
            row = rows.get(artifact_id)
            visible = row is not None and shown(row, ctx)
            node = store.manifest_of(row) if visible and row is not None else HiddenNode(id=artifact_id)
            if not graph.add(artifact_id, node):
                break
            if visible:
                frontier.add(artifact_id)
        graph.edges.update(dict.fromkeys(found))


def _order(row: AnyRow | None) -> tuple[int, str]:
    """Known artifacts oldest first, then unknown ids: a truncated walk keeps a stable, meaningful part."""
    if row is None:
        return (1, "")
    return (0, row.created_at.isoformat())
