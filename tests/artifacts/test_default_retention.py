"""STORAGE_DEFAULT_RETENTION (issue 20, item 3): a manifest that names no retention gets its type's default.

The seed systems kept reports 30 days unless told otherwise. An agent that sends no retention now gets the
operator's policy for its artifact type, and the manifest it reads back says which retention was applied; a
retention the agent does give always wins. A policy the worker cannot read stops it at start with one line.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from buffer import StorageClient
from contracts import RegisterArtifactOutput
from service.retention_defaults import DefaultRetention
from service.startup.codes import StartupError
from service.startup.settings import load_settings
from tests.support.bus import error, output
from tests.support.client import client_settings
from tests.support.wire import register
from tests.support.workers import Workers

POLICY = "report=30d, cache=1s, *=infinite"


def test_the_policy_reads_type_entries_and_a_fallback() -> None:
    policy = DefaultRetention.parse(POLICY)
    assert policy.for_type("report") == "30d"
    assert policy.for_type("cache") == "1s"
    assert policy.for_type("anything-else") == "infinite"
    assert str(policy) == "report=30d,cache=1s,*=infinite"
    assert DefaultRetention.parse("report=P1M").for_type("other") == "infinite", "no * entry: infinite"
    assert DefaultRetention.parse("").for_type("report") == "infinite"


@pytest.mark.parametrize(
    ("policy", "says"),
    [
        ("report", "'report' is not <artifact_type>=<retention>"),
        ("report=", "'report=' is not <artifact_type>=<retention>"),
        ("=30d", "'=30d' is not <artifact_type>=<retention>"),
        ("report=30x", "retention '30x' is not 'infinite'"),
        ("report=0s", "must be longer than zero"),
        ("report=30d,report=1d", "'report' is given twice"),
        ("*=1d,*=2d", "'*' is given twice"),
        ("x" * 51 + "=1d", "longer than 50 characters"),
    ],
)
def test_a_wrong_policy_stops_the_worker_with_one_line(monkeypatch: pytest.MonkeyPatch, policy: str, says: str) -> None:
    monkeypatch.setenv("STORAGE_DEFAULT_RETENTION", policy)
    with pytest.raises(StartupError) as refused:
        load_settings()
    line = str(refused.value)
    assert "\n" not in line and line.startswith("STORAGE_DEFAULT_RETENTION: ") and says in line, line


async def test_a_manifest_without_retention_gets_its_types_default(workers: Workers, storage_root: Path) -> None:
    """Over raw AMQP: the reply, get_artifact and list_artifacts show the applied retention; a given one wins;
    the applied default really expires the artifact (cache=1s is NOT_FOUND, reason expired, a second later)."""
    _, bus = await workers.start(default_retention=POLICY, cleanup_interval_s=0)
    report, out = await register(bus, storage_root, b"quarterly report", artifact_type="report")
    assert "retention" not in report
    assert out["manifest"]["retention"] == "30d"
    stored = output(await bus.call("get_artifact", {"artifact_id": report["id"]}))["manifest"]
    assert stored["retention"] == "30d"

    given, out = await register(bus, storage_root, b"kept a week", artifact_type="report", retention="7d")
    assert out["manifest"]["retention"] == "7d"
    forever, out = await register(bus, storage_root, b"kept forever", artifact_type="report", retention="infinite")
    assert out["manifest"]["retention"] == "infinite"
    other, out = await register(bus, storage_root, b"a plan", artifact_type="plan")
    assert out["manifest"]["retention"] == "infinite"
    cache, out = await register(bus, storage_root, b"a cached answer", artifact_type="cache")
    assert out["manifest"]["retention"] == "1s"

    listed = output(await bus.call("list_artifacts", {}))["artifacts"]
    assert {m["id"]: m["retention"] for m in listed} == {
        report["id"]: "30d",
        given["id"]: "7d",
        forever["id"]: "infinite",
        other["id"]: "infinite",
        cache["id"]: "1s",
    }
    await asyncio.sleep(1.2)
    gone = error(await bus.call("get_artifact", {"artifact_id": cache["id"]}))
    assert gone["code"] == "NOT_FOUND" and gone["details"]["reason"] == "expired"
    assert output(await bus.call("get_artifact", {"artifact_id": report["id"]}))["manifest"]["retention"] == "30d"


async def test_the_client_leaves_retention_to_the_worker(workers: Workers, tmp_path: Path) -> None:
    """Through the client library: upload_artifact without retention sends none, so the policy applies."""
    worker, _ = await workers.start(default_retention=POLICY)
    async with StorageClient(**client_settings(worker, tmp_path / "buffer"), trace_id="trace-r") as storage:
        report = await storage.upload_artifact(b"report body", artifact_type="report", filename="r.md")
        plan = await storage.upload_artifact(b"plan body", artifact_type="plan", filename="p.md")
        pinned = await storage.upload_artifact(b"pinned", artifact_type="report", filename="x.md", retention="12h")
        for result, applied in ((report, "30d"), (plan, "infinite"), (pinned, "12h")):
            assert isinstance(result, RegisterArtifactOutput), result
            got = await storage.get_artifact(result.artifact_id)
            assert got.manifest.retention == applied
