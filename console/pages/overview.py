"""``/``: the nodes, the queues, the stored totals and the command rate, on one page."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from buffer import BrokerUnavailable, CallTimeout
from console.web import bus_of, render, settings_of
from contracts import GetStatsOutput, StorageError


async def overview(request: Request) -> Response:
    bus, settings = bus_of(request), settings_of(request)
    stats_call = asyncio.ensure_future(bus.storage.get_stats())
    queue, dlq = await asyncio.gather(bus.queue_depth(settings.queue), bus.queue_depth(settings.dlq))
    stats: GetStatsOutput | None = None
    stats_problem: str | None = None
    try:
        stats = await stats_call
    except StorageError as exc:
        stats_problem = f"{exc.code}: {exc.message}"
    except (CallTimeout, BrokerUnavailable) as exc:
        stats_problem = f"no answer from the storage worker ({type(exc).__name__})"
    now = time.time()
    nodes = [
        {"view": view, "ago": view.seconds_since(now), "stale": view.stale(now, settings.stale_after_s)}
        for view in bus.nodes.sorted()
    ]
    return render(
        request,
        "overview.html",
        nodes=nodes,
        queues=[queue, dlq],
        stats=stats,
        stats_problem=stats_problem,
        rate=request.app.state.rates.rate(),
        metrics_url=settings.metrics_endpoint,
    )


async def healthz(request: Request) -> Response:
    """For a load balancer or a container probe: the console is up (it says nothing of the worker)."""
    return Response("ok\n", media_type="text/plain")


routes: list[BaseRoute] = [Route("/", overview), Route("/healthz", healthz)]
