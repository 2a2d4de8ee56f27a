"""Per-trace usage (live artifacts, their bytes), changed in the transaction of whatever changes them.

``count`` adds a registration when no limit is set: on PostgreSQL a group run all or nothing sends its
traces' counts in one statement at its end (``deferred``), so a registration pays no round trip of its own
for it. ``charge`` adds one when a limit is set, only if the trace stays within the limits, in one
statement that reads and bumps the trace's row: the row lock serialises concurrent registrations of one
trace, whichever worker runs them, and no row back means refused. ``release`` takes tombstoned or expired
artifacts off, ``restore`` puts a revived one back (both at once: a charge later in the
group reads them). A job that raises after any of these rolls it back
with its own savepoint or group: the count moves exactly when the artifact's row does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, String, bindparam, case, func, literal_column, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import QUOTA_WARNING_PERCENT
from service.store.engine.deferred import GROUP_ROWS, GroupRows
from service.store.engine.prepared import PreparedRead, PreparedWrite
from service.store.models import TraceUsage

usage = TraceUsage.__table__
UNLIMITED = 2**62
"""An unset limit in the statement: usage plus any one file stays far inside a BIGINT."""


@dataclass(frozen=True, slots=True)
class Limits:
    """``STORAGE_TRACE_MAX_ARTIFACTS`` and ``STORAGE_TRACE_MAX_BYTES``; None is unlimited."""

    max_artifacts: int | None = None
    max_bytes: int | None = None

    @property
    def any(self) -> bool:
        return self.max_artifacts is not None or self.max_bytes is not None


def warn_at(limit: int | None) -> int:
    """The usage at which a trace has reached ``QUOTA_WARNING_PERCENT`` of ``limit``, in whole units."""
    if limit is None:
        return UNLIMITED
    return -(-limit * QUOTA_WARNING_PERCENT // 100)


@dataclass(frozen=True, slots=True)
class Usage:
    artifacts: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Charge:
    """A registration's charge: taken or refused, the trace's usage (after it, or as it stands when refused),
    and whether this registration is the one that took the trace to the warning threshold."""

    taken: bool
    usage: Usage
    warn: bool = False


def _upsert(dialect: str) -> Any:
    return pg_insert(usage) if dialect == "postgresql" else sqlite_insert(usage)


@cache
def _count_statement(dialect: str) -> PreparedWrite:
    """Add ``artifacts`` and ``size_bytes`` to the trace's row (made when it has none)."""
    statement = _upsert(dialect).values(
        trace_id=bindparam("trace_id"), artifacts=bindparam("artifacts"), size_bytes=bindparam("size_bytes")
    )
    return PreparedWrite(
        statement.on_conflict_do_update(
            index_elements=[usage.c.trace_id],
            set_={
                "artifacts": usage.c.artifacts + statement.excluded.artifacts,
                "size_bytes": usage.c.size_bytes + statement.excluded.size_bytes,
            },
        )
    )


def _together_statement() -> PreparedWrite:
    """PostgreSQL: every trace's count of a group in one statement (one text whatever the number of traces)."""
    names = ("trace_id", "artifacts", "size_bytes")
    arrays = [
        bindparam("trace_id", type_=ARRAY(String())),
        bindparam("artifacts", type_=ARRAY(BigInteger())),
        bindparam("size_bytes", type_=ARRAY(BigInteger())),
    ]
    rows = func.unnest(*arrays).table_valued(*names).render_derived()
    statement = pg_insert(usage).from_select(list(names), select(*rows.c))
    return PreparedWrite(
        statement.on_conflict_do_update(
            index_elements=[usage.c.trace_id],
            set_={
                "artifacts": usage.c.artifacts + statement.excluded.artifacts,
                "size_bytes": usage.c.size_bytes + statement.excluded.size_bytes,
            },
        )
    )


