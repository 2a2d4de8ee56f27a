"""OpenTelemetry tracing (the optional ``telemetry`` extra): follow one agent's request end to end.

Every delivery gets a consumer span ``<queue> process`` and its reply a producer span ``<reply_to> publish``
(which writes ``traceparent`` into the reply's AMQP headers), named after OpenTelemetry's messaging
conventions. The consumer span continues the trace of the command's ``traceparent``: from the AMQP headers,
else from the CloudEvents body, where MindBus agents put it. Each command also gets a child span
``storage.<action>`` carrying the action, outcome code, requester and MindBus trace id. The reply body keeps
the command's ``traceparent`` (docs/contract.md §1), so both sides name the same trace.

On when the extra is installed and ``STORAGE_OTEL=true`` or a standard ``OTEL_*`` exporter variable is
set. Spans go to the globally configured tracer provider (``opentelemetry-instrument``), else to one set
up here: OTLP over HTTP (``OTEL_EXPORTER_OTLP_ENDPOINT``), or the console with ``OTEL_TRACES_EXPORTER=console``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from service import __version__
from service.core.pipeline import Outcome, Settle
from service.ops.commandlog import SERVER_FAULTS
from service.settings import Settings

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage
    from opentelemetry.trace import Tracer, TracerProvider

    from service.transport.worker import Worker

log = logging.getLogger(__name__)

OTEL_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER")
SERVICE_NAME = "mindbus-storage"
_BODY_TRACEPARENT = re.compile(rb'"traceparent"\s*:\s*"(00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2})"')


def available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("opentelemetry.sdk", "opentelemetry.semconv"))


def wanted(settings: Settings) -> bool:
    return settings.otel or any(os.environ.get(name) for name in OTEL_ENV)


def traceparent_in_body(body: bytes) -> str | None:
    """The envelope's ``traceparent`` found by a byte scan: no second JSON parse on the hot path."""
    found = _BODY_TRACEPARENT.search(body)
    return found.group(1).decode() if found else None


def default_provider(settings: Settings) -> TracerProvider:
    """The global provider when one is configured, else an SDK provider exporting as the environment says."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    current = trace.get_tracer_provider()
    if isinstance(current, SdkTracerProvider):
        return current
    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME", SERVICE_NAME),
            "service.version": __version__,
            "service.instance.id": settings.node_name,
        }
    )
    provider = SdkTracerProvider(resource=resource)
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp") == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        log.warning("tracing on but no span exporter: install opentelemetry-exporter-otlp-proto-http")
    trace.set_tracer_provider(provider)
    return provider


class Tracing:
    """The worker's ``DeliveryTracer`` and its per-command span, on one tracer provider."""

    def __init__(self, worker: Worker, tracer_provider: TracerProvider | None = None) -> None:
        from opentelemetry import trace

        self.worker = worker
        self.provider = tracer_provider or default_provider(worker.settings)
        self.tracer: Tracer = trace.get_tracer("service.ops.telemetry", __version__, tracer_provider=self.provider)

    def attach(self) -> None:
        self.worker.tracer = self
        self.worker.on_outcome.append(self.record)

    @contextmanager
    def consuming(self, message: AbstractIncomingMessage) -> Iterator[object]:
        """The delivery's consumer span, continuing the command's trace; current while the command runs."""
        from opentelemetry.propagate import extract
        from opentelemetry.trace import SpanKind

        carrier = {key: _text(value) for key, value in (message.headers or {}).items()}
        if "traceparent" not in carrier and (found := traceparent_in_body(message.body)) is not None:
            carrier["traceparent"] = found
        queue = self.worker.settings.queue
        with self.tracer.start_as_current_span(
            f"{queue} process",
            context=extract(carrier),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation": "process",
                "messaging.destination.name": queue,
                "messaging.message.id": message.message_id or "",
                "messaging.message.conversation_id": message.correlation_id or "",
            },
        ) as span:
            yield span

    @contextmanager
    def publishing(self, routing_key: str, headers: dict[str, str]) -> Iterator[object]:
        """The reply's producer span; its context goes into ``headers`` for the agent to continue."""
        from opentelemetry.propagate import inject
        from opentelemetry.trace import SpanKind

        with self.tracer.start_as_current_span(
            f"{routing_key} publish",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation": "publish",
                "messaging.destination.name": routing_key,
            },
        ) as span:
            inject(headers)
            yield span

    def record(self, outcome: Outcome, elapsed_s: float) -> None:
        """A child span of the delivery's consumer span, timed from delivery to ack."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        end_ns = time.time_ns()
        span = self.tracer.start_span(
            f"storage.{outcome.action or 'invalid'}",
            kind=SpanKind.INTERNAL,
            start_time=end_ns - int(elapsed_s * 1e9),
            attributes={
                "mindbus.action": outcome.action or "",
                "mindbus.outcome": outcome.code,
                "mindbus.requester": outcome.requester_id or "",
                "mindbus.trace_id": outcome.trace_id or "",
                "mindbus.envelope_id": outcome.envelope_id or "",
                "mindbus.replayed": outcome.replayed,
                "mindbus.dead_lettered": outcome.settle is Settle.REJECT,
            },
        )
        if outcome.code in SERVER_FAULTS:
            span.set_status(Status(StatusCode.ERROR, outcome.code))
        span.end(end_time=end_ns)


def _text(value: object) -> str:
    """A header value as the propagator reads it: AMQP byte strings decoded, anything else as its text."""
    return bytes(value).decode(errors="replace") if isinstance(value, bytes | bytearray) else str(value)
