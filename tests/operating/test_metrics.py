"""Prometheus metrics and /healthz, as an operator's scraper and an orchestrator see them."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psutil
import pytest

from contracts import make_command
from service.bootstrap import build_worker
from service.ops.metrics import Metrics, action_label
from service.settings import Settings
from service.transport.worker import Worker
from tests.support.artifacts import manifest_for
from tests.support.broker import ADMIN_AMQP
from tests.support.bus import Bus, error, output
from tests.support.databases import sqlite_url
from tests.support.operating import http_get, samples
from tests.support.workers import Outcomes, make_settings, running


@pytest.fixture
def settings(amqp_url: str, database_url: str, storage_root: Path) -> Settings:
    """Metrics on an ephemeral port of the loopback interface."""
    return make_settings(amqp_url, database_url, storage_root, metrics_port=0, metrics_host="127.0.0.1")


def _port(worker: Worker) -> int:
    metrics = worker.operations.metrics
    assert metrics is not None and metrics.port is not None
    return metrics.port


async def test_metrics_count_commands_latency_batches_inbox_hits_and_dlq(
    worker: Worker, bus: Bus, storage_root: Path
) -> None:
    """After a mix of commands the scrape shows each by action and outcome, the replays and the dead letters."""
    outcomes = Outcomes(worker)
    for _ in range(3):
        output(await bus.call("ping"))
    assert error(await bus.call("get_artifact", {"artifact_id": "art_00000000-0000-0000-0000-000000000000"}))
    assert error(await bus.call("no_such_action"))
    register = make_command("register_artifact", {"manifest": manifest_for(storage_root, b"metrics")}, source="a")
    first = output(await bus.send(register.to_json_bytes(), register.id))
    again = output(await bus.send(register.to_json_bytes(), register.id))
    assert again == first
    assert error(await bus.send(b'{"not": "an envelope"}', "bad-1"))["code"] == "INVALID_ARGUMENT"
    await outcomes.wait(8)

    status, headers, body = await http_get(_port(worker), "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    found = samples(body.decode())
    assert found[("storage_commands_total", (("action", "ping"), ("code", "OK")))] == 3
    assert found[("storage_commands_total", (("action", "get_artifact"), ("code", "NOT_FOUND")))] == 1
    assert found[("storage_commands_total", (("action", "unknown"), ("code", "UNIMPLEMENTED")))] == 1
    assert found[("storage_commands_total", (("action", "register_artifact"), ("code", "OK")))] == 2
    assert found[("storage_commands_total", (("action", "invalid"), ("code", "INVALID_ARGUMENT")))] == 1
    assert found[("storage_command_duration_seconds_count", (("action", "ping"),))] == 3
    assert found[("storage_command_duration_seconds_sum", (("action", "ping"),))] > 0
    assert found[("storage_inbox_hits_total", (("action", "register_artifact"),))] == 1
    assert found[("storage_dlq_publishes_total", ())] == 1
    assert found[("storage_write_batch_size_count", ())] >= 1
    assert found[("storage_database_up", ())] == 1
    assert found[("storage_broker_up", ())] == 1
    assert found[("storage_in_flight_commands", ())] == 0
    assert ("process_resident_memory_bytes", ()) in found


async def test_healthz_answers_ok_while_database_and_broker_answer(worker: Worker) -> None:
    """An orchestrator's probe of /healthz gets 200 with the node and both checks."""
    status, headers, body = await http_get(_port(worker), "/healthz")
    assert status == 200
    assert headers["content-type"] == "application/json"
    health = json.loads(body)
    assert health["status"] == "ok"
    assert health["node"] == worker.settings.node_name
    assert health["database"] is True and health["broker"] is True


async def test_other_paths_and_methods_are_refused(worker: Worker) -> None:
    """A wrong path gets 404 and a POST 405, so a misconfigured probe fails loudly."""
    assert (await http_get(_port(worker), "/"))[0] == 404
    assert (await http_get(_port(worker), "/metrics", method="POST"))[0] == 405
    status, _, body = await http_get(_port(worker), "/healthz", method="HEAD")
    assert status == 200 and body == b""


async def test_healthz_is_503_when_nothing_is_connected(settings: Settings) -> None:
    """A worker whose stores and broker are not up is reported unavailable, not healthy."""
    metrics = Metrics(build_worker(settings))
    status, body = await metrics.health()
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["database"] is False and body["broker"] is False


async def test_cleanup_counts_by_scope_reach_the_scrape(worker: Worker) -> None:
    """Counts reported by the cleanup job appear per scope in the scrape."""
    assert worker.services is not None
    for observer in worker.services.on_cleanup:  # what ``run_cleanup`` tells after each scope that did something
        observer("temp_orphans", 3)
        observer("inbox", 2)
    found = samples((await http_get(_port(worker), "/metrics"))[2].decode())
    assert found[("storage_cleanup_items_total", (("scope", "temp_orphans"),))] == 3
    assert found[("storage_cleanup_items_total", (("scope", "inbox"),))] == 2


def test_unknown_action_names_do_not_become_series() -> None:
    """A typo in an agent's action name is counted under 'unknown', keeping the series count bounded."""
    assert action_label("get_artifact") == "get_artifact"
    assert action_label("get_artifact2") == "unknown"
    assert action_label(None) == "invalid"


def _listening() -> set[tuple[str, int]]:
    """The TCP addresses this process listens on."""
    return {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process().net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
    }


async def test_metrics_are_off_when_the_port_is_unset(amqp_url: str, tmp_path: Path, storage_root: Path) -> None:
    """Without STORAGE_METRICS_PORT a running, answering worker listens on no port and counts nothing."""
    before = _listening()
    async with running(make_settings(amqp_url, sqlite_url(tmp_path), storage_root)) as worker:
        async with Bus.of(worker.settings) as bus:
            output(await bus.call("ping"))
        assert _listening() - before == set()
        assert worker.operations.metrics is None


async def test_cleanup_action_counts_handled_items_but_not_dry_runs(
    worker: Worker, bus: Bus, storage_root: Path
) -> None:
    """An admin cleanup that moves an old temp file shows up per scope; a dry run before it counts nothing."""
    stale = storage_root / "temp" / "left-behind.bin"
    stale.write_bytes(b"abandoned upload")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    dry = output(await bus.call("cleanup", {"scopes": ["temp_orphans"], "dry_run": True}, amqp=ADMIN_AMQP))
    assert dry["dry_run"] is True
    found = samples((await http_get(_port(worker), "/metrics"))[2].decode())
    assert ("storage_cleanup_items_total", (("scope", "temp_orphans"),)) not in found
    output(await bus.call("cleanup", {"scopes": ["temp_orphans"]}, amqp=ADMIN_AMQP))
    found = samples((await http_get(_port(worker), "/metrics"))[2].decode())
    assert found[("storage_cleanup_items_total", (("scope", "temp_orphans"),))] == 1
