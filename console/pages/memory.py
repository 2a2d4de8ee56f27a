"""``/memory``: the namespace tree and the items under the selected prefix, with their labels and TTL left.

A namespace is a list of parts (``["agent.researcher.001", "cache"]``); a part is plain text, dots and slashes
included, so the tree nests by parts and the address carries one ``prefix`` parameter per part. The worker
lists only what the console's broker user may read (``list_namespaces``, ``search_memory``): another agent's
private namespaces never show, not even their names.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from console.pages.threads import BadFilter, as_pairs, pairs
from console.web import arg, bus_of, link, render, settings_of
from contracts import InvalidArgument, ListNamespacesOutput, MemoryItem, SearchMemoryOutput
from contracts.manifest import MAX_LABELS
from contracts.memory import MAX_NAMESPACE_DEPTH

MAX_PART = 128
MAX_KEY = 512
MAX_CURSOR = 1024
TREE_LIMIT = 200
"""Namespaces asked for per level of the tree; a level with more says so (narrow it with the prefix)."""
MAX_SHOWN_VALUE = 2000
"""Characters of an item's pretty JSON shown in the table; the rest is counted."""
KEY_SCAN_CALLS = 10
"""Pages of ``search_memory`` one view reads at most while filtering by key prefix (the action has no key
filter): the view shows every match of the pages it read and continues from the last one's cursor, so no item is
skipped or shown twice; it stops early once a page's worth matched."""


@dataclass
class Node:
    """One namespace of the tree: its parts, whether it is on the selected path, its children (when expanded)."""

    parts: list[str]
    selected: bool = False
    on_path: bool = False
    children: list[Node] = field(default_factory=list)
    more: bool = False
    """Its children were cut at ``TREE_LIMIT``."""

    @property
    def name(self) -> str:
        return self.parts[-1]

    @property
    def joined(self) -> str:
        return "/".join(self.parts)

    @property
    def href(self) -> str:
        return link("/memory", prefix=self.parts)


def _prefix(request: Request) -> list[str]:
    parts = [part.strip() for part in request.query_params.getlist("prefix")]
    parts = [part for part in parts if part]
    if len(parts) > MAX_NAMESPACE_DEPTH:
        raise BadFilter(f"a namespace has at most {MAX_NAMESPACE_DEPTH} parts, the prefix has {len(parts)}")
    for part in parts:
        if len(part) > MAX_PART:
            raise BadFilter(f"namespace part {part[:40]!r}… is {len(part)} characters, at most {MAX_PART}")
    return parts


def _labels(request: Request) -> dict[str, str]:
    labels = pairs(request, "label", what="label", max_count=MAX_LABELS)
    for key in labels:
        if len(key) > 64:
            raise BadFilter(f"label key {key[:40]!r}… is {len(key)} characters, at most 64")
    return labels


async def _tree(request: Request, prefix: list[str]) -> list[Node]:
    """The roots, and along the selected prefix each level's children: a file browser's expanded path.
    One ``list_namespaces`` per level, all at once; a level cut at ``TREE_LIMIT`` is marked."""
    storage = bus_of(request).storage
    levels: list[ListNamespacesOutput] = await asyncio.gather(
        *(
            storage.list_namespaces(prefix=prefix[:depth], max_depth=depth + 1, limit=TREE_LIMIT)
            for depth in range(len(prefix) + 1)
        )
    )
    roots = Node(parts=[])
    parent = roots
    for depth, level in enumerate(levels):
        children = [Node(parts=list(ns)) for ns in level.namespaces if len(ns) == depth + 1]
        parent.children, parent.more = children, level.next_cursor is not None
        if depth == len(prefix):
            break
        step = prefix[: depth + 1]
        on_path = next((node for node in children if node.parts == step), None)
        if on_path is None:  # the typed prefix holds nothing readable (yet): shown as typed, it reveals nothing
            on_path = Node(parts=step)
            children.append(on_path)
        on_path.on_path = True
        on_path.selected = depth + 1 == len(prefix)
        parent = on_path
    return roots.children


def _ttl_left(item: MemoryItem, now: datetime) -> float | None:
    return None if item.expires_at is None else max(0.0, (item.expires_at - now).total_seconds())


def _left(seconds: float) -> str:
    """A TTL left to the second where it matters: ``59 min 58 s`` (the overview's ``ago`` would say 60.0 min)."""
    whole = int(seconds)
    for unit, size, small, small_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60), ("min", 60, "s", 1)):
        if whole >= size:
            return f"{whole // size} {unit} {whole % size // small_size} {small}"
    return f"{whole} s"


def _value(item: MemoryItem) -> tuple[str, int]:
    text = json.dumps(item.value, indent=2, ensure_ascii=False, default=str, sort_keys=True)
    return text[:MAX_SHOWN_VALUE], max(0, len(text) - MAX_SHOWN_VALUE)


@dataclass
class Items:
    items: list[MemoryItem]
    next_cursor: str | None
    scanned: int = 0


async def _items(
    request: Request, prefix: list[str], labels: dict[str, str], key: str | None, cursor: str | None
) -> Items:
    """One page of items; with a key prefix, the matches of up to ``KEY_SCAN_CALLS`` pages read in a row."""
    storage, size = bus_of(request).storage, settings_of(request).page_size
    found = Items(items=[], next_cursor=cursor)
    for _ in range(KEY_SCAN_CALLS if key else 1):
        page: SearchMemoryOutput = await storage.search_memory(
            namespace_prefix=prefix, labels=dict(labels), limit=size, cursor=found.next_cursor
        )
        found.scanned += len(page.items)
        found.items.extend(item for item in page.items if key is None or item.key.startswith(key))
        found.next_cursor = page.next_cursor
        if found.next_cursor is None or len(found.items) >= size:
            break
    return found


async def memory_page(request: Request) -> Response:
    key = arg(request, "key", max_length=MAX_KEY)
    cursor = arg(request, "cursor", max_length=MAX_CURSOR)
    problem: str | None = None
    prefix: list[str] = []
    labels: dict[str, str] = {}
    tree: list[Node] = []
    found = Items(items=[], next_cursor=None)
    try:
        prefix, labels = _prefix(request), _labels(request)
        tree, found = await asyncio.gather(_tree(request, prefix), _items(request, prefix, labels, key, cursor))
    except BadFilter as exc:
        problem = str(exc)
    except InvalidArgument as exc:  # a damaged cursor, a label the worker refuses: its own words
        problem = exc.message
    now = datetime.now(UTC)
    rows = []
    for item in found.items:
        left = _ttl_left(item, now)
        rows.append(
            {"item": item, "ttl_left": left, "left": None if left is None else _left(left), "value": _value(item)}
        )
    filters: dict[str, Any] = {"prefix": prefix, "label": as_pairs(labels), "key": key}
    return render(
        request,
        "memory.html",
        status_code=400 if problem else 200,
        problem=problem,
        tree=tree,
        prefix=prefix,
        prefix_fields=[*prefix, ""] if len(prefix) < MAX_NAMESPACE_DEPTH else prefix,
        labels=as_pairs(labels),
        key=key or "",
        rows=rows,
        scanned=found.scanned if key else None,
        first_page=link("/memory", **filters) if cursor else None,
        next_page=link("/memory", **filters, cursor=found.next_cursor) if found.next_cursor else None,
    )


routes: list[BaseRoute] = [Route("/memory", memory_page)]
