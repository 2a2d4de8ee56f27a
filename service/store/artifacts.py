"""Artifact queries on Core tables: lookups, the filtered keyset listing, inserts, tombstones."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import NamedTuple

from sqlalchemy import (
    ColumnElement,
    FromClause,
    and_,
    bindparam,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import ArtifactManifest, ArtifactStats, ArtifactStatus, ListArtifactsParams, utc_now
from service.identity import Requester
from service.store import cursor
from service.store.engine.conflicts import prepared_insert_or_skip
from service.store.engine.deferred import DeferredInsert
from service.store.engine.prepared import PreparedQuery, PreparedRead
from service.store.models import Artifact, ArtifactLabel
from service.store.read_rule import read_rule
from service.store.search import among, like_pattern, matches, search_text, sqlite_candidates
from service.store.types import AnyRow, AnySelect

artifacts = Artifact.__table__
labels = ArtifactLabel.__table__

ROW_COLUMNS = (
    artifacts.c.id,
    artifacts.c.version,
    artifacts.c.trace_id,
    artifacts.c.owner,
    artifacts.c.visibility,
    artifacts.c.checksum,
    artifacts.c.uri,
    artifacts.c.status,
    artifacts.c.created_at,
    artifacts.c.expires_at,
    artifacts.c.manifest,
    artifacts.c.deleted_at,
    artifacts.c.failure_reason,
    artifacts.c.size_bytes,
)
"""The columns reads need; the manifest is its stored JSON text, in the shape replies carry (``manifest_json``).
``expires_at`` is there because an artifact past it is gone for every read, before cleanup removes the row;
``deleted_at`` because a tombstone is too (``delete_artifact``), until it is restored or purged; ``failure_reason``
for the ``details.reason`` a failed artifact's reads report; ``size_bytes`` for a trace's usage when an artifact
is deleted or restored."""


# Hot-path statements are built once: SQLAlchemy computes a statement's cache key per object, so a
# prebuilt statement executed with parameters skips construction and key generation on every command.
_BY_ID = PreparedRead.by_keys(ROW_COLUMNS, {"artifact_id": artifacts.c.id})
_SUCCESSOR = PreparedRead.by_keys(ROW_COLUMNS, {"artifact_id": artifacts.c.supersedes})
_INSERT_LABELS = DeferredInsert(labels, list(labels.c))
"""On PostgreSQL sent with the group's other labels at its end: nothing in the group reads them back."""


async def get(conn: AsyncConnection, artifact_id: str) -> AnyRow | None:
    return await _BY_ID.first(conn, {"artifact_id": artifact_id})


async def successor_of(conn: AsyncConnection, artifact_id: str) -> AnyRow | None:
    return await _SUCCESSOR.first(conn, {"artifact_id": artifact_id})


def manifest_of(row: AnyRow) -> ArtifactManifest:
    """The stored manifest, with the one field that may change after creation taken from its column."""
    manifest = ArtifactManifest.model_validate_json(row.manifest)
    if manifest.status != row.status:
        manifest.status = ArtifactStatus(row.status)
    return manifest


_STATUS = ',"status":"'


def manifest_json(row: AnyRow) -> str:
    """The stored manifest as the JSON text ``ArtifactManifest.model_dump_json()`` would write of ``manifest_of``.

    The text was written by that method (``insert_artifact``, revision 0008); only ``status`` can have
    changed since, and then it is spliced in from its column. The first ``,"status":"`` is the manifest's
    own: every field before it is a string, a number or null (no nested object), and a quote inside a JSON
    string is escaped, so none of them can contain it. Status values are plain lowercase words.
    """
    text: str = row.manifest
    status: str = row.status
    start = text.index(_STATUS) + len(_STATUS)
    end = text.index('"', start)
    if text[start:end] == status:
        return text
    return text[:start] + status + text[end:]


