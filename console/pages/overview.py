"""``/``: the nodes, the queues, the stored totals and the command rate, on one page; admins pause and resume
a node from it (a CONTROL signal, ``ctl.<node>.pause`` / ``resume``, sent as the console's broker user)."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from buffer import BrokerUnavailable, CallTimeout
from console.pages.dlq import redirect_with_flash, refused, render_with_flash
from console.web import bus_of, render, settings_of
from contracts import ControlScope, GetStatsOutput, StorageError, topology

STEERING = (ControlScope.PAUSE, ControlScope.RESUME)
"""What the overview's buttons send; shutdown and the rest stay with ``storage-worker signal``."""


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
    return render_with_flash(
        request,
        "overview.html",
        nodes=nodes,
        queues=[queue, dlq],
        stats=stats,
        stats_problem=stats_problem,
        rate=request.app.state.rates.rate(),
        metrics_url=settings.metrics_endpoint,
    )


async def steer(request: Request) -> Response:
    """POST ``/nodes/<name>/<pause|resume>``: one CONTROL signal to that node; its heartbeats then show it."""
    if (denied := refused(request, "Pausing and resuming nodes")) is not None:
        return denied
    node, scope = request.path_params["node"], request.path_params["scope"]
    try:
        chosen = ControlScope(scope)
        topology.check_node_name(node)
    except ValueError:
        return render(request, "error.html", status_code=404, code="NOT_FOUND", message="no such node action")
    if chosen not in STEERING:
        return render(request, "error.html", status_code=404, code="NOT_FOUND", message="no such node action")
    try:
        key = await bus_of(request).storage.signal(chosen, target=node, reason="from the console")
    except BrokerUnavailable as exc:
        return redirect_with_flash("/", f"{chosen.value} not sent to {node}: {exc.message}", bad=True)
    return redirect_with_flash("/", f"sent {key}: the node's next heartbeat shows whether it obeyed.")


async def healthz(request: Request) -> Response:
    """For a load balancer or a container probe: the console is up (it says nothing of the worker)."""
    return Response("ok\n", media_type="text/plain")


routes: list[BaseRoute] = [
    Route("/", overview),
    Route("/nodes/{node}/{scope}", steer, methods=["POST"]),
    Route("/healthz", healthz),
]
