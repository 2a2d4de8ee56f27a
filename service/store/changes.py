"""The change log: what every committed write records, its outbox, ``changes_since``'s reads and its retention.

A job records its change with ``record``; inside the single writer the change waits in the group's
``PendingChanges`` and goes in at the group's end, right before the commit (``flush``), so a job whose
savepoint rolls back takes its change with it (the writer drops what it recorded) and a group that rolls
back records nothing. Each change gets an outbox row naming its node in the same statement(s).

Ids are the order of commits: SQLite has one writer, and on PostgreSQL a group's changes go in under one
transaction-scoped advisory lock taken as the group's last act before COMMIT, so no two workers' groups
hand out ids at once and a group that got lower ids has committed before one that got higher ids could
begin. A reader that saw change n has therefore seen every change before it (``changes_since`` relies on it).
The lock is the last thing a group waits for (it holds no other lock it could wait on meanwhile): it cannot
deadlock, and it is held for one INSERT and the COMMIT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import ARRAY, ColumnElement, bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import Change, ChangeKind, Visibility
from service.identity import Requester
from service.store import memory_keys
from service.store.engine.prepared import PreparedWrite
from service.store.models import ChangeRow, ChangesPurged, OutboxRow
from service.store.read_rule import readable_by
from service.store.types import AnyRow

changes = ChangeRow.__table__
outbox = OutboxRow.__table__
purged = ChangesPurged.__table__

PENDING = "storage_group_changes"
"""``conn.info`` key of the changes the writer's current group recorded (set while the group runs)."""
COLUMNS = (
    "kind",
    "node",
    "occurred_at",
    "trace_id",
    "visibility",
    "owner",
    "artifact_id",
    "thread_id",
    "ns_path",
    "key",
    "version",
    "quota",
    "quota_limit",
    "usage",
    "threshold_percent",
)
"""Every column a change is inserted with (all of them each time: one statement text for every change)."""
_ORDER_LOCK = 0x6D62_6368  # "mbch": one advisory lock id for every storage worker's change inserts
_WATERMARK = 1
"""The id of ``changes_purged``'s one row."""


def new_change(
    kind: ChangeKind,
    *,
    node: str,
    at: datetime,
    visibility: str,
    owner: str | None,
    trace_id: str | None = None,
    artifact_id: str | None = None,
    thread_id: str | None = None,
    namespace: Sequence[str] | None = None,
    key: str | None = None,
    version: int | None = None,
    quota: str | None = None,
    limit: int | None = None,
    usage: int | None = None,
    threshold_percent: int | None = None,
) -> dict[str, Any]:
    """A change as its row: ``visibility``, ``owner`` and ``trace_id`` are the changed object's read rule."""
    return {
        "kind": kind.value,
        "node": node,
        "occurred_at": at,
        "trace_id": trace_id,
        "visibility": visibility,
        "owner": owner,
        "artifact_id": artifact_id,
        "thread_id": thread_id,
        "ns_path": None if namespace is None else memory_keys.encode(namespace),
        "key": key,
        "version": version,
        "quota": quota,
        "quota_limit": limit,
        "usage": usage,
        "threshold_percent": threshold_percent,
    }


class PendingChanges:
    """The changes the jobs of one group recorded, in order; the writer cuts off those of a job rolled back."""

    __slots__ = ("flushed", "rows")

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.flushed = 0

    def mark(self) -> int:
        return len(self.rows)

    def drop_after(self, mark: int) -> None:
        del self.rows[mark:]

    async def flush(self, conn: AsyncConnection) -> None:
        """Insert them (with their outbox rows): the group's last statements before its commit."""
        await insert_changes(conn, self.rows)
        self.flushed += len(self.rows)
        self.rows = []


async def record(conn: AsyncConnection, *rows: dict[str, Any]) -> None:
    """Record changes in the transaction of ``conn``: at the writer group's end, or now outside the writer."""
    pending: PendingChanges | None = conn.info.get(PENDING)
    if pending is not None:
        pending.rows.extend(rows)
    else:
        await insert_changes(conn, rows)


