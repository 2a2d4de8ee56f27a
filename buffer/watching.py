"""``ChangeWatch``: the changes of the storage, caught up from a cursor and then live, each once, none missed.

The order of operations is what makes it gapless: the private queue is bound to ``evt.storage.<kind>``
first, then ``changes_since`` pages from the cursor are yielded, then the live events that queued up
meanwhile and after. A change seen twice (the catch-up/live overlap, a worker republishing after a crash:
delivery is at least once) is dropped by its ``change_id``. After the broker connection comes back (its
events in between went nowhere) or when the reader fell ``MAX_PENDING`` events behind, the watch catches up
again from where it was before taking live events again.

Who may see what: catch-up answers are filtered by the worker (only changes the requester may read). Live
events are pointers the bus carries for every change, whatever the reader's rights (ids, trace, kind,
version, visibility; never content); which of them an identity may receive at all is the broker's topic
permissions on the exchange. The watch filters live events by ``kinds`` and ``trace_id`` itself, so a live
pointer to a change the requester may not read can come through; reading its content is still refused.

Positions: every ``Change`` has a ``change_id``; ``watch(cursor=change.change_id)`` resumes after it. No
cursor means from now on; ``from_oldest`` catches up from the oldest change the worker keeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Final, Self

from pydantic import ValidationError

from buffer.live import GAP, Subscription
from contracts import (
    EVENT_TYPE,
    Change,
    ChangeKind,
    ChangesSinceOutput,
    EventEnvelope,
    StorageError,
)
from contracts.changes import EVENT_PREFIX

log = logging.getLogger(__name__)

Fetch = Callable[[str | None], Awaitable[ChangesSinceOutput]]
"""One ``changes_since`` page from a cursor (the watch's kinds and trace already applied)."""
Subscribe = Callable[[Sequence[str]], Awaitable[Subscription]]
Cursor = int | str | Change

REMEMBERED: Final = 100_000
"""Change ids kept for dropping duplicates: a copy comes back within seconds, not 100,000 changes later."""
CLOCK_MARGIN: Final = timedelta(seconds=60)
"""A watch "from now" that loses its connection before any event came counts "now" as a minute earlier."""
RETRY_S: Final = (0.5, 1.0, 2.0, 5.0)
"""Pauses between catch-up attempts that failed retryably (worker restarting): the watch outlasts an outage."""


def routing_keys(kinds: Sequence[ChangeKind] | None) -> list[str]:
    if not kinds:
        return [f"{EVENT_PREFIX}#"]
    return sorted({ChangeKind(kind).routing_key for kind in kinds})


def cursor_text(cursor: Cursor | None) -> str | None:
    """A ``changes_since`` cursor from what a caller kept: a cursor, a change id, or the change itself."""
    if isinstance(cursor, Change):
        return str(cursor.change_id)
    if isinstance(cursor, int):
        return str(cursor)
    return cursor


def parse_change(body: bytes) -> Change | None:
    """The change an ``evt.storage.*`` EVENT body points at, or None for anything else (logged)."""
    try:
        envelope = EventEnvelope.model_validate_json(body)
        if envelope.type != EVENT_TYPE:
            return None
        return Change.model_validate(envelope.data.event_data)
    except ValidationError as exc:
        log.debug("ignored an event that is not a change: %s", str(exc)[:200])
        return None


def _later(cursor: str | None, new: str) -> str:
    """The later of two cursors (a cursor is a change id in decimal; one of another form simply wins)."""
    if cursor is not None and cursor.isdecimal() and new.isdecimal() and int(cursor) > int(new):
        return cursor
    return new


class ChangeWatch:
    """An async iterator of ``Change`` and an async context manager that closes its queue; see the module."""

    def __init__(
        self,
        fetch: Fetch,
        subscribe: Subscribe,
        *,
        cursor: Cursor | None = None,
        kinds: Sequence[ChangeKind] | None = None,
        trace_id: str | None = None,
        from_oldest: bool = False,
        on_close: Callable[[ChangeWatch], None] | None = None,
    ) -> None:
        self._fetch = fetch
        self._subscribe = subscribe
        self.kinds = frozenset(ChangeKind(kind) for kind in kinds) if kinds else None
        self.trace_id = trace_id
        self._on_close = on_close
        self._subscription: Subscription | None = None
        self._start_lock = asyncio.Lock()
        self._closed = False
        self._ready: deque[Change] = deque()
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()
        self.cursor = cursor_text(cursor)
        """Where a catch-up would start now: past every change yielded or passed over."""
        self._catching_up = self.cursor is not None or from_oldest
        self._page_cursor = self.cursor
        self._started_at = datetime.now(UTC)
        self._not_before: datetime | None = None
        self.catch_ups = 0
        """``changes_since`` pages fetched: at the start and after each gap."""
        self.duplicates = 0
        """Changes that came again (live copies of caught-up ones, events republished) and were dropped."""

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> Self:
        """Bind the queue (before any catch-up); done by the first ``__anext__`` when not called."""
        async with self._start_lock:
            if self._subscription is None and not self._closed:
                self._subscription = await self._subscribe(routing_keys(sorted(self.kinds) if self.kinds else None))
                self._started_at = datetime.now(UTC)
        return self

    async def aclose(self) -> None:
        """Delete the queue; the iteration ends. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._subscription is not None:
            await self._subscription.close()
        if self._on_close is not None:
            self._on_close(self)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @property
    def gaps(self) -> int:
        """Times the live stream broke (reconnects, overflows) and the watch caught up to mend it."""
        return self._subscription.gaps if self._subscription is not None else 0

    # -- iteration -----------------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Change:
        if self._subscription is None:
            await self.start()
        assert self._subscription is not None or self._closed
        while not self._closed:
            if self._ready:
                change = self._ready.popleft()
                self.cursor = _later(self.cursor, str(change.change_id))
                return change
            if self._catching_up:
                await self._catch_up_page()
                continue
            assert self._subscription is not None
            item = await self._subscription.get()
            if item is None:
                break
            if item is GAP:
                self._begin_catch_up()
            elif isinstance(item, bytes):
                self._take_live(item)
        raise StopAsyncIteration

    def _take_live(self, body: bytes) -> None:
        change = parse_change(body)
        if change is None:
            return
        if self.cursor is None:  # from now: the first change on the bus tells where "now" is
            self.cursor = str(change.change_id - 1)
        if self.kinds is not None and change.kind not in self.kinds:
            return
        if self.trace_id is not None and change.trace_id != self.trace_id:
            return
        if self._remember(change.change_id):
            self._ready.append(change)

    def _remember(self, change_id: int) -> bool:
        """False for a change already taken (yielded or about to be)."""
        if change_id in self._seen:
            self.duplicates += 1
            return False
        self._seen.add(change_id)
        self._seen_order.append(change_id)
        if len(self._seen_order) > REMEMBERED:
            self._seen.discard(self._seen_order.popleft())
        return True

    # -- catching up ---------------------------------------------------------------------------

    def _begin_catch_up(self) -> None:
        self._catching_up = True
        self._page_cursor = self.cursor
        if self.cursor is None:  # nothing seen since "now": everything kept, less what came before the start
            self._not_before = self._started_at - CLOCK_MARGIN

    async def _catch_up_page(self) -> None:
        page = await self._fetch_retrying(self._page_cursor)
        self.catch_ups += 1
        for change in page.changes:
            if self._not_before is not None and change.occurred_at < self._not_before:
                continue
            if self._remember(change.change_id):
                self._ready.append(change)
        self.cursor = _later(self.cursor, page.cursor)
        if page.next_cursor:
            self._page_cursor = page.next_cursor
        else:
            self._catching_up = False
            self._not_before = None

    async def _fetch_retrying(self, cursor: str | None) -> ChangesSinceOutput:
        """One page; a retryable failure (worker away) is waited out, anything else is the caller's."""
        attempt = 0
        while True:
            try:
                return await self._fetch(cursor)
            except StorageError as exc:
                if not exc.retryable or self._closed:
                    raise
                pause = RETRY_S[min(attempt, len(RETRY_S) - 1)]
                log.info("watch: catching up failed (%s), again in %g s", exc.code.value, pause)
                attempt += 1
                await asyncio.sleep(pause)
