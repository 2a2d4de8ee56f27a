"""Prometheus metrics and ``/healthz`` on ``STORAGE_METRICS_PORT`` (off when unset).

Each worker has its own registry (tests run many workers in one process). Per command the cost is a
dictionary lookup and two increments: label children are cached, unknown action names collapse into
``unknown`` so an agent's typo cannot blow up the series count. Connectivity is probed when scraped,
so the gauges are as fresh as the scrape and nothing polls in between.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from sqlalchemy import text

from contracts import ACTIONS
from service import __version__
from service.core.pipeline import Outcome, Settle
from service.store.engine.db import read_connection

if TYPE_CHECKING:
    from service.transport.worker import Worker

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
PROBE_TIMEOUT_S = 2.0
_MAX_REQUEST_BYTES = 8192

# The *_created series double the scrape and no dashboard reads them. (prometheus_client leaves it unannotated.)
cast("Callable[[], None]", disable_created_metrics)()


def action_label(action: str | None) -> str:
    """The action as a label value: a known action, ``invalid`` (not even an envelope) or ``unknown``."""
    if action is None:
        return "invalid"
    return action if action in ACTIONS else "unknown"


class Metrics:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.commands = Counter(
            "storage_commands", "Commands answered, by action and outcome code (OK or the error code)",
            ("action", "code"), registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "storage_command_duration_seconds", "Time from delivery to ack, by action",
            ("action",), buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "storage_write_batch_size", "Writes committed together by the single writer (group commit)",
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.inbox_hits = Counter(
            "storage_inbox_hits", "Commands answered from the inbox (duplicates, retries), by action",
            ("action",), registry=r,
        )  # fmt: skip
        self.dlq = Counter(
            "storage_dlq_publishes", "Messages rejected into the dead-letter queue (oversize, not a command)",
            registry=r,
        )  # fmt: skip
        self.cleanup_items = Counter(
            "storage_cleanup_items", "Items handled by cleanup, by scope", ("scope",), registry=r
        )
        self.verified_files = Counter(
            "storage_verified_files", "Artifact files the scrubber read again, by result (ok, corrupted, missing)",
            ("result",), registry=r,
        )  # fmt: skip
        for result in ("ok", "corrupted", "missing"):  # zeros from the start: an alert on corrupted needs the series
            self.verified_files.labels(result)
        self.verified_bytes = Counter(
            "storage_verified_bytes", "Bytes of artifact files the scrubber read again", registry=r
        )
        self.in_flight = Gauge("storage_in_flight_commands", "Commands taken and not yet settled", registry=r)
        self.in_flight.set_function(lambda: worker.in_flight)
        self.database_up = Gauge("storage_database_up", "1 when the database answered the last probe", registry=r)
        self.broker_up = Gauge("storage_broker_up", "1 when the broker connection is open", registry=r)
        info = Info("storage_node", "This storage node", registry=r)
        s = worker.settings
        info.info({"node": s.node_name, "version": __version__, "queue": s.queue, "exchange": s.exchange})
        self._children: dict[tuple[str | None, str], tuple[Counter, Histogram]] = {}
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    def attach(self) -> None:
        self.worker.on_outcome.append(self.observe)
        self.worker.on_batch.append(self.batch_size.observe)
        self.worker.on_started.append(self._start)
        self.worker.on_stopping.append(self._stop)

    def observe(self, outcome: Outcome, elapsed_s: float) -> None:
        """A ``Worker.on_outcome`` observer: the whole per-command cost of metrics."""
        key = (outcome.action, outcome.code)
        children = self._children.get(key)
        if children is None:
            action = action_label(outcome.action)
            children = (self.commands.labels(action, outcome.code), self.latency.labels(action))
            self._children[key] = children
        children[0].inc()
        children[1].observe(elapsed_s)
        if outcome.replayed:
            self.inbox_hits.labels(action_label(outcome.action)).inc()
        if outcome.settle is Settle.REJECT:
            self.dlq.inc()

    async def probe(self) -> dict[str, bool]:
        """Ask the database for ``SELECT 1`` and the broker client whether its connection is open."""
        database = False
        services = self.worker.services
        if services is not None:
            try:
                async with asyncio.timeout(PROBE_TIMEOUT_S), read_connection(services.engine) as conn:
                    await conn.execute(text("SELECT 1"))
                database = True
            except Exception as exc:
                log.debug("database probe failed: %s", exc)
        broker = await self.worker.broker.ping(timeout=PROBE_TIMEOUT_S)
        self.database_up.set(1 if database else 0)
        self.broker_up.set(1 if broker else 0)
        return {"database": database, "broker": broker}

    async def render(self) -> bytes:
        await self.probe()
        return generate_latest(self.registry)

    async def health(self) -> tuple[int, dict[str, object]]:
        """200 with ``status: ok`` when both the database and the broker answer, else 503.

        A paused node (CONTROL ``pause``) is healthy, so 200, with ``status: paused``: restarting it would
        undo what the operator asked for.
        """
        checks = await self.probe()
        ok = all(checks.values())
        body: dict[str, object] = {
            "status": ("paused" if self.worker.paused else "ok") if ok else "unavailable",
            "paused": self.worker.paused,
            "node": self.worker.settings.node_name,
            "version": __version__,
            **checks,
            "in_flight": self.worker.in_flight,
        }
        return (200 if ok else 503), body

    async def _start(self, worker: Worker) -> None:
        s = worker.settings
        assert s.metrics_port is not None and worker.services is not None
        self._server = await asyncio.start_server(self._serve, s.metrics_host, s.metrics_port)
        self.port = self._server.sockets[0].getsockname()[1]
        worker.services.on_cleanup.append(self.count_cleanup)
        worker.services.on_verified.append(self.count_verified)
        log.info("metrics on http://%s:%d/metrics, health on /healthz", s.metrics_host, self.port)

    def count_cleanup(self, scope: str, count: int) -> None:
        """A ``Services.on_cleanup`` observer: items a cleanup scope handled."""
        self.cleanup_items.labels(scope).inc(count)

    def count_verified(self, result: str, files: int, size: int) -> None:
        """A ``Services.on_verified`` observer: files the scrubber checked, and their bytes."""
        self.verified_files.labels(result).inc(files)
        self.verified_bytes.inc(size)

    async def _stop(self, worker: Worker) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A minimal HTTP/1.1 responder: GET or HEAD of ``/metrics`` and ``/healthz``, one request per connection."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            method, _, rest = head[:_MAX_REQUEST_BYTES].decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            status, content_type, body = await self._route(method, path)
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[status]
            headers = (
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(headers.encode("latin-1") + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET and HEAD\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, await self.render()
        if path == "/healthz":
            status, body = await self.health()
            return status, "application/json", json.dumps(body).encode()
        return 404, "text/plain", b"see /metrics and /healthz\n"
