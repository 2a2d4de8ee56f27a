"""The change calls of ``StorageClient``: ``changes_since``, ``watch`` and ``wait_for_artifact``.

``wait_for_artifact`` is how an agent waits for an input instead of polling: it binds to
``evt.storage.artifact_registered`` first, then asks ``list_artifacts`` once (the input may be there
already), then once more after each registration that may match (its trace, when the filter names one),
until one is listed or the timeout passes. The listing is the worker's, so it never returns an artifact the
requester may not read, whatever the bus carried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

from typing_extensions import Unpack

from buffer._calls import drop_none
from buffer._core import ClientCore, validated
from buffer.errors import BrokerUnavailable, WaitTimeout
from buffer.live import GAP, Subscription
from buffer.outcomes import CallOptions
from buffer.watching import ChangeWatch, Cursor, cursor_text, parse_change
from contracts import (
    ArtifactManifest,
    ChangeKind,
    ChangesSinceOutput,
    ChangesSinceParams,
    ListArtifactsOutput,
    ListArtifactsParams,
    StorageError,
)

log = logging.getLogger(__name__)

RECHECK_S: Final = 5.0
"""After a listing failed retryably (worker away), ``wait_for_artifact`` asks again this often."""


class ChangeCalls(ClientCore):
    """Change events: catch up, watch, wait."""

    async def changes_since(
        self,
        cursor: Cursor | None = None,
        *,
        kinds: Sequence[ChangeKind | str] | None = None,
        trace_id: str | None = None,
        limit: int = 100,
        **options: Unpack[CallOptions],
    ) -> ChangesSinceOutput:
        """One page of the changes after ``cursor`` the requester may read, oldest first.

        ``cursor``: a ``cursor`` of an earlier answer, or the ``change_id`` of a change (or the change); none:
        the oldest the worker keeps. A cursor older than that raises ``OutOfRange``: catch up otherwise.
        """
        params = validated(
            ChangesSinceParams,
            drop_none(
                cursor=cursor_text(cursor),
                kinds=list(kinds) if kinds is not None else None,
                trace_id=trace_id,
                limit=limit,
            ),
        )
        return await self._read("changes_since", params, options, ChangesSinceOutput)

    def watch(
        self,
        *,
        cursor: Cursor | None = None,
        kinds: Sequence[ChangeKind | str] | None = None,
        trace_id: str | None = None,
        from_oldest: bool = False,
        page_size: int = 100,
    ) -> ChangeWatch:
        """The changes after ``cursor`` (none: from now on; ``from_oldest``: from the oldest the worker keeps),
        caught up, then live; each once, in commit order.

            async with storage.watch(trace_id="trace-42", kinds=["artifact_registered"]) as changes:
                async for change in changes:
                    remember(change.change_id)  # watch(cursor=...) resumes after it

        Caught-up changes are those the requester may read; live ones are filtered by ``kinds`` and
        ``trace_id`` only (see ``buffer.watching``). Close it (``async with``, or ``aclose``) to delete its
        queue; closing the client ends it too.
        """
        chosen = [ChangeKind(kind) for kind in kinds] if kinds is not None else None
        validated(ChangesSinceParams, drop_none(kinds=chosen, trace_id=trace_id, limit=page_size))

        async def fetch(page_cursor: str | None) -> ChangesSinceOutput:
            return await self.changes_since(page_cursor, kinds=chosen, trace_id=trace_id, limit=page_size)

        watch = ChangeWatch(
            fetch,
            self.transport.subscribe,
            cursor=cursor,
            kinds=chosen,
            trace_id=trace_id,
            from_oldest=from_oldest and cursor is None,
        )
        return watch

    async def wait_for_artifact(
        self,
        filter: Mapping[str, Any] | ListArtifactsParams | None = None,
        *,
        timeout_s: float,
        **filters: Any,
    ) -> ArtifactManifest:
        """The newest artifact matching the ``list_artifacts`` filters that the requester may read, as soon as
        one is registered; raises ``WaitTimeout`` when none is within ``timeout_s``.

            report = await storage.wait_for_artifact({"trace_id": "trace-42", "artifact_type": "report"}, timeout_s=600)
        """
        if isinstance(filter, ListArtifactsParams):
            filter = filter.model_dump(exclude_unset=True)
        given = {**(filter or {}), **filters}
        given.pop("cursor", None)
        params = validated(ListArtifactsParams, {**given, "limit": 1})
        shown = {k: v for k, v in params.model_dump(mode="json", exclude_defaults=True).items() if k != "limit"}
        try:
            async with asyncio.timeout(timeout_s):
                subscription = await self.transport.subscribe([ChangeKind.ARTIFACT_REGISTERED.routing_key])
                try:
                    while True:
                        found = await self._first_listed(params)
                        if found is not None:
                            return found
                        await _next_registration(subscription, params.trace_id)
                finally:
                    await subscription.close()
        except TimeoutError:
            raise WaitTimeout("artifact matching the filter", timeout_s, {"filter": shown}) from None

    async def _first_listed(self, params: ListArtifactsParams) -> ArtifactManifest | None:
        """The first artifact listed, None for none; a worker out of reach is asked again after a pause."""
        while True:
            try:
                page = await self._read("list_artifacts", params, {}, ListArtifactsOutput)
            except StorageError as exc:
                if not exc.retryable:
                    raise
                log.info("wait_for_artifact: listing failed (%s), again in %g s", exc.code.value, RECHECK_S)
                await asyncio.sleep(RECHECK_S)
                continue
            return page.artifacts[0] if page.artifacts else None


async def _next_registration(subscription: Subscription, trace_id: str | None) -> None:
    """Wait for a registration that may match (or a gap, after which one may have been missed); then take in
    what else has queued, so one listing answers them all."""
    while True:
        item = await subscription.get()
        if item is None:
            raise BrokerUnavailable("the client is closed")
        relevant = item is GAP
        if isinstance(item, bytes):
            change = parse_change(item)
            relevant = change is not None and (trace_id is None or change.trace_id == trace_id)
        if relevant:
            while subscription.pending():
                await subscription.get()
            return
