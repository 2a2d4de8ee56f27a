"""ping and get_stats: what a health check and an operator ask first."""

from __future__ import annotations

import time

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import GetStatsOutput, GetStatsParams, PingOutput, PingParams
from service import __version__
from service.core.context import HandlerContext
from service.files import ARTIFACTS
from service.store import artifacts as artifact_store
from service.store import inbox
from service.store import memory as memory_store
from service.store.models import Base


async def ping(params: PingParams, ctx: HandlerContext) -> PingOutput:
    uptime = time.monotonic() - ctx.services.started_monotonic
    return PingOutput(node=ctx.settings.node_name, version=__version__, uptime_seconds=round(uptime, 3))


async def _count(conn: AsyncConnection, table_name: str) -> int:
    table = Base.metadata.tables.get(table_name)
    if table is None:
        return 0
    return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def get_stats(params: GetStatsParams, ctx: HandlerContext) -> GetStatsOutput:
    """Store-wide counts for an operator; ``memory`` lists only the namespaces the requester may read."""
    async with ctx.read() as conn:
        artifact_counts = await artifact_store.stats(conn)
        threads = await _count(conn, "threads")
        messages = await _count(conn, "messages")
        inbox_count = await inbox.count(conn)
        memory = await memory_store.count_by_top_namespace(conn, ctx.requester, ctx.now)
    files = len(await ctx.files.walk(ARTIFACTS))
    return GetStatsOutput(
        artifacts=artifact_counts,
        threads=threads,
        messages=messages,
        files=files,
        inbox=inbox_count,
        memory=memory,
        node=ctx.settings.node_name,
    )
