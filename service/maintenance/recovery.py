"""Startup recovery, run before the worker takes commands: finish what a crash left half done.

- completed artifacts whose file never reached ``artifacts/`` (the worker died between the commit and the
  move) get it moved into place from ``temp/``, found by size and sha256; when the bytes are gone too
  they become ``failed`` with a warning. The newest day of registrations is checked (a crash interrupts
  the last ones, however long the worker then stayed down); older rows are the periodic
  ``missing_files`` scope's work.
- ``uploading`` rows older than an hour become ``failed``.
- temp files older than an hour move to ``orphans/``.
Every action is logged on its own line; the summary says how many of each.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from contracts import utc_now
from service.core.context import HandlerContext, Services
from service.maintenance.data_scopes import stale_uploading
from service.maintenance.file_scopes import FileCheck, check_completed, temp_orphans
from service.store import maintenance as q

log = logging.getLogger(__name__)

RECENT = timedelta(hours=24)


async def recover(services: Services) -> dict[str, int]:
    """Repair the stores after an unclean stop; returns what was done, by kind."""
    started = time.monotonic()
    ctx = HandlerContext(services, now=utc_now())
    async with ctx.read() as conn:
        newest = await q.newest_registration(conn)
    check = FileCheck()
    if newest is not None:
        check = await check_completed(ctx, registered_since=newest - RECENT)
    summary = {
        "moved_into_place": check.repaired,
        "failed_without_file": check.failed,
        "stale_uploading_failed": await stale_uploading(ctx),
        "temp_to_orphans": await temp_orphans(ctx),
    }
    if any(summary.values()):
        log.warning(
            "startup recovery in %.2fs: %s",
            time.monotonic() - started,
            ", ".join(f"{kind} {count}" for kind, count in summary.items()),
        )
    else:
        log.info("startup recovery: nothing to repair (%.2fs)", time.monotonic() - started)
    return summary
