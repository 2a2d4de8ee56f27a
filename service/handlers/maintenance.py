"""The admin action ``cleanup``: the same scopes the periodic run and the CLI use, on demand."""

from __future__ import annotations

from contracts import CleanupOutput, CleanupParams
from service.core.context import HandlerContext
from service.maintenance import run_cleanup


async def cleanup(params: CleanupParams, ctx: HandlerContext) -> CleanupOutput:
    """Runs in bounded batches through the writer; commands arriving meanwhile are served between them."""
    counts = await run_cleanup(ctx.services, params.scopes, dry_run=params.dry_run, now=ctx.now)
    return CleanupOutput(dry_run=params.dry_run, counts=counts)
