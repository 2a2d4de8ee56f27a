"""The per-command log line: what an operator greps for, in text or JSON, without message bodies."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from contracts import make_command
from service.logs import JsonFormatter
from service.ops.commandlog import LOGGER_NAME, otel_trace_id
from service.transport.worker import Worker
from tests.support.bus import Bus, error, output
from tests.support.databases import sqlite_url
from tests.support.workers import Outcomes, make_settings, running

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER_NAME]


async def test_one_json_line_per_command_with_action_outcome_duration_trace_and_requester(
    worker: Worker, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    """Each command leaves one line naming action, outcome, duration, trace ids and requester, never params."""
    outcomes = Outcomes(worker)
    secret = "art_11111111-2222-3333-4444-555555555555"
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        ping = make_command(
            "ping", source="agent-test", context={"requester_id": "agent.researcher", "requester_trace_id": "trace-42"}
        )
        ping.traceparent = TRACEPARENT
        output(await bus.send(ping.to_json_bytes(), ping.id))
        error(await bus.call("get_artifact", {"artifact_id": secret}))
        await outcomes.wait(2)
    records = _lines(caplog)
    assert len(records) == 2
    first = json.loads(JsonFormatter().format(records[0]))
    assert first["logger"] == LOGGER_NAME
    assert first["action"] == "ping"
    assert first["code"] == "OK"
    assert first["duration_ms"] >= 0
    assert first["requester"] == "agent.researcher"
    assert first["trace_id"] == "trace-42"
    assert first["otel_trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    second = json.loads(JsonFormatter().format(records[1]))
    assert (second["action"], second["code"]) == ("get_artifact", "NOT_FOUND")
    assert all(secret not in JsonFormatter().format(r) for r in records)


async def test_command_log_can_be_turned_off(
    amqp_url: str, tmp_path: Path, storage_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With STORAGE_COMMAND_LOG=false a busy worker writes no per-command lines at all."""
    settings = make_settings(amqp_url, sqlite_url(tmp_path), storage_root, command_log=False, node_registry=False)
    async with running(settings) as worker, Bus.of(settings) as bus:
        outcomes = Outcomes(worker)
        with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
            output(await bus.call("ping"))
            await outcomes.wait(1)
    assert _lines(caplog) == []


def test_otel_trace_id_reads_only_well_formed_traceparents() -> None:
    """The log's otel_trace_id is the trace part of a W3C traceparent, and empty for anything else."""
    assert otel_trace_id(TRACEPARENT) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert otel_trace_id("garbage") is None
    assert otel_trace_id(None) is None