async def insert_artifact(
    conn: AsyncConnection, manifest: ArtifactManifest, *, expires_at: datetime | None, now: datetime
) -> bool:
    """Insert the row and its labels; False (nothing written) when its id or its ``supersedes`` is taken.

    The conflict is decided by the unique constraints, so two workers registering the same artifact (or
    two successors of one) at once get one winner and no error; the loser reads what won.
    """
    inserted = await prepared_insert_or_skip(conn.dialect.name, artifacts).execute(
        conn,
        {
            "id": manifest.id,
            "version": manifest.version,
            "supersedes": manifest.supersedes,
            "trace_id": manifest.trace_id,
            "step_id": manifest.step_id,
            "created_by": manifest.created_by,
            "created_at": manifest.created_at,
            "artifact_type": manifest.artifact_type,
            "uri": manifest.uri,
            "size_bytes": manifest.size_bytes,
            "checksum": manifest.checksum,
            "status": manifest.status.value,
            "owner": manifest.owner,
            "visibility": manifest.visibility.value,
            "expires_at": expires_at,
            "registered_at": now,
            "manifest": manifest.model_dump_json(),  # the reply's text, written once and spliced by listings
            "search_text": search_text(manifest.labels.values()),  # in the row: indexed with it, all or nothing
        },
    )
    if inserted != 1:
        return False
    if manifest.labels:
        await _INSERT_LABELS.insert(
            conn,
            [
                {"artifact_id": manifest.id, "key": k, "value": v, "created_at": manifest.created_at}
                for k, v in manifest.labels.items()
            ],
        )
    return True


async def tombstone(conn: AsyncConnection, artifact_id: str, *, by: str | None, now: datetime) -> AnyRow | None:
    """Mark a live artifact deleted (its row, labels and id stay, for ``latest``, a restore and the taken id).

    Returns the row as it was, or None when nothing changed (an unknown id, or a tombstone already). The one
    place an artifact stops being live by an admin's hand: what counts live artifacts follows it here.
    """
    row = await get(conn, artifact_id)
    if row is None or row.deleted_at is not None:
        return None
    await conn.execute(
        update(artifacts)
        .where(artifacts.c.id == artifact_id, artifacts.c.deleted_at.is_(None))
        .values(deleted_at=now, deleted_by=by)
    )
    return row


async def revive(conn: AsyncConnection, artifact_id: str) -> AnyRow | None:
    """Clear a tombstone's mark; returns the row as it was (still marked), or None when it is no tombstone.

    The one place a deleted artifact becomes live again: what counts live artifacts follows it here.
    """
    row = await get(conn, artifact_id)
    if row is None or row.deleted_at is None:
        return None
    await conn.execute(
        update(artifacts)
        .where(artifacts.c.id == artifact_id, artifacts.c.deleted_at.is_not(None))
        .values(deleted_at=None, deleted_by=None)
    )
    return row


async def set_status(conn: AsyncConnection, ids: Sequence[str], status: str) -> int:
    if not ids:
        return 0
    result = await conn.execute(update(artifacts).where(artifacts.c.id.in_(ids)).values(status=status))
    return int(result.rowcount or 0)


_SCALAR_FILTERS = ("trace_id", "artifact_type", "created_by", "step_id", "status")


