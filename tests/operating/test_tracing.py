"""Tracing: an agent's ``traceparent`` is continued by the worker's spans, so one request is followed end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from contracts import make_command
from service.ops import telemetry
from service.settings import Settings
from service.transport.worker import Worker
from tests.support.bus import Bus, output
from tests.support.databases import sqlite_url
from tests.support.workers import Outcomes, make_settings, running

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
AGENT_SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{AGENT_SPAN_ID}-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(
    amqp_url: str, tmp_path: Path, storage_root: Path, exporter: InMemorySpanExporter
) -> AsyncIterator[tuple[Worker, Bus]]:
    """A worker whose spans go to memory, and an agent on its exchange."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = make_settings(amqp_url, sqlite_url(tmp_path), storage_root, node_registry=False)

    def with_tracing(worker: Worker) -> None:
        telemetry.Tracing(worker, tracer_provider=provider).attach()

    async with running(settings, prepare=with_tracing) as worker, Bus.of(settings) as bus:
        yield worker, bus


async def test_body_traceparent_is_continued_by_worker_spans_and_copied_to_the_reply(
    traced: tuple[Worker, Bus], exporter: InMemorySpanExporter
) -> None:
    """The consumer span, the per-command span and the reply's producer span all join the agent's trace."""
    worker, bus = traced
    outcomes = Outcomes(worker)
    envelope = make_command("ping", source="agent.a", context={"requester_trace_id": "trace-7"})
    envelope.traceparent = TRACEPARENT
    reply = await bus.send(envelope.to_json_bytes(), envelope.id)
    output(reply)
    assert reply["traceparent"] == TRACEPARENT
    await outcomes.wait(1)

    spans = exporter.get_finished_spans()
    in_trace = [s for s in spans if format(s.context.trace_id, "032x") == TRACE_ID]
    assert len(in_trace) == len(spans) >= 3, [(s.name, format(s.context.trace_id, "032x")) for s in spans]
    consumer = next(s for s in in_trace if s.name.endswith(" process"))
    assert consumer.parent is not None and format(consumer.parent.span_id, "016x") == AGENT_SPAN_ID
    command = next(s for s in in_trace if s.name == "storage.ping")
    assert command.parent is not None and command.parent.span_id == consumer.context.span_id
    assert command.attributes is not None
    assert command.attributes["mindbus.action"] == "ping"
    assert command.attributes["mindbus.outcome"] == "OK"
    assert command.attributes["mindbus.requester"] == "agent.a"
    assert command.attributes["mindbus.trace_id"] == "trace-7"
    assert any(s.name.endswith(" publish") for s in in_trace)


@pytest.mark.parametrize("header", [TRACEPARENT, bytearray(TRACEPARENT.encode())], ids=["text", "bytes"])
async def test_an_amqp_header_traceparent_is_continued(
    traced: tuple[Worker, Bus], exporter: InMemorySpanExporter, header: str | bytearray
) -> None:
    """An agent instrumented at the AMQP level sends ``traceparent`` as a header (text or bytes): the same trace."""
    worker, bus = traced
    outcomes = Outcomes(worker)
    envelope = make_command("ping", source="agent.a")
    output(await bus.send(envelope.to_json_bytes(), envelope.id, headers={"traceparent": header}))
    await outcomes.wait(1)
    consumer = next(s for s in exporter.get_finished_spans() if s.name.endswith(" process"))
    assert format(consumer.context.trace_id, "032x") == TRACE_ID
    assert consumer.parent is not None and format(consumer.parent.span_id, "016x") == AGENT_SPAN_ID


async def test_without_traceparent_the_worker_starts_a_trace_of_its_own(
    traced: tuple[Worker, Bus], exporter: InMemorySpanExporter
) -> None:
    """A command sent without trace context still gets spans, rooted at the worker."""
    worker, bus = traced
    outcomes = Outcomes(worker)
    output(await bus.call("ping"))
    await outcomes.wait(1)
    command = next(s for s in exporter.get_finished_spans() if s.name == "storage.ping")
    assert format(command.context.trace_id, "032x") != TRACE_ID


def test_traceparent_is_found_in_the_body_without_parsing_it() -> None:
    """The byte scan finds a well-formed traceparent and ignores anything else."""
    body = make_command("ping", source="a").model_copy(update={"traceparent": TRACEPARENT}).to_json_bytes()
    assert telemetry.traceparent_in_body(body) == TRACEPARENT
    assert telemetry.traceparent_in_body(b'{"traceparent": "not-a-trace"}') is None


def test_tracing_is_wanted_by_setting_or_otel_environment(
    monkeypatch: pytest.MonkeyPatch, settings_without_otel: Settings
) -> None:
    """STORAGE_OTEL=true or an OTEL exporter variable turns tracing on; neither leaves it off."""
    for name in telemetry.OTEL_ENV:
        monkeypatch.delenv(name, raising=False)
    assert not telemetry.wanted(settings_without_otel)
    assert telemetry.wanted(settings_without_otel.model_copy(update={"otel": True}))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert telemetry.wanted(settings_without_otel)


async def test_worker_installs_tracing_when_asked(
    monkeypatch: pytest.MonkeyPatch, settings_without_otel: Settings, exporter: InMemorySpanExporter
) -> None:
    """With STORAGE_OTEL=true the worker wires tracing itself, into the configured tracer provider: a command
    it runs is exported as a span."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(telemetry, "default_provider", lambda settings: provider)
    async with running(settings_without_otel.model_copy(update={"otel": True})) as worker:
        outcomes = Outcomes(worker)
        async with Bus.of(worker.settings) as bus:
            output(await bus.call("ping"))
        await outcomes.wait(1)
    command = [s for s in exporter.get_finished_spans() if s.name == "storage.ping"]
    assert len(command) == 1 and command[0].attributes is not None
    assert command[0].attributes["mindbus.action"] == "ping"


@pytest.fixture
def settings_without_otel(amqp_url: str, tmp_path: Path) -> Settings:
    return make_settings(amqp_url, sqlite_url(tmp_path), tmp_path, otel=False)