class _DeferredCount:
    """Counts deferred to the end of a PostgreSQL group (``deferred.GroupRows``), summed per trace there."""

    def __init__(self) -> None:
        self._together = _together_statement()

    async def add(self, conn: AsyncConnection, trace_id: str, artifacts: int, size_bytes: int) -> None:
        row = {"trace_id": trace_id, "artifacts": artifacts, "size_bytes": size_bytes}
        group: GroupRows | None = conn.info.get(GROUP_ROWS)
        if group is not None:
            group.add(self, [row])
        else:
            await _count_statement(conn.dialect.name).execute(conn, row)

    async def insert_together(self, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> int:
        """One row per trace, in trace order (two workers' groups then lock shared traces in the same order)."""
        totals: dict[str, list[int]] = {}
        for row in rows:
            total = totals.setdefault(row["trace_id"], [0, 0])
            total[0] += row["artifacts"]
            total[1] += row["size_bytes"]
        traces = sorted(totals)
        await self._together.execute(
            conn,
            {
                "trace_id": traces,
                "artifacts": [totals[t][0] for t in traces],
                "size_bytes": [totals[t][1] for t in traces],
            },
        )
        return len(rows)


_COUNT = _DeferredCount()


_ONE = literal_column("1", BigInteger)


def _big(name: str) -> ColumnElement[int]:
    return bindparam(name, type_=BigInteger())


@cache
def _charge_statement(dialect: str) -> PreparedWrite:
    """The check and the bump in one statement; RETURNING nothing when the trace would exceed a limit.

    A first registration of a trace inserts its row only if its file alone fits (one artifact always fits:
    a limit is at least 1). ``warned_by`` is set once, to the artifact that reaches the threshold first, so
    the registration that finds its own id there is the one that publishes the warning.
    """
    size = _big("size_bytes")
    artifact_id = bindparam("artifact_id", type_=String())
    first = case(
        ((_big("warn_artifacts") <= _ONE) | (size >= _big("warn_bytes")), artifact_id),
        else_=None,
    )
    fits = select(bindparam("trace_id", type_=String()), _ONE, size, first).where(size <= _big("max_bytes"))
    statement = _upsert(dialect).from_select(["trace_id", "artifacts", "size_bytes", "warned_by"], fits)
    artifacts_after = usage.c.artifacts + _ONE
    bytes_after = usage.c.size_bytes + statement.excluded.size_bytes
    reached = case(
        ((artifacts_after >= _big("warn_artifacts")) | (bytes_after >= _big("warn_bytes")), artifact_id),
        else_=None,
    )
    return PreparedWrite(
        statement.on_conflict_do_update(
            index_elements=[usage.c.trace_id],
            set_={
                "artifacts": artifacts_after,
                "size_bytes": bytes_after,
                "warned_by": func.coalesce(usage.c.warned_by, reached),
            },
            where=(artifacts_after <= _big("max_artifacts")) & (bytes_after <= _big("max_bytes")),
        ).returning(usage.c.artifacts, usage.c.size_bytes, usage.c.warned_by)
    )


_USAGE = PreparedRead.by_keys((usage.c.artifacts, usage.c.size_bytes), {"trace_id": usage.c.trace_id})


async def count(conn: AsyncConnection, trace_id: str, size_bytes: int) -> None:
    """A registration into ``trace_id``, no limit set: counted, never refused."""
    await _COUNT.add(conn, trace_id, 1, size_bytes)


async def charge(conn: AsyncConnection, trace_id: str, size_bytes: int, artifact_id: str, limits: Limits) -> Charge:
    """A registration into ``trace_id`` under ``limits``: counted if the trace stays within them."""
    rows = await _charge_statement(conn.dialect.name).fetch(
        conn,
        {
            "trace_id": trace_id,
            "size_bytes": size_bytes,
            "artifact_id": artifact_id,
            "max_artifacts": limits.max_artifacts or UNLIMITED,
            "max_bytes": limits.max_bytes or UNLIMITED,
            "warn_artifacts": warn_at(limits.max_artifacts),
            "warn_bytes": warn_at(limits.max_bytes),
        },
    )
    if not rows:
        return Charge(taken=False, usage=await of_trace(conn, trace_id))
    artifacts, total, warned_by = rows[0]
    return Charge(taken=True, usage=Usage(int(artifacts), int(total)), warn=warned_by == artifact_id)


async def of_trace(conn: AsyncConnection, trace_id: str) -> Usage:
    """The trace's usage as this transaction sees it (zero for a trace never counted)."""
    row = await _USAGE.first(conn, {"trace_id": trace_id})
    return Usage(0, 0) if row is None else Usage(int(row.artifacts), int(row.size_bytes))


async def release(conn: AsyncConnection, artifacts: Iterable[tuple[str, int]]) -> None:
    """Live artifacts ``(trace_id, size_bytes)`` that stop being live (a tombstone, an expiry): off their traces."""
    totals: dict[str, list[int]] = {}
    for trace_id, size_bytes in artifacts:
        total = totals.setdefault(trace_id, [0, 0])
        total[0] -= 1
        total[1] -= size_bytes
    counting = _count_statement(conn.dialect.name)
    for trace_id in sorted(totals):  # trace order, as a group's counts: no two transactions wait on each other
        artifacts_off, bytes_off = totals[trace_id]
        await counting.execute(conn, {"trace_id": trace_id, "artifacts": artifacts_off, "size_bytes": bytes_off})


async def restore(conn: AsyncConnection, trace_id: str, size_bytes: int) -> None:
    """A tombstoned artifact is live again (an admin's restore): counted back, whatever the limits."""
    await _count_statement(conn.dialect.name).execute(
        conn, {"trace_id": trace_id, "artifacts": 1, "size_bytes": size_bytes}
    )