async def list_page(
    conn: AsyncConnection, params: ListArtifactsParams, requester: Requester, *, now: datetime | None = None
) -> tuple[list[AnyRow], str | None]:
    """One page, newest first, keyset-paged on (created_at, id) so deep pages cost what the first does.

    Artifacts past their retention at ``now`` (default: the current time) are left out, as if cleanup had
    removed them already; the cursor is unaffected (it names a position, not a row that must still exist).
    """
    scalars = {
        "trace_id": params.trace_id,
        "artifact_type": params.artifact_type,
        "created_by": params.created_by,
        "step_id": params.step_id,
        "status": params.status.value if params.status else None,
    }
    present = tuple(name for name in _SCALAR_FILTERS if scalars[name] is not None)
    values: dict[str, object] = {f"filter_{name}": scalars[name] for name in present}
    for index, (key, value) in enumerate(params.labels.items()):
        values[f"label_key_{index}"] = key
        values[f"label_value_{index}"] = value
    if params.created_after is not None:
        values["created_after"] = params.created_after
    if params.created_before is not None:
        values["created_before"] = params.created_before
    if params.cursor is not None:
        values["cursor_time"], values["cursor_id"] = cursor.decode(params.cursor)
    if requester.id is not None:
        values["requester_id"] = requester.id
    if requester.trace_id is not None:
        values["requester_trace"] = requester.trace_id
    values["page_limit"] = params.limit + 1
    values["now"] = now if now is not None else utc_now()
    search = await _search(conn, params.search, values)
    shape = _ListShape(
        present,
        len(params.labels),
        bool(params.labels) and params.status in (None, ArtifactStatus.COMPLETED),
        params.created_after is not None,
        params.created_before is not None,
        params.latest_only,
        params.cursor is not None,
        requester.is_admin,
        requester.id is not None,
        requester.trace_id is not None,
        search,
    )
    rows = await _list_query(shape).all(conn, values)
    next_cursor = None
    if len(rows) > params.limit:
        rows = rows[: params.limit]
        next_cursor = cursor.encode(rows[-1].created_at, rows[-1].id)
    return rows, next_cursor


class _ListShape(NamedTuple):
    """What a listing's SQL depends on; the values travel as parameters."""

    filters: tuple[str, ...]
    labels: int
    label_walk: bool
    """The first label's rows drive the walk; not under a rare status (``failed``, ``uploading``), whose own
    index holds fewer rows than a common label's (each label is then probed on the rows it passes)."""
    after: bool
    before: bool
    latest_only: bool
    cursor: bool
    admin: bool
    requester_id: bool
    requester_trace: bool
    search: str = ""
    """"" (none), "like" (checked on the rows walked), "rowids" (SQLite: the few rows its FTS table found)."""


async def _search(conn: AsyncConnection, search: str | None, values: dict[str, object]) -> str:
    """How the listing applies ``search`` (``service.store.search``), its parameters put in ``values``."""
    if search is None:
        return ""
    values["search_pattern"] = like_pattern(search)
    if conn.dialect.name == "sqlite" and (rowids := await sqlite_candidates(conn, artifacts, search)) is not None:
        values["search_rowids"] = rowids
        return "rowids"
    return "like"


def _live(table: FromClause, now: ColumnElement[datetime]) -> ColumnElement[bool]:
    """Not past its retention: checked per row on the index the listing walks, no index of its own needed."""
    return or_(table.c.expires_at.is_(None), table.c.expires_at > now)


def _read_rule(table: FromClause, shape: _ListShape) -> ColumnElement[bool]:
    """The read rule over ``table`` with the requester's identity as parameters, so one statement serves all."""
    return read_rule(
        table,
        owner=bindparam("requester_id") if shape.requester_id else None,
        trace_id=bindparam("requester_trace") if shape.requester_trace else None,
    )


CHAIN_LIMIT = 10_000
"""The most versions a walk of a chain follows (``latest`` in reads and listings): a bound, not a chain length."""


def _successor(
    shape: _ListShape, now: ColumnElement[datetime], of: ColumnElement[str], name: str
) -> tuple[FromClause, list[ColumnElement[bool]]]:
    """The version right after ``of``, when it is not expired and the requester may read it (deleted or not)."""
    newer = artifacts.alias(name)
    return newer, [newer.c.supersedes == of, _live(newer, now)] + ([] if shape.admin else [_read_rule(newer, shape)])


def _newer_version(shape: _ListShape, now: ColumnElement[datetime]) -> ColumnElement[bool]:
    """The row is not the latest as get_artifact's ``latest`` sees it: a live successor the requester may
    read comes after it, directly or past tombstones (the walk goes on through a deleted version, readable
    and not expired, and stops at anything else). Only a tombstone successor costs the recursive part."""
    newer, first = _successor(shape, now, artifacts.c.id, "newer")
    start, anchor = _successor(shape, now, newer.c.id, "past")
    chain = (
        select(start.c.id, start.c.deleted_at, literal(1).label("depth"))
        .where(*anchor)
        .correlate(newer)
        .cte("chain", recursive=True, nesting=True)
    )
    later, step = _successor(shape, now, chain.c.id, "later")
    chain = chain.union_all(
        select(later.c.id, later.c.deleted_at, chain.c.depth + 1).where(
            *step, chain.c.deleted_at.is_not(None), chain.c.depth < CHAIN_LIMIT
        )
    )
    live_after = exists(select(chain.c.id).where(chain.c.deleted_at.is_(None)))
    return exists().where(*first, or_(newer.c.deleted_at.is_(None), live_after))


