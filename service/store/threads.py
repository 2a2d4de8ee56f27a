"""Thread queries on Core tables: the locked thread row, message lookups and writes, labels, pages, purges.

Every read of "the last N messages" is a range scan of (thread_id, deleted_at, seq) backwards, and every
metadata filter a probe of (key, value, thread_id): neither grows with the size of the tables. A listing
carries the read rule of docs/contract.md §3 in its WHERE clause, so a page never holds what its reader may not see.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    LargeBinary,
    Text,
    and_,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import InvalidArgument
from service.identity import Requester
from service.store import cursor
from service.store.engine.conflicts import prepared_insert_or_skip
from service.store.engine.prepared import PreparedRead, PreparedWrite
from service.store.engine.sqlite_driver import point_lookup
from service.store.models import Thread, ThreadLabel, ThreadMessageRow
from service.store.read_rule import readable_by
from service.store.search import among, like_pattern, matches, metadata_text, sqlite_candidates
from service.store.types import AnyRow, AnySelect

threads = Thread.__table__
messages = ThreadMessageRow.__table__
labels = ThreadLabel.__table__

LABEL_VALUE_MAX = 200
"""Longer label values are stored as their sha256, so any value can be filtered on exactly."""
_IN_CHUNK = 500
T = TypeVar("T")
MESSAGES_PER_THREAD_BATCH = 4
"""A purge job removes up to this many messages per thread of its batch: short threads go in one job."""

THREAD_COLUMNS = (
    threads.c.id,
    threads.c["metadata"],
    threads.c.version,
    threads.c.message_count,
    threads.c.next_seq,
    threads.c.created_at,
    threads.c.updated_at,
    threads.c.deleted_at,
    threads.c.expires_at,
    threads.c.owner,
    threads.c.visibility,
    threads.c.trace_id,
    threads.c.max_messages,
    threads.c.ttl_seconds,
)
MESSAGE_COLUMNS = (
    messages.c.id,
    messages.c.thread_id,
    messages.c.seq,
    messages.c.role,
    messages.c.content,
    messages.c["metadata"],
    messages.c.created_at,
    messages.c.deleted_at,
)


def label_text(value: object) -> str | None:
    """The canonical text a metadata value is indexed and filtered by; None for values that are not scalars.

    Booleans are ``true``/``false``, integral numbers have no fraction (``5`` and ``5.0`` match), strings are
    themselves: a tax number matches whether it was saved as a number or as a string.
    """
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            return None
        text = str(int(value)) if value.is_integer() and abs(value) < 2**63 else repr(value)
    elif isinstance(value, str):
        text = value
    else:
        return None
    if len(text) > LABEL_VALUE_MAX:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


def labels_of(metadata: Mapping[str, object]) -> dict[str, str]:
    return {key: text for key, value in metadata.items() if (text := label_text(value)) is not None}


def is_live(row: AnyRow, now: datetime) -> bool:
    """Neither deleted nor past its TTL: what agents can see without ``include_deleted``."""
    return row.deleted_at is None and (row.expires_at is None or row.expires_at > now)


def live_clause(now: datetime) -> ColumnElement[bool]:
    return and_(threads.c.deleted_at.is_(None), or_(threads.c.expires_at.is_(None), threads.c.expires_at > now))


# -- the thread row ----------------------------------------------------------------------------


# save_thread runs these on every call: built once, a statement skips construction and cache-key work.
_GET = point_lookup(select(*THREAD_COLUMNS).where(threads.c.id == bindparam("thread_key")))
_GET_FOR_UPDATE = PreparedRead(_GET.with_for_update())
_GET_PLAIN = PreparedRead(_GET)
_UPDATE = PreparedWrite(update(threads).where(threads.c.id == bindparam("thread_key")))
_INSERT_MESSAGES = PreparedWrite(insert(messages))


async def get(conn: AsyncConnection, thread_id: str, *, for_update: bool = False) -> AnyRow | None:
    return await (_GET_FOR_UPDATE if for_update else _GET_PLAIN).first(conn, {"thread_key": thread_id})


async def lock(
    conn: AsyncConnection, thread_id: str, now: datetime, *, owner: str | None, visibility: str, trace_id: str | None
) -> tuple[AnyRow, bool]:
    """The thread row, created empty when missing (owned by ``owner``), locked until commit; True when just created.

    An existing thread costs one SELECT ... FOR UPDATE. A missing one is inserted with ON CONFLICT DO
    NOTHING and selected again: two workers on one PostgreSQL saving the same new thread serialise on the
    row instead of one failing on the primary key.
    """
    if (row := await get(conn, thread_id, for_update=True)) is not None:
        return row, False
    values = {
        "id": thread_id,
        "metadata": {},
        "version": 0,
        "message_count": 0,
        "next_seq": 0,
        "created_at": now,
        "updated_at": now,
        "owner": owner,
        "visibility": visibility,
        "trace_id": trace_id,
        "search_text": "",
    }
    created = await prepared_insert_or_skip(conn.dialect.name, threads).execute(conn, values) == 1
    row = await get(conn, thread_id, for_update=True)
    assert row is not None
    return row, created


async def update_thread(conn: AsyncConnection, thread_id: str, values: Mapping[str, object]) -> None:
    """Set ``values`` on the thread; new ``metadata`` brings its ``search_text`` along, in the same statement."""
    if isinstance(metadata := values.get("metadata"), Mapping) and "search_text" not in values:
        values = {**values, "search_text": metadata_text(metadata)}
    await _UPDATE.execute(conn, {**values, "thread_key": thread_id})


async def set_labels(
    conn: AsyncConnection, thread_id: str, before: Mapping[str, str], after: Mapping[str, str]
) -> None:
    """Rewrite only the labels that changed between two metadata versions."""
    stale = [key for key, value in before.items() if after.get(key) != value]
    fresh = [
        {"thread_id": thread_id, "key": key, "value": value} for key, value in after.items() if before.get(key) != value
    ]
    if stale:
        await conn.execute(delete(labels).where(labels.c.thread_id == thread_id, labels.c.key.in_(stale)))
    if fresh:
        await conn.execute(insert(labels), fresh)


# -- messages ----------------------------------------------------------------------------------


async def find_messages(conn: AsyncConnection, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, AnyRow]:
    """Messages by id, whatever their thread (the caller refuses ids that belong to another thread)."""
    found: dict[uuid.UUID, AnyRow] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        for row in await conn.execute(select(*MESSAGE_COLUMNS).where(messages.c.id.in_(chunk))):
            found[row.id] = row
    return found


async def insert_messages(conn: AsyncConnection, rows: Sequence[Mapping[str, object]]) -> None:
    await _INSERT_MESSAGES.execute_many(conn, rows)


async def update_message(conn: AsyncConnection, message_id: uuid.UUID, values: Mapping[str, object]) -> None:
    await conn.execute(update(messages).where(messages.c.id == message_id).values(dict(values)))


async def soft_delete_active(conn: AsyncConnection, thread_id: str, now: datetime) -> int:
    result = await conn.execute(
        update(messages)
        .where(messages.c.thread_id == thread_id, messages.c.deleted_at.is_(None))
        .values(deleted_at=now)
    )
    return int(result.rowcount or 0)


MESSAGE_OVERHEAD = 256
"""Bytes a stored message takes on the wire besides its content and metadata: id, role, times, field names."""


def json_bytes(column: ColumnElement[Any], dialect: str) -> ColumnElement[int]:
    """The stored size in bytes of a JSON column (jsonb as text is a little longer than compact JSON)."""
    if dialect == "sqlite":
        return func.length(cast(column, LargeBinary))
    return func.octet_length(cast(column, Text))


async def message_page(
    conn: AsyncConnection,
    thread_id: str,
    limit: int,
    *,
    include_deleted: bool,
    before_seq: int | None,
    budget: int,
) -> tuple[list[AnyRow], bool]:
    """The most recent messages (older than ``before_seq``), up to ``limit`` and ``budget`` bytes, newest first;
    and whether older ones remain.

    The database sums the sizes newest first and returns only the messages that begin within the budget (the
    one that crosses it tells that more remain), so a thread of huge messages never loads into the worker:
    ``limit=10000`` reads at most the budget and one message more.
    """
    recent = select(*MESSAGE_COLUMNS).where(messages.c.thread_id == thread_id)
    if not include_deleted:
        recent = recent.where(messages.c.deleted_at.is_(None))
    if before_seq is not None:
        recent = recent.where(messages.c.seq < before_seq)
    newest = recent.order_by(messages.c.seq.desc()).limit(limit + 1).subquery()
    dialect = conn.dialect.name
    size = json_bytes(newest.c.content, dialect) + json_bytes(newest.c["metadata"], dialect) + MESSAGE_OVERHEAD
    sized = select(newest, size.label("size_bytes"), func.sum(size).over(order_by=newest.c.seq.desc()).label("upto"))
    summed = sized.subquery()
    query = select(summed).where(summed.c.upto - summed.c.size_bytes <= budget).order_by(summed.c.seq.desc())
    rows = list((await conn.execute(query)).all())
    kept = 0
    for row in rows[:limit]:
        if row.upto > budget and kept:
            break
        kept += 1
    return rows[:kept], len(rows) > kept


def message_cursor(seq: int) -> str:
    """The opaque cursor of the page older than the message at position ``seq``."""
    return base64.urlsafe_b64encode(json.dumps({"before": seq}).encode()).decode().rstrip("=")


def decode_message_cursor(token: str) -> int:
    try:
        raw = json.loads(base64.urlsafe_b64decode((token + "=" * (-len(token) % 4)).encode()))
        seq = raw["before"]
        if type(seq) is not int or not 0 <= seq < 2**63:
            raise ValueError("bad cursor shape")
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidArgument("cursor is not one this worker issued", {"field": "cursor"}) from exc
    return seq


# -- listing -----------------------------------------------------------------------------------


LABEL_WALK_ROWS = 250
"""SQLite: a metadata filter on at least this many threads per item of the page is checked by a probe on each
row the newest-first walk passes, instead of reading all its threads and sorting them (region=77, 11,111 of
1,000,000 threads: 11 ms instead of 80 ms a page of 20; PostgreSQL's planner makes that choice itself)."""


async def _common(conn: AsyncConnection, matching: AnySelect, limit: int) -> bool:
    most = LABEL_WALK_ROWS * limit
    found = select(func.count()).select_from(matching.limit(most).subquery())
    return int((await conn.execute(found)).scalar_one()) >= most


async def list_page(
    conn: AsyncConnection,
    *,
    metadata: Mapping[str, object],
    created_after: datetime | None,
    created_before: datetime | None,
    limit: int,
    after: str | None,
    now: datetime,
    requester: Requester,
    search: str | None = None,
) -> tuple[list[AnyRow], str | None]:
    """Live threads ``requester`` may read, newest first, keyset-paged on (created_at, id); each metadata filter
    is an index probe, a ``search`` a trigram index match (``service.store.search``)."""
    query = select(*THREAD_COLUMNS).where(live_clause(now), readable_by(threads, requester))
    few = False  # SQLite: the search's few rows are read by rowid, and each is checked against the filters
    if search is not None:
        query = query.where(matches(threads, like_pattern(search)))
        if conn.dialect.name == "sqlite" and (rowids := await sqlite_candidates(conn, threads, search)) is not None:
            query, few = query.where(among(threads, rowids)), True
    for key, value in metadata.items():
        matching = select(labels.c.thread_id).where(labels.c.key == key, labels.c.value == label_text(value))
        if few or (conn.dialect.name == "sqlite" and await _common(conn, matching, limit)):
            query = query.where(exists(matching.where(labels.c.thread_id == threads.c.id)))  # a probe per row passed
        else:
            query = query.where(threads.c.id.in_(matching))  # the label's threads, read and sorted
    if created_after is not None:
        query = query.where(threads.c.created_at > created_after)
    if created_before is not None:
        query = query.where(threads.c.created_at < created_before)
    return await cursor.newest_first_page(conn, query, threads.c.created_at, threads.c.id, token=after, limit=limit)


# -- purges (cleanup) --------------------------------------------------------------------------


def expired_clause(now: datetime) -> ColumnElement[bool]:
    return and_(threads.c.expires_at.is_not(None), threads.c.expires_at <= now)


def deleted_before_clause(cutoff: datetime) -> ColumnElement[bool]:
    return and_(threads.c.deleted_at.is_not(None), threads.c.deleted_at < cutoff)


async def count_threads(conn: AsyncConnection, condition: ColumnElement[bool]) -> int:
    return int((await conn.execute(select(func.count()).select_from(threads).where(condition))).scalar_one())


async def purge_threads_batch(conn: AsyncConnection, condition: ColumnElement[bool], batch: int) -> tuple[int, int]:
    """Hard-delete up to ``batch`` threads matching ``condition``: their messages (bounded), then the threads.

    Returns (threads removed, messages removed). Messages go first and in bounded numbers, so a thread of a
    million messages is removed over many short transactions rather than by one long cascade.
    """
    ids = list((await conn.execute(select(threads.c.id).where(condition).limit(batch))).scalars())
    if not ids:
        return 0, 0
    message_limit = batch * MESSAGES_PER_THREAD_BATCH
    doomed = select(messages.c.id).where(messages.c.thread_id.in_(ids)).limit(message_limit).scalar_subquery()
    removed_messages = int((await conn.execute(delete(messages).where(messages.c.id.in_(doomed)))).rowcount or 0)
    if removed_messages >= message_limit:
        return 0, removed_messages
    await conn.execute(delete(labels).where(labels.c.thread_id.in_(ids)))
    removed = await conn.execute(delete(threads).where(threads.c.id.in_(ids), condition))
    return int(removed.rowcount or 0), removed_messages


async def count_messages_deleted_before(conn: AsyncConnection, cutoff: datetime) -> int:
    query = select(func.count()).select_from(messages).where(messages.c.deleted_at < cutoff)
    return int((await conn.execute(query)).scalar_one())


async def purge_messages_batch(conn: AsyncConnection, cutoff: datetime, batch: int) -> int:
    """Hard-delete up to ``batch`` messages soft-deleted (trimmed, cleared) before ``cutoff``."""
    doomed = select(messages.c.id).where(messages.c.deleted_at < cutoff).limit(batch).scalar_subquery()
    return int((await conn.execute(delete(messages).where(messages.c.id.in_(doomed)))).rowcount or 0)


def chunks(items: Iterable[T], size: int) -> Iterable[list[T]]:
    bucket: list[T] = []
    for item in items:
        bucket.append(item)
        if len(bucket) >= size:
            yield bucket
            bucket = []
    if bucket:
        yield bucket
