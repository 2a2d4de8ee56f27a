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

from contracts import CleanupScope, Unimplemented, utc_now
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
        for scope in chosen:
            started = time.monotonic()
            counts[scope.value] = count = await SCOPES[scope](ctx)
            if count:
                log.info(
                    "cleanup %s: %s %d in %.2fs",
                    scope.value,
                    "would handle" if dry_run else "handled",
                    count,
                    time.monotonic() - started,
                )
                if not dry_run:
                    for observer in services.on_cleanup:
                        observer(scope.value, count)
    return counts
