"""``changes_since``: the change log after a cursor, as much of it as the requester may read, for catch-up.

The read rule is the changed object's own, as it stood after the change (``store.read_rule`` on the
change's visibility, owner and trace): an artifact's or thread's change is read by whoever could read it
then, a memory item's likewise, a quota warning by its trace and the registration's owner; admins read
every change, an anonymous requester only public ones. The filter runs in SQL.

One call reads at most ``MAX_SCAN`` changes of the log (of one trace's, with ``trace_id``): a requester
who may read none of a million changes gets an empty page whose ``cursor`` moved past what was read, and
``next_cursor`` to go on, instead of making one call cross the whole log. ``cursor`` is always the point
to resume from; a cursor from before what retention purged is OUT_OF_RANGE, never a silent gap.
"""

from __future__ import annotations

from contracts import Change, ChangesSinceOutput, ChangesSinceParams, InvalidArgument, OutOfRange
from service.core import paging
from service.core.context import HandlerContext
from service.store import changes as store

MAX_SCAN = 5_000
"""Changes one call reads at most (five of the largest pages): its cost, whatever the requester may read."""
CHANGE_SIZE = paging.ITEM_OVERHEAD
"""A change's field names, kind, times and numbers: well within the allowance of one item; its strings come on
top (``_size``)."""


def parse_cursor(cursor: str | None) -> int | None:
    """A ``changes_since`` cursor is a change id in decimal (an event's envelope id is one too)."""
    if cursor is None:
        return None
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 19:
        raise InvalidArgument(
            "cursor must be a change id: the decimal digits of an earlier cursor or of an event's id",
            {"field": "cursor"},
        )
    return int(cursor)


async def changes_since(params: ChangesSinceParams, ctx: HandlerContext) -> ChangesSinceOutput:
    after = parse_cursor(params.cursor)
    async with ctx.read() as conn:
        log = await store.horizon(conn)
        if after is None:
            after = log.purged
        elif after < log.purged or after > log.last:
            raise _out_of_range(after, log)
        scanned = await store.window(conn, after=after, last=log.last, trace_id=params.trace_id, scan=MAX_SCAN)
        rows = await store.readable_page(
            conn,
            after=after,
            through=scanned.end,
            requester=ctx.requester,
            kinds=params.kinds,
            trace_id=params.trace_id,
            limit=params.limit + 1,  # one more than asked: whether the window holds more
        )
    found = [store.to_change(row) for row in rows]
    more = len(found) > params.limit
    found = found[: params.limit]
    kept = paging.fit(found, paging.page_budget(ctx.settings), _size)
    if kept < len(found) or more:
        found = found[:kept]
        cursor = str(found[-1].change_id)
        next_cursor: str | None = cursor
    else:  # the whole window was read: resume after it
        cursor = str(scanned.end)
        next_cursor = cursor if scanned.full else None
    return ChangesSinceOutput(count=len(found), changes=found, cursor=cursor, next_cursor=next_cursor)


def _size(change: Change) -> int:
    strings = (change.node, change.trace_id, change.artifact_id, change.thread_id, change.namespace, change.key)
    return CHANGE_SIZE + paging.json_size(strings)


def _out_of_range(after: int, log: store.Horizon) -> OutOfRange:
    """A cursor the log cannot continue from. The way back: read the objects afresh (list_artifacts,
    list_threads, search_memory) and follow from ``details.last``, the newest change now: what changes meanwhile
    is then seen twice at worst, never missed."""
    if after < log.purged:
        reason = "purged"
        message = (
            f"cursor {after} is older than the change log keeps: changes up to {log.purged} were purged "
            "(STORAGE_CHANGES_RETENTION); resync with list_artifacts / list_threads / search_memory, then follow "
            f"changes_since from cursor {log.last}"
        )
    else:
        reason = "unknown"
        message = (
            f"cursor {after} is past the newest change {log.last}: it is not a cursor of this change log; resync "
            f"with list_artifacts / list_threads / search_memory, then follow changes_since from cursor {log.last}"
        )
    details = {"field": "cursor", "reason": reason, "purged_through": log.purged, "last": log.last}
    return OutOfRange(message, details)
