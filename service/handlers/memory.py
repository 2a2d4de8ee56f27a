"""Agent memory actions: put, get, search, list namespaces, delete.

An item belongs to the requester that first put it; only its owner (or an admin) may replace or delete
it, and reads follow the artifact rule (``private`` by default, ``public``, or ``trace``). An expired item
is treated as absent by every action from the moment it expires: a put takes its place afresh.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import (
    Aborted,
    ChangeKind,
    DeleteMemoryOutput,
    DeleteMemoryParams,
    GetMemoryParams,
    InvalidArgument,
    ListNamespacesOutput,
    ListNamespacesParams,
    MemoryItem,
    NotFound,
    PermissionDenied,
    PutMemoryOutput,
    PutMemoryParams,
    SearchMemoryOutput,
    SearchMemoryParams,
    Unauthenticated,
)
from service.core import paging
from service.core.context import HandlerContext
from service.core.recording import Committed
from service.identity import Requester, can_read
from service.store import changes, cursor, memory_keys
from service.store import memory as store
from service.store.types import AnyRow

MAX_TTL = timedelta(days=365 * 1000)


def _path(namespace: list[str], field: str) -> str:
    """The stored path of a namespace, refusing what the databases cannot hold or index."""
    for index, part in enumerate(namespace):
        if "\x00" in part:
            raise InvalidArgument(f"{field}[{index}] contains a NUL character", {"field": f"{field}.{index}"})
    path = memory_keys.encode(namespace)
    size = len(path.encode())
    if size > memory_keys.MAX_PATH_BYTES:
        raise InvalidArgument(
            f"{field} is {size} bytes once joined, at most {memory_keys.MAX_PATH_BYTES} allowed",
            {"field": field, "size_bytes": size, "limit_bytes": memory_keys.MAX_PATH_BYTES},
        )
    return path


def _check_no_nul(value: object, field: str) -> None:
    """PostgreSQL text and JSONB cannot store U+0000; refuse it up front instead of failing the write."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidArgument(f"{field} contains a NUL character", {"field": field})
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_no_nul(k, field)
            _check_no_nul(v, field)
    elif isinstance(value, list):
        for v in value:
            _check_no_nul(v, field)


def _where(namespace: list[str], key: str) -> dict[str, object]:
    return {"namespace": namespace, "key": key}


def _may_write(row: AnyRow, requester: Requester) -> bool:
    return requester.is_admin or (requester.id is not None and row.owner == requester.id)


def _refuse_write(row: AnyRow, requester: Requester, namespace: list[str], key: str) -> PermissionDenied:
    return PermissionDenied(
        "memory item belongs to another requester",
        {**_where(namespace, key), "visibility": row.visibility, "requester": requester.id},
    )


def _refuse_read(row: AnyRow, requester: Requester, namespace: list[str], key: str) -> PermissionDenied:
    return PermissionDenied(
        f"memory item is {row.visibility} and not readable by this requester",
        {**_where(namespace, key), "visibility": row.visibility, "requester": requester.id},
    )


def _expiry(now: datetime, ttl_seconds: int | None) -> datetime | None:
    if ttl_seconds is None:
        return None
    ttl = timedelta(seconds=ttl_seconds)
    if ttl > MAX_TTL:
        raise InvalidArgument("ttl_seconds is longer than 1000 years; leave it out", {"field": "ttl_seconds"})
    return now + ttl


async def put_memory(params: PutMemoryParams, ctx: HandlerContext) -> Committed[PutMemoryOutput]:
    requester = ctx.requester
    if requester.id is None and not requester.is_admin:
        raise Unauthenticated("memory items belong to their requester; an anonymous command cannot own one")
    path = _path(params.namespace, "namespace")
    _check_no_nul(params.key, "key")
    _check_no_nul(params.value, "value")
    _check_no_nul(params.labels, "labels")
    item_id = memory_keys.item_id(path, params.key)
    now = ctx.now
    expires_at = _expiry(now, params.ttl_seconds)
    values = {
        "value": params.value,
        "labels": params.labels,
        "visibility": params.visibility.value,
        "trace_id": requester.trace_id,
        "ttl_seconds": params.ttl_seconds,
        "updated_at": now,
        "expires_at": expires_at,
    }

    def conflict(actual: int) -> Aborted:
        return Aborted(
            f"expected_version {params.expected_version} but the item is at version {actual}",
            {
                "reason": "version_mismatch",
                **_where(params.namespace, params.key),
                "expected_version": params.expected_version,
                "actual": actual,
            },
        )

    async def job(conn: AsyncConnection) -> PutMemoryOutput:
        row = await store.get(conn, item_id, for_update=True)
        live = row is not None and store.is_alive(row, now)
        current = row.version if row is not None and live else 0
        if params.expected_version is not None and params.expected_version != current:
            raise conflict(current)
        owner = row.owner if row is not None and live else requester.id
        if row is None:
            version = 1
            fresh = {"id": item_id, "ns_path": path, "ns_top": params.namespace[0], "key": params.key}
            owned = {"owner": owner, "created_at": now, "version": version}
            if not await store.insert_item(conn, {**fresh, **owned, **values}):
                raise Aborted("the item was written concurrently, retry", _where(params.namespace, params.key))
        else:
            if live and not _may_write(row, requester):
                raise _refuse_write(row, requester, params.namespace, params.key)
            version = current + 1
            owned = {"version": version}
            if not live:  # an expired item is gone: this put starts a new one, owned by its writer
                owned.update(owner=owner, created_at=now)
            if not await store.update_item(conn, item_id, row.version, {**owned, **values}):
                raise Aborted("the item was written concurrently, retry", _where(params.namespace, params.key))
        await store.replace_labels(conn, item_id, path, params.labels, had_labels=bool(row is not None and row.labels))
        where = (params.namespace, params.key)
        visibility = params.visibility.value
        put = _change(ChangeKind.MEMORY_PUT, ctx, where, version, visibility, owner, requester.trace_id)
        await changes.record(conn, put)
        return PutMemoryOutput(namespace=params.namespace, key=params.key, version=version, expires_at=expires_at)

    return await ctx.commit(job)


