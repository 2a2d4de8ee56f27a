"""The cleanup runner: one function per ``CleanupScope``, listed in one table, each working in bounded batches.

A scope function gets a ``HandlerContext`` (admin, with ``dry_run``) and returns how many items it removed
or changed (or, in a dry run, would have). It must not hold the single writer for long: every batch is its
own short job through ``ctx.write``, so commands queued meanwhile commit between two batches. A new scope is
a function in ``data_scopes`` or ``file_scopes`` and a row in ``SCOPES``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

from contracts import Cancelled, CleanupScope, Unimplemented, utc_now
from service.core.context import HandlerContext, Services
from service.maintenance.data_scopes import (
    changes,
    expired_artifacts,
    expired_memory,
    expired_threads,
    inbox,
    purge_deleted,
    stale_uploading,
)
from service.maintenance.file_scopes import missing_files, old_orphans, orphan_files, temp_orphans
from service.maintenance.verify import verify_checksums

log = logging.getLogger(__name__)

ScopeFn = Callable[[HandlerContext], Awaitable[int]]

SCOPES: dict[CleanupScope, ScopeFn] = {
    CleanupScope.EXPIRED_ARTIFACTS: expired_artifacts,
    CleanupScope.EXPIRED_THREADS: expired_threads,
    CleanupScope.EXPIRED_MEMORY: expired_memory,
    CleanupScope.PURGE_DELETED: purge_deleted,
    CleanupScope.MISSING_FILES: missing_files,
    CleanupScope.VERIFY_CHECKSUMS: verify_checksums,
    CleanupScope.STALE_UPLOADING: stale_uploading,
    CleanupScope.TEMP_ORPHANS: temp_orphans,
    CleanupScope.ORPHAN_FILES: orphan_files,
    CleanupScope.OLD_ORPHANS: old_orphans,
    CleanupScope.INBOX: inbox,
    CleanupScope.CHANGES: changes,
}
"""Every scope in the order of a full cleanup: missing files are repaired from temp/ before old temp files go,
and before the scrubber reads a batch of the files that are there."""

_RUNNING = asyncio.Lock()
_RUNS: set[asyncio.Task[None]] = set()
"""The scopes of the cleanup running now in this process (at most one): what ``stop_cleanups`` cancels."""


def stop_cleanups() -> int:
    """Cancel the running cleanup (a CONTROL ``stop``): the batch in the writer commits, the rest is not done.

    Returns how many were running (0 or 1). The caller of that cleanup gets CANCELLED with what it did.
    """
    running = [run for run in _RUNS if not run.done()]
    for run in running:
        run.cancel()
    return len(running)


async def run_cleanup(
    services: Services,
    scopes: Iterable[CleanupScope] | None = None,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> dict[str, int]:
    """Run the given scopes (all when None) one after another, in table order; counts per scope.

    One cleanup at a time per process: the periodic run, the admin action and the CLI queue up rather
    than race each other over the same rows and files.
    """
    if scopes is None:
        chosen = list(SCOPES)
    else:
        wanted = set(dict.fromkeys(CleanupScope(s) for s in scopes))
        missing = sorted(s.value for s in wanted if s not in SCOPES)
        if missing:
            raise Unimplemented(
                f"cleanup scope {', '.join(missing)} is not served by this worker",
                {"field": "scopes", "unsupported": missing, "supported": [s.value for s in SCOPES]},
            )
        chosen = [s for s in SCOPES if s in wanted]
    counts: dict[str, int] = {}
    async with _RUNNING:
        ctx = HandlerContext(services, now=now or utc_now(), dry_run=dry_run)
        run = asyncio.create_task(_run_scopes(ctx, chosen, counts), name="storage-cleanup")
        _RUNS.add(run)
        try:
            await run
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():  # the caller itself is cancelled, not stopped
                raise
            log.warning("cleanup stopped by a CONTROL signal after %s", counts or "no scope")
            raise Cancelled(
                "cleanup stopped by a CONTROL stop signal; what it had done stays done",
                {"counts": counts, "stopped": [s.value for s in chosen if s.value not in counts]},
            ) from None
        finally:
            _RUNS.discard(run)
    return counts


async def _run_scopes(ctx: HandlerContext, chosen: list[CleanupScope], counts: dict[str, int]) -> None:
    for scope in chosen:
        started = time.monotonic()
        counts[scope.value] = count = await SCOPES[scope](ctx)
        if count:
            log.info(
                "cleanup %s: %s %d in %.2fs",
                scope.value,
                "would handle" if ctx.dry_run else "handled",
                count,
                time.monotonic() - started,
            )
            if not ctx.dry_run:
                for observer in ctx.services.on_cleanup:
                    observer(scope.value, count)
