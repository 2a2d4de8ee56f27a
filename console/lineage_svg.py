"""An artifact's lineage laid out for an inline SVG: pure geometry, no I/O, no markup (the template draws it).

Columns are distances from the artifact the page is about: its inputs and earlier versions to the left (one
column per step), the artifact in the middle, what was made from it and its later versions to the right.
Within a column, nodes sit near the nodes they connect to in the column nearer the middle (the mean of their
rows), so edges cross little. A column with many nodes wraps into lanes side by side instead of growing
taller than a screen. Every edge points rightwards, from an input (or a version) to what came of it.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from contracts import ArtifactManifest, HiddenNode, LineageEdge

MAX_DRAWN = 200
"""Nodes drawn at most; beyond that the drawing says it is truncated."""
MAX_ROWS = 10
"""Nodes stacked in one lane before a column wraps into another lane."""
BOX_W, BOX_H = 200.0, 54.0
LANE_W = BOX_W + 64.0
ROW_H = BOX_H + 16.0
MARGIN = 16.0
HEADER = 26.0
TITLE_CHARS, SUBTITLE_CHARS = 26, 30
NAME_LABELS = ("name", "title", "filename")
"""Labels whose value names an artifact (a manifest has no name field of its own)."""


def artifact_name(manifest: ArtifactManifest) -> str | None:
    """What a person would call the artifact: its ``name`` (or ``title``, ``filename``) label, if any."""
    for key in NAME_LABELS:
        value = manifest.labels.get(key, "").strip()
        if value:
            return value
    return None


def short_id(artifact_id: str) -> str:
    """``art_1a2b3c4d…``: enough to tell nodes apart on a drawing; the full id is in the link and tooltip."""
    return artifact_id[:12] + "\u2026" if len(artifact_id) > 13 else artifact_id


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


@dataclass(frozen=True, slots=True)
class Box:
    """One node at its place; ``title`` etc. are plain text (the template escapes them)."""

    id: str
    x: float
    y: float
    column: int
    hidden: bool
    focus: bool
    title: str = ""
    subtitle: str = ""
    caption: str = ""
    tooltip: str = ""
    status: str = ""


@dataclass(frozen=True, slots=True)
class Wire:
    """One edge as an SVG path, from the right side of ``source`` to the left side of ``target``."""

    source: str
    target: str
    kind: str
    path: str


@dataclass(frozen=True, slots=True)
class Heading:
    x: float
    text: str


@dataclass(frozen=True, slots=True)
class Drawing:
    width: float
    height: float
    boxes: list[Box]
    wires: list[Wire]
    headings: list[Heading]
    truncated: bool
    """More nodes than ``MAX_DRAWN`` came: only the first (in the walk's order) are drawn."""
    box_w: float = BOX_W
    box_h: float = BOX_H


def _walk(start: str, neighbours: dict[str, list[str]]) -> dict[str, int]:
    """Steps from ``start`` to every node reachable along ``neighbours`` (breadth first)."""
    seen = {start: 0}
    queue = deque([start])
    while queue:
        here = queue.popleft()
        for there in neighbours.get(here, ()):
            if there not in seen:
                seen[there] = seen[here] + 1
                queue.append(there)
    return seen


def columns_of(ids: Sequence[str], edges: Iterable[tuple[str, str]], focus: str) -> dict[str, int]:
    """Each node's column: minus its steps upstream of ``focus``, plus its steps downstream. A node neither walk
    reaches (possible only in a partial reply) goes one column left of what it feeds, or right of its source."""
    pairs = [(source, target) for source, target in edges if source != target]
    into: dict[str, list[str]] = defaultdict(list)
    out_of: dict[str, list[str]] = defaultdict(list)
    for source, target in pairs:
        into[target].append(source)
        out_of[source].append(target)
    up, down = _walk(focus, into), _walk(focus, out_of)
    column = {node: -up[node] if node in up else down[node] for node in ids if node in up or node in down}
    for _ in range(len(ids)):
        placed = len(column)
        for source, target in pairs:
            if target in column and source not in column:
                column[source] = column[target] - 1
            elif source in column and target not in column:
                column[target] = column[source] + 1
        if len(column) == placed:
            break
    last = max(column.values(), default=0)
    return {node: column.get(node, last + 1) for node in ids}


def _order(ids: Sequence[str], column: dict[str, int], edges: Sequence[tuple[str, str]]) -> dict[int, list[str]]:
    """Nodes of each column, top to bottom: columns nearer the middle first, each node by the mean row of its
    neighbours in the column just nearer the middle (walk order breaks ties and places the unconnected)."""
    walk_rank = {node: rank for rank, node in enumerate(ids)}
    linked: dict[str, list[str]] = defaultdict(list)
    for source, target in edges:
        linked[source].append(target)
        linked[target].append(source)
    by_column: dict[int, list[str]] = defaultdict(list)
    for node in ids:
        by_column[column[node]].append(node)
    rows: dict[str, float] = {}
    ordered: dict[int, list[str]] = {}
    for col in sorted(by_column, key=lambda c: (abs(c), c)):
        nearer = col - 1 if col > 0 else col + 1

        def key(node: str, nearer: int = nearer) -> tuple[float, int]:
            around = [rows[other] for other in linked[node] if column.get(other) == nearer and other in rows]
            return (sum(around) / len(around) if around else math.inf, walk_rank[node])

        ordered[col] = sorted(by_column[col], key=key)
        rows.update((node, float(row)) for row, node in enumerate(ordered[col]))
    return ordered


def _heading(col: int) -> str:
    if col == 0:
        return "this artifact"
    steps = f"{abs(col)} step{'s' if abs(col) > 1 else ''}"
    return f"{steps} upstream" if col < 0 else f"{steps} downstream"


def _box(node: ArtifactManifest | HiddenNode, x: float, y: float, col: int, focus: str) -> Box:
    if isinstance(node, HiddenNode):
        return Box(node.id, x, y, col, hidden=True, focus=node.id == focus, title="hidden")
    name = artifact_name(node)
    kind = f"{node.artifact_type} \u00b7 v{node.version}"
    return Box(
        node.id,
        x,
        y,
        col,
        hidden=False,
        focus=node.id == focus,
        title=_cut(name or node.artifact_type, TITLE_CHARS),
        subtitle=_cut(kind if name else f"v{node.version} \u00b7 {node.created_by}", SUBTITLE_CHARS),
        caption=short_id(node.id),
        tooltip=f"{name or node.artifact_type} ({node.id})",
        status=str(node.status),
    )


def _path(source: Box, target: Box) -> str:
    """A cubic curve between the boxes' facing sides (bottom to top when they share a lane)."""
    if abs(source.x - target.x) < 1:
        x = source.x + BOX_W / 2
        y1, y2 = (source.y + BOX_H, target.y) if source.y < target.y else (source.y, target.y + BOX_H)
        return f"M{x:.0f},{y1:.0f} L{x:.0f},{y2:.0f}"
    rightwards = target.x > source.x
    x1 = source.x + BOX_W if rightwards else source.x
    x2 = target.x if rightwards else target.x + BOX_W
    y1, y2 = source.y + BOX_H / 2, target.y + BOX_H / 2
    bend = max(24.0, abs(x2 - x1) / 2) * (1 if rightwards else -1)
    return f"M{x1:.0f},{y1:.0f} C{x1 + bend:.0f},{y1:.0f} {x2 - bend:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"


def layout(nodes: Sequence[ArtifactManifest | HiddenNode], edges: Sequence[LineageEdge], focus: str) -> Drawing:
    """The drawing of a ``get_lineage`` reply around ``focus``: boxes, curves and column headings, in pixels."""
    drawn = list({node.id: node for node in nodes}.values())
    truncated = len(drawn) > MAX_DRAWN
    drawn = drawn[:MAX_DRAWN]
    by_id = {node.id: node for node in drawn}
    ids = list(by_id)
    pairs = [(e.from_, e.to) for e in edges if e.from_ in by_id and e.to in by_id]
    column = columns_of(ids, pairs, focus)
    ordered = _order(ids, column, pairs)
    lanes = {col: max(1, math.ceil(len(members) / MAX_ROWS)) for col, members in ordered.items()}
    per_lane = {col: math.ceil(len(members) / lanes[col]) for col, members in ordered.items()}
    tallest = max(per_lane.values(), default=1)
    boxes: dict[str, Box] = {}
    headings: list[Heading] = []
    x = MARGIN
    for col in sorted(ordered):
        members, rows = ordered[col], per_lane[col]
        headings.append(Heading(x + lanes[col] * LANE_W / 2 - (LANE_W - BOX_W) / 2, _heading(col)))
        for index, node_id in enumerate(members):
            lane, row = divmod(index, rows)
            in_lane = min(rows, len(members) - lane * rows)
            top = MARGIN + HEADER + (tallest - in_lane) * ROW_H / 2
            boxes[node_id] = _box(by_id[node_id], x + lane * LANE_W, top + row * ROW_H, col, focus)
        x += lanes[col] * LANE_W
    wires = [
        Wire(e.from_, e.to, str(e.kind), _path(boxes[e.from_], boxes[e.to]))
        for e in edges
        if e.from_ in boxes and e.to in boxes and e.from_ != e.to
    ]
    width = x - (LANE_W - BOX_W) + MARGIN
    height = MARGIN * 2 + HEADER + tallest * ROW_H - (ROW_H - BOX_H)
    return Drawing(width, height, [boxes[i] for i in ids], wires, headings, truncated)
