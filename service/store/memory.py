"""Memory queries on Core tables: the primary-key get, the prefix+labels keyset search, writes and purges.

Every read takes ``now`` and filters on ``expires_at``: an item is gone from the moment it expires, whether
or not the cleanup has swept it yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import ColumnElement, FromClause, Insert, and_, delete, exists, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import MemoryItem, utc_now
from service.identity import Requester
from service.store import cursor, memory_keys
from service.store.models import MemoryLabel, MemoryRecord
from service.store.read_rule import readable_by
from service.store.types import AnyRow

items = MemoryRecord.__table__
labels = MemoryLabel.__table__


def alive(now: datetime) -> ColumnElement[bool]:
    return or_(items.c.expires_at.is_(None), items.c.expires_at > now)


def under(path: str, column: ColumnElement[str] = items.c.ns_path) -> ColumnElement[bool]:
    """Every namespace at or below ``path``: an index range on ``column``."""
    upper = memory_keys.upper_bound(path)
    if upper is None:
        return and_(True)
    return and_(column >= path, column < upper)


def to_item(row: AnyRow) -> MemoryItem:
    return MemoryItem(
        namespace=memory_keys.decode(row.ns_path),
        key=row.key,
        value=row.value,
        version=row.version,
        labels=row.labels,
        owner=row.owner,
        visibility=row.visibility,
        trace_id=row.trace_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        expires_at=row.expires_at,
    )


async def get(conn: AsyncConnection, item_id: str, *, for_update: bool = False) -> AnyRow | None:
    """The row whatever its expiry (writers need to see expired rows to replace them)."""
    query = select(items).where(items.c.id == item_id)
    if for_update:
        query = query.with_for_update()
    return (await conn.execute(query)).first()


def is_alive(row: AnyRow, now: datetime) -> bool:
    return row.expires_at is None or row.expires_at > now


async def insert_item(conn: AsyncConnection, values: dict[str, object]) -> bool:
    """Insert unless a concurrent writer (another worker) inserted the same id first; False then."""
    if conn.dialect.name == "postgresql":
        stmt: postgresql.Insert | sqlite.Insert | Insert = (
            postgresql.insert(items).values(values).on_conflict_do_nothing(index_elements=["id"])
        )
    elif conn.dialect.name == "sqlite":
        stmt = sqlite.insert(items).values(values).on_conflict_do_nothing(index_elements=["id"])
    else:
        stmt = insert(items).values(values)
    result = await conn.execute(stmt)
    return bool(result.rowcount)


async def update_item(conn: AsyncConnection, item_id: str, seen_version: int, values: dict[str, object]) -> bool:
    """Replace the row if it still has the version read; False when someone changed it meanwhile."""
    result = await conn.execute(
        update(items).where(items.c.id == item_id, items.c.version == seen_version).values(values)
    )
    return bool(result.rowcount)


async def replace_labels(
    conn: AsyncConnection, item_id: str, path: str, new: Mapping[str, str], *, had_labels: bool
) -> None:
    if had_labels:
        await conn.execute(delete(labels).where(labels.c.item_id == item_id))
    if new:
        rows = [{"item_id": item_id, "key": k, "value": v, "ns_path": path} for k, v in new.items()]
        await conn.execute(insert(labels), rows)


async def set_expiry(conn: AsyncConnection, item_id: str, expires_at: datetime) -> None:
    await conn.execute(update(items).where(items.c.id == item_id).values(expires_at=expires_at))


async def delete_item(conn: AsyncConnection, item_id: str) -> None:
    await conn.execute(delete(labels).where(labels.c.item_id == item_id))
    await conn.execute(delete(items).where(items.c.id == item_id))


def _search_source(prefix: str, label_filter: Mapping[str, str]) -> tuple[FromClause, bool]:
    """Where a search reads its rows, so that its cost follows what matches, not what the store holds.

    With a prefix and a label, the first label's ``(key, value, ns_path)`` range is exactly the items
    carrying it under the prefix, never more than the prefix holds: it is read first (a materialized CTE,
    so a planner misled by correlated statistics cannot turn it into the inner side of a nested loop)
    and items are fetched by primary key (True is returned: items need no range of their own, a label
    row's path is its item's). Without a prefix the planner chooses between a label's
    ``(key, value)`` range and the newest-first scan of items, whichever its statistics say is narrower.
    Further labels are primary-key probes of ``(item_id, key)``.
    """
    pending = list(label_filter.items())
    source: FromClause = items
    driven = bool(prefix and pending)
    if driven:
        key, value = pending.pop(0)
        first = labels.alias("label_0")
        matching = select(first.c.item_id).where(
            first.c.key == key, first.c.value == value, under(prefix, first.c.ns_path)
        )
        candidates = matching.cte("candidates").prefix_with("MATERIALIZED")
        source = candidates.join(items, items.c.id == candidates.c.item_id)
    for index, (key, value) in enumerate(pending, start=1):
        label = labels.alias(f"label_{index}")
        source = source.join(label, and_(label.c.item_id == items.c.id, label.c.key == key, label.c.value == value))
    return source, driven


async def search_page(
    conn: AsyncConnection,
    *,
    prefix: str,
    label_filter: Mapping[str, str],
    requester: Requester,
    now: datetime,
    limit: int,
    after: str | None,
) -> tuple[list[AnyRow], str | None]:
    """One page newest first (by ``updated_at``), keyset-paged on (updated_at, id)."""
    source, driven_by_label = _search_source(prefix, label_filter)
    conditions = [alive(now), readable_by(items, requester)]
    if not driven_by_label:  # else the label's own range already holds exactly the prefix's items
        conditions.append(under(prefix))
    query = select(items).select_from(source).where(*conditions)
    return await cursor.newest_first_page(conn, query, items.c.updated_at, items.c.id, token=after, limit=limit)


def _past(path: str, max_depth: int | None) -> tuple[str, bool]:
    """Where the scan goes on after answering ``path``: past its whole subtree when it was truncated."""
    if max_depth is not None and path.count(memory_keys.SEPARATOR) >= max_depth:
        next_start = memory_keys.upper_bound(memory_keys.truncate(path, max_depth))
        assert next_start is not None
        return next_start, True
    return path, False


async def namespaces(
    conn: AsyncConnection,
    *,
    prefix: str,
    max_depth: int | None,
    requester: Requester,
    now: datetime,
    limit: int,
    after: str | None = None,
) -> list[str]:
    """Distinct namespace paths under ``prefix`` (cut to ``max_depth`` parts), in path order, after ``after``.

    A loose index scan: each step asks the index for the first live, readable path past the previous
    answer's whole subtree (or past the path itself when not truncating), so the cost follows the number
    of namespaces returned, not the number of items under them.
    """
    found: list[str] = []
    upper = memory_keys.upper_bound(prefix)
    start, inclusive = prefix, True
    if after is not None and after >= prefix:  # a cursor from before the prefix never widens it
        start, inclusive = _past(after, max_depth)
    while len(found) < limit:
        lower = items.c.ns_path >= start if inclusive else items.c.ns_path > start
        query = select(items.c.ns_path).where(lower, alive(now), readable_by(items, requester))
        if upper is not None:
            query = query.where(items.c.ns_path < upper)
        path = (await conn.execute(query.order_by(items.c.ns_path).limit(1))).scalar()
        if path is None:
            break
        start, inclusive = _past(path, max_depth)
        if max_depth is not None:
            path = memory_keys.truncate(path, max_depth)  # its whole subtree answers as this one path
        found.append(path)
    return found


async def count_by_top_namespace(
    conn: AsyncConnection, requester: Requester, now: datetime | None = None
) -> dict[str, int]:
    """Live items per top-level namespace (what ``get_stats`` reports), counting only what ``requester``
    may read: a namespace name is data too (``["alice-private-plans"]``), so another agent's private
    namespaces appear neither as names nor in the counts. Admins see every namespace."""
    query = (
        select(items.c.ns_top, func.count())
        .where(alive(now or utc_now()), readable_by(items, requester))
        .group_by(items.c.ns_top)
    )
    return {str(top): int(n) for top, n in (await conn.execute(query)).all()}


async def count_expired(conn: AsyncConnection, now: datetime) -> int:
    query = select(func.count()).select_from(items).where(items.c.expires_at <= now)
    return int((await conn.execute(query)).scalar_one())


async def purge_expired(conn: AsyncConnection, now: datetime, limit: int) -> int:
    """Delete up to ``limit`` items expired at ``now``, with their labels; returns how many went."""
    batch = list((await conn.execute(select(items.c.id).where(items.c.expires_at <= now).limit(limit))).scalars())
    if not batch:
        return 0
    result = await conn.execute(delete(items).where(items.c.id.in_(batch), items.c.expires_at <= now))
    gone = ~exists().where(items.c.id == labels.c.item_id)
    await conn.execute(delete(labels).where(labels.c.item_id.in_(batch), gone))
    return int(result.rowcount or 0)