@lru_cache(maxsize=512)
def _list_query(shape: _ListShape) -> PreparedQuery:
    """The listing for one shape, run by the driver directly where that is safe (PostgreSQL)."""
    return PreparedQuery(_list_statement(shape))


def _list_statement(shape: _ListShape) -> AnySelect:
    """The listing for one shape of request, built once: building it costs more than running it.

    With a label filter (``label_walk``) the walk starts from the first label's rows, which its index holds in
    the listing's order (revision 0015): the keyset, the time range and the order are on that label's copy of
    ``(created_at, id)``, and each row walked is joined to its artifact by id. (Equating the two ``created_at``
    in the join as well would let the artifacts' own order drive it too, but PostgreSQL then multiplies the two
    equalities' selectivities, expects one row, and plans a parallel, JIT-compiled walk: 100 ms instead of 15.)
    """
    now = bindparam("now", type_=artifacts.c.expires_at.type)
    query = select(*ROW_COLUMNS).where(_live(artifacts, now), artifacts.c.deleted_at.is_(None))
    created_at, row_id = artifacts.c.created_at, artifacts.c.id
    if shape.label_walk:
        first = labels.alias("first_label")
        query = query.select_from(artifacts.join(first, first.c.artifact_id == artifacts.c.id)).where(
            first.c.key == bindparam("label_key_0"), first.c.value == bindparam("label_value_0")
        )
        created_at, row_id = first.c.created_at, first.c.artifact_id
    if not shape.admin:
        query = query.where(_read_rule(artifacts, shape))
    for name in shape.filters:
        query = query.where(artifacts.c[name] == bindparam(f"filter_{name}"))
    for index in range(1 if shape.label_walk else 0, shape.labels):
        query = query.where(
            exists().where(
                labels.c.artifact_id == artifacts.c.id,
                labels.c.key == bindparam(f"label_key_{index}"),
                labels.c.value == bindparam(f"label_value_{index}"),
            )
        )
    if shape.search:
        query = query.where(matches(artifacts, bindparam("search_pattern")))
    if shape.search == "rowids":
        query = query.where(among(artifacts))
    if shape.after:
        query = query.where(created_at > bindparam("created_after"))
    if shape.before:
        query = query.where(created_at < bindparam("created_before"))
    if shape.latest_only:
        query = query.where(~_newer_version(shape, now))
    if shape.cursor:
        after_time = bindparam("cursor_time", type_=artifacts.c.created_at.type)
        query = query.where(
            or_(created_at < after_time, and_(created_at == after_time, row_id < bindparam("cursor_id")))
        )
    return query.order_by(created_at.desc(), row_id.desc()).limit(bindparam("page_limit"))


async def stats(conn: AsyncConnection) -> ArtifactStats:
    """Counts of the artifacts that exist for readers: tombstones are left out, as every read leaves them."""
    # Rows unpack as (key, count) pairs; Result.tuples() is deprecated since SQLAlchemy 2.1.
    live = artifacts.c.deleted_at.is_(None)
    by_status = {
        str(status): int(n)
        for status, n in await conn.execute(
            select(artifacts.c.status, func.count()).where(live).group_by(artifacts.c.status)
        )
    }
    by_type = {
        str(kind): int(n)
        for kind, n in await conn.execute(
            select(artifacts.c.artifact_type, func.count()).where(live).group_by(artifacts.c.artifact_type)
        )
    }
    return ArtifactStats(total=sum(by_status.values()), by_status=by_status, by_type=by_type)