async def get_memory(params: GetMemoryParams, ctx: HandlerContext) -> MemoryItem:
    item_id = memory_keys.item_id(_path(params.namespace, "namespace"), params.key)
    now = ctx.now
    async with ctx.read() as conn:
        row = await store.get(conn, item_id)
    _check_found(row, now, params)
    assert row is not None
    if not can_read(row.visibility, row.owner, row.trace_id, ctx.requester):
        raise _refuse_read(row, ctx.requester, params.namespace, params.key)
    if not params.refresh_ttl or row.ttl_seconds is None:
        return store.to_item(row)

    async def refresh(conn: AsyncConnection) -> MemoryItem:
        current = await store.get(conn, item_id, for_update=True)
        _check_found(current, now, params)
        assert current is not None
        expires_at = _expiry(now, current.ttl_seconds)
        assert expires_at is not None
        await store.set_expiry(conn, item_id, expires_at)
        return store.to_item(current).model_copy(update={"expires_at": expires_at})

    return (await ctx.commit(refresh)).output


def _check_found(row: AnyRow | None, now: datetime, params: GetMemoryParams) -> None:
    if row is None or not store.is_alive(row, now):
        raise NotFound("memory item not found", _where(params.namespace, params.key))


async def search_memory(params: SearchMemoryParams, ctx: HandlerContext) -> SearchMemoryOutput:
    prefix = _path(params.namespace_prefix, "namespace_prefix")
    async with ctx.read() as conn:
        rows, next_cursor = await store.search_page(
            conn,
            prefix=prefix,
            label_filter=params.labels,
            requester=ctx.requester,
            now=ctx.now,
            limit=params.limit,
            after=params.cursor,
        )
    rows, next_cursor = paging.cut_page(  # within STORAGE_MAX_REPLY_BYTES
        rows, next_cursor, budget=paging.page_budget(ctx.settings), size_of=_item_size, cursor_of=_item_cursor
    )
    found = [store.to_item(row) for row in rows]
    return SearchMemoryOutput(count=len(found), items=found, next_cursor=next_cursor)


def _item_size(row: AnyRow) -> int:
    parts = paging.json_size(row.value) + paging.json_size(row.labels) + paging.json_size(row.ns_path)
    return parts + paging.json_size(row.key) + paging.ITEM_OVERHEAD


def _item_cursor(row: AnyRow) -> str:
    return cursor.encode(row.updated_at, row.id)


async def list_namespaces(params: ListNamespacesParams, ctx: HandlerContext) -> ListNamespacesOutput:
    prefix = _path(params.prefix, "prefix")
    after = None if params.cursor is None else cursor.decode_key(params.cursor, max_len=memory_keys.MAX_PATH_BYTES)
    async with ctx.read() as conn:
        paths = await store.namespaces(
            conn,
            prefix=prefix,
            max_depth=params.max_depth,
            requester=ctx.requester,
            now=ctx.now,
            limit=params.limit + 1,  # one more than asked: whether there is a next page
            after=after,
        )
    more = len(paths) > params.limit
    paths = paths[: params.limit]
    paths, next_cursor = paging.cut_page(  # within STORAGE_MAX_REPLY_BYTES
        paths,
        cursor.encode_key(paths[-1]) if more else None,
        budget=paging.page_budget(ctx.settings),
        size_of=_namespace_size,
        cursor_of=cursor.encode_key,
    )
    return ListNamespacesOutput(
        count=len(paths), namespaces=[memory_keys.decode(p) for p in paths], next_cursor=next_cursor
    )


def _namespace_size(path: str) -> int:
    return paging.json_size(memory_keys.decode(path)) + 8  # the list's brackets and separators


async def delete_memory(params: DeleteMemoryParams, ctx: HandlerContext) -> Committed[DeleteMemoryOutput]:
    item_id = memory_keys.item_id(_path(params.namespace, "namespace"), params.key)
    now = ctx.now

    async def job(conn: AsyncConnection) -> DeleteMemoryOutput:
        row = await store.get(conn, item_id, for_update=True)
        if row is None:
            return DeleteMemoryOutput(namespace=params.namespace, key=params.key, deleted=False)
        live = store.is_alive(row, now)
        if live and not _may_write(row, ctx.requester):
            raise _refuse_write(row, ctx.requester, params.namespace, params.key)
        await store.delete_item(conn, item_id)  # an expired row goes too: it is garbage either way
        if live:  # an expired item was already gone for every reader: its removal tells nobody anything
            where = (params.namespace, params.key)
            gone = _change(ChangeKind.MEMORY_DELETED, ctx, where, row.version, row.visibility, row.owner, row.trace_id)
            await changes.record(conn, gone)
        return DeleteMemoryOutput(namespace=params.namespace, key=params.key, deleted=live)

    return await ctx.commit(job)


def _change(
    kind: ChangeKind,
    ctx: HandlerContext,
    where: tuple[list[str], str],
    version: int,
    visibility: str,
    owner: str | None,
    trace_id: str | None,
) -> dict[str, Any]:
    """A memory item's change (``where``: its namespace and key), under the item's read rule after the change."""
    namespace, key = where
    return changes.new_change(
        kind,
        node=ctx.settings.node_name,
        at=ctx.now,
        visibility=visibility,
        owner=owner,
        trace_id=trace_id,
        namespace=namespace,
        key=key,
        version=version,
    )