async def insert_changes(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        await _take_order_lock(conn)
        arrays = {name: [row[name] for row in rows] for name in COLUMNS}
        await _pg_insert().execute(conn, arrays)
        return
    logged = _one_insert()
    ids = [(await logged.fetch(conn, row))[0][0] for row in rows]
    await _outbox_insert().execute_many(
        conn, [{"change_id": change_id, "node": row["node"]} for change_id, row in zip(ids, rows, strict=True)]
    )


async def _take_order_lock(conn: AsyncConnection) -> None:
    """The advisory lock that orders commits with changes (module docstring); waited for as long as it takes:
    the group's lock limit (``SET LOCAL lock_timeout``) is for rows, and no group holds this one long."""
    driver: Any = (await conn.get_raw_connection()).driver_connection
    if not driver.is_in_transaction():  # SQLAlchemy's adapter begins on its first statement: let it begin here,
        await conn.exec_driver_sql("SELECT 1")  # or the lock would end with a transaction of its own
    await driver.execute(f"SET LOCAL lock_timeout = 0; SELECT pg_advisory_xact_lock({_ORDER_LOCK})")


@cache
def _pg_insert() -> PreparedWrite:
    """PostgreSQL: the group's changes and their outbox rows in one statement, ids in the arrays' order."""
    arrays = [bindparam(name, type_=ARRAY(changes.c[name].type)) for name in COLUMNS]
    unnested = func.unnest(*arrays).table_valued(*COLUMNS).render_derived()
    logged = (
        insert(changes)
        .from_select(list(COLUMNS), select(*unnested.c))
        .returning(changes.c.id, changes.c.node)
        .cte("logged")
    )
    return PreparedWrite(insert(outbox).from_select(["change_id", "node"], select(logged.c.id, logged.c.node)))


@cache
def _one_insert() -> PreparedWrite:
    return PreparedWrite(insert(changes).returning(changes.c.id))


@cache
def _outbox_insert() -> PreparedWrite:
    return PreparedWrite(insert(outbox))


# -- what is published and what changes_since answers -----------------------------------------------------------

CHANGE_COLUMNS = (changes.c.id, *(changes.c[name] for name in COLUMNS if name != "owner"))
"""What a change is told with: everything but its owner."""


def to_change(row: AnyRow) -> Change:
    """The published form: pointers only (a quota warning's visibility is its rule's, not an object's)."""
    quota_warning = row.kind == ChangeKind.QUOTA_WARNING.value
    return Change(
        change_id=row.id,
        kind=ChangeKind(row.kind),
        occurred_at=row.occurred_at,
        node=row.node,
        trace_id=row.trace_id,
        visibility=None if quota_warning else Visibility(row.visibility),
        artifact_id=row.artifact_id,
        thread_id=row.thread_id,
        namespace=None if row.ns_path is None else memory_keys.decode(row.ns_path),
        key=row.key,
        version=row.version,
        quota=row.quota,
        limit=row.quota_limit,
        usage=row.usage,
        threshold_percent=row.threshold_percent,
    )


class Horizon(NamedTuple):
    """The log as one read finds it: every change up to ``last`` is committed; those up to ``purged`` may be gone."""

    last: int
    purged: int


async def horizon(conn: AsyncConnection) -> Horizon:
    newest = select(func.max(changes.c.id)).scalar_subquery()
    through = select(purged.c.through).where(purged.c.id == _WATERMARK).scalar_subquery()
    row = (await conn.execute(select(newest, through))).one()
    gone = int(row[1] or 0)
    return Horizon(last=max(int(row[0] or 0), gone), purged=gone)


class Window(NamedTuple):
    """The ids one ``changes_since`` looks at: after ``after``, up to ``end``; ``full`` when more lie beyond."""

    end: int
    full: bool


async def window(conn: AsyncConnection, *, after: int, last: int, trace_id: str | None, scan: int) -> Window:
    """At most ``scan`` changes after ``after`` (of one trace: its index), up to ``last``: what one call reads."""
    ids = select(changes.c.id).where(changes.c.id > after, changes.c.id <= last)
    if trace_id is not None:
        ids = ids.where(changes.c.trace_id == trace_id)
    scanned = ids.order_by(changes.c.id).limit(scan).subquery()
    count, end = (await conn.execute(select(func.count(), func.max(scanned.c.id)))).one()
    if count < scan:
        return Window(end=last, full=False)
    return Window(end=int(end), full=True)


async def readable_page(
    conn: AsyncConnection,
    *,
    after: int,
    through: int,
    requester: Requester,
    kinds: Sequence[ChangeKind] | None,
    trace_id: str | None,
    limit: int,
) -> list[AnyRow]:
    """The changes after ``after`` up to ``through`` that ``requester`` may read, oldest first, ``limit`` at most."""
    conditions: list[ColumnElement[bool]] = [
        changes.c.id > after,
        changes.c.id <= through,
        readable_by(changes, requester),
    ]
    if kinds is not None:
        conditions.append(changes.c.kind.in_([kind.value for kind in kinds]))
    if trace_id is not None:
        conditions.append(changes.c.trace_id == trace_id)
    query = select(*CHANGE_COLUMNS).where(*conditions).order_by(changes.c.id).limit(limit)
    return list((await conn.execute(query)).all())


# -- the outbox --------------------------------------------------------------------------------------------------


async def waiting(conn: AsyncConnection, node: str, limit: int) -> list[AnyRow]:
    """The node's changes not yet confirmed by the broker, in id (commit) order."""
    joined = outbox.join(changes, changes.c.id == outbox.c.change_id)
    query = (
        select(*CHANGE_COLUMNS)
        .select_from(joined)
        .where(outbox.c.node == node)
        .order_by(outbox.c.change_id)
        .limit(limit)
    )
    return list((await conn.execute(query)).all())


async def count_waiting(conn: AsyncConnection, node: str) -> int:
    query = select(func.count()).select_from(outbox).where(outbox.c.node == node)
    return int((await conn.execute(query)).scalar_one())


async def published(conn: AsyncConnection, ids: Sequence[int]) -> int:
    """Forget the outbox rows of changes the broker confirmed."""
    if not ids:
        return 0
    return int((await conn.execute(delete(outbox).where(outbox.c.change_id.in_(ids)))).rowcount or 0)


# -- retention ---------------------------------------------------------------------------------------------------


async def _purgeable(conn: AsyncConnection, after: int, cutoff: datetime, batch: int) -> list[int]:
    """The ids of the next batch of the log's purgeable prefix after ``after``: published changes older than
    ``cutoff``, up to the first that is younger or still waits in an outbox."""
    first_waiting = (await conn.execute(select(func.min(outbox.c.change_id)))).scalar_one()
    query = select(changes.c.id, changes.c.occurred_at).where(changes.c.id > after)
    if first_waiting is not None:
        query = query.where(changes.c.id < first_waiting)
    ids: list[int] = []
    for row in (await conn.execute(query.order_by(changes.c.id).limit(batch))).all():
        if row.occurred_at >= cutoff:
            break
        ids.append(int(row.id))
    return ids


async def purge_before(conn: AsyncConnection, cutoff: datetime, batch: int) -> int:
    """Purge one batch of the log's purgeable prefix and raise the watermark past it; how many went."""
    through = (await horizon(conn)).purged
    ids = await _purgeable(conn, through, cutoff, batch)
    if not ids:
        return 0
    await conn.execute(delete(changes).where(changes.c.id > through, changes.c.id <= ids[-1]))
    await conn.execute(update(purged).where(purged.c.id == _WATERMARK).values(through=ids[-1]))
    return len(ids)


async def count_purgeable(conn: AsyncConnection, cutoff: datetime, batch: int) -> int:
    """A dry run's count: what ``purge_before`` would take, batch after batch."""
    after, total = (await horizon(conn)).purged, 0
    while True:
        ids = await _purgeable(conn, after, cutoff, batch)
        total += len(ids)
        if len(ids) < batch:
            return total
        after = ids[-1]
