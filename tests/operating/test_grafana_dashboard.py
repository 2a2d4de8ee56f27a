"""docs/grafana/storage-worker.json against what a running worker really exports on /metrics.

A dashboard that names a metric the worker does not export draws an empty panel nobody notices until the
night it is needed; a metric the worker exports that no panel shows is one an operator never sees. Both are
checked against the exposition of a real worker, not a list kept by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.settings import Settings
from service.transport.worker import Worker
from tests.support.bus import Bus, output
from tests.support.operating import http_get
from tests.support.workers import make_settings

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "storage-worker.json"
METRIC_NAME = re.compile(r"\b((?:storage|process)_[a-zA-Z0-9_]+)\b")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created", ""),
    "info": ("_info",),
    "gauge": ("",),
}


@pytest.fixture
def settings(amqp_url: str, database_url: str, storage_root: Path) -> Settings:
    return make_settings(amqp_url, database_url, storage_root, metrics_port=0, metrics_host="127.0.0.1")


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield f"panel {panel['title']!r} target {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield f"variable {variable['name']!r}", variable["query"]["query"]


async def _exported(worker: Worker) -> tuple[set[str], set[str]]:
    """(every series name the scrape can hold, the names of the worker's own storage_* families)."""
    metrics = worker.operations.metrics
    assert metrics is not None and metrics.port is not None
    status, _, body = await http_get(metrics.port, "/metrics")
    assert status == 200
    names: set[str] = set()
    families: set[str] = set()
    for family in text_string_to_metric_families(body.decode()):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
        if family.name.startswith("storage_"):
            families.add(family.name)
    return names, families


async def test_every_query_names_a_metric_the_worker_exports(worker: Worker, bus: Bus) -> None:
    output(await bus.call("ping"))
    exported, _ = await _exported(worker)
    for where, query in _queries(_dashboard()):
        named = set(METRIC_NAME.findall(query))
        assert named, f"{where} names no metric of the worker: {query}"
        unknown = named - exported
        assert not unknown, f"{where} names {sorted(unknown)}, which the worker does not export: {query}"


async def test_every_metric_of_the_worker_is_on_the_dashboard(worker: Worker) -> None:
    _, families = await _exported(worker)
    shown = " ".join(query for _, query in _queries(_dashboard()))
    missing = {name for name in families if not re.search(rf"\b{re.escape(name)}(_[a-z]+)?\b", shown)}
    assert not missing, f"exported but on no panel of {DASHBOARD.name}: {sorted(missing)}"


def test_the_layout_is_one_grafana_can_import() -> None:
    """Unique panel ids, panels inside the 24-column grid, every panel on the worker-picking variable."""
    dashboard = _dashboard()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert 'instance=~"$instance"' in target["expr"], (panel["title"], target["expr"])
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "instance"}
