"""Scrubbing (issue 20, item 6): the ``verify_checksums`` cleanup scope, as its owner, strangers and admins see it.

Over the real broker on both databases: through the client library (an agent uploads and reads, an admin
cleans up) and over raw AMQP (a stranger's reads, the scope's counts).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from buffer import StorageClient
from contracts import (
    ArtifactFailure,
    CleanupScope,
    FailedPrecondition,
    PermissionDenied,
    RegisterArtifactOutput,
)
from service.settings import Settings
from tests.support.artifacts import manifest_for, new_artifact_id
from tests.support.broker import ADMIN_AMQP
from tests.support.bus import Bus, error, output
from tests.support.client import client_settings
from tests.support.maintenance import ago, artifacts, cleanup, database, execute, storage_worker_cli
from tests.support.operating import http_get, samples
from tests.support.workers import Workers, running

VERIFY = "verify_checksums"
OWNER = {"requester_id": "agent-test", "requester_trace_id": "trace-1"}
STRANGER = {"requester_id": "stranger", "requester_trace_id": "trace-other"}


async def _register(bus: Bus, root: Path, data: bytes, **overrides: Any) -> dict[str, Any]:
    manifest = manifest_for(root, data, **overrides)
    out: dict[str, Any] = output(await bus.call("register_artifact", {"manifest": manifest}, timeout=120))
    return out


def _path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


async def _verified_at(settings: Settings, *ids: str) -> dict[str, Any]:
    async with database(settings) as conn:
        rows = await conn.execute(select(artifacts.c.id, artifacts.c.verified_at).where(artifacts.c.id.in_(ids)))
        return {row.id: row.verified_at for row in rows}


async def _registered_in_order(settings: Settings, ids: list[str]) -> None:
    """Registration times a minute apart, in this order (the queue's order among never-verified rows)."""
    for minutes, artifact_id in zip(range(len(ids), 0, -1), ids, strict=True):
        await execute(
            settings, update(artifacts).where(artifacts.c.id == artifact_id).values(registered_at=ago(minutes=minutes))
        )


async def test_through_the_client_a_good_file_is_verified_and_an_altered_one_reads_corrupted(
    workers: Workers, tmp_path: Path
) -> None:
    """An agent uploads two reports; one file is altered on disk. After an admin's cleanup of verify_checksums the
    good one keeps ``completed`` and gets ``verified_at``; the altered one reads ``failed`` with details.reason
    ``corrupted`` on get_artifact, its get_artifact_uri is FAILED_PRECONDITION (reason corrupted), and it lists as
    failed. Its file is left where it is."""
    worker, _ = await workers.start()
    agent_settings = client_settings(worker, tmp_path / "agent")
    admin_settings = client_settings(worker, tmp_path / "admin", user_id=True)
    async with StorageClient(**agent_settings, trace_id="trace-1") as agent, StorageClient(**admin_settings) as admin:
        good = await agent.upload_artifact(b"a good report", artifact_type="report")
        bad = await agent.upload_artifact(b"a report to rot", artifact_type="report")
        assert isinstance(good, RegisterArtifactOutput) and isinstance(bad, RegisterArtifactOutput)
        _path(bad.uri).write_bytes(b"a report to ROT")  # the same size, other bytes: bit rot

        cleaned = await admin.cleanup(scopes=[CleanupScope.VERIFY_CHECKSUMS])
        assert cleaned.counts == {VERIFY: 2}

        kept = await agent.get_artifact(good.artifact_id)
        assert kept.manifest.status == "completed" and kept.details is None
        rotten = await agent.get_artifact(bad.artifact_id)
        assert rotten.manifest.status == "failed"
        assert rotten.details is not None and rotten.details.reason is ArtifactFailure.CORRUPTED
        with pytest.raises(FailedPrecondition) as refused:
            await agent.get_artifact_uri(bad.artifact_id)
        assert refused.value.details["reason"] == "corrupted" and refused.value.retryable is False
        assert (await agent.get_artifact_uri(good.artifact_id)).uri == good.uri
        failed = await agent.list_artifacts(trace_id="trace-1", status="failed")
        assert [m.id for m in failed.artifacts] == [bad.artifact_id]
    stamped = await _verified_at(worker.settings, good.artifact_id, bad.artifact_id)
    assert stamped[good.artifact_id] is not None and stamped[bad.artifact_id] is None
    assert _path(bad.uri).read_bytes() == b"a report to ROT", "the corrupted file stays for an operator to look at"


async def test_a_changed_size_is_corrupted_too_and_strangers_learn_nothing(
    bus: Bus, storage_root: Path, settings: Settings
) -> None:
    """A file grown on disk is corrupted as well. Over raw AMQP the owner reads the reason; a requester of another
    trace gets the refusal it got before (no reason, no status), and never sees it listed."""
    private = await _register(bus, storage_root, b"private bytes", visibility="private")
    shared = await _register(bus, storage_root, b"shared bytes", visibility="trace")
    for registered in (private, shared):
        with _path(registered["uri"]).open("ab") as grown:
            grown.write(b" and more")
    assert await cleanup(bus, VERIFY) == {VERIFY: 2}

    for registered in (private, shared):
        artifact_id = registered["artifact_id"]
        got = output(await bus.call("get_artifact", {"artifact_id": artifact_id}, context=OWNER))
        assert got["manifest"]["status"] == "failed" and got["details"] == {"reason": "corrupted"}
        uri = error(await bus.call("get_artifact_uri", {"artifact_id": artifact_id}, context=OWNER))
        assert uri["code"] == "FAILED_PRECONDITION"
        assert uri["details"] == {"artifact_id": artifact_id, "status": "failed", "reason": "corrupted"}
        for action in ("get_artifact", "get_artifact_uri"):
            refused = error(await bus.call(action, {"artifact_id": artifact_id}, context=STRANGER))
            assert refused["code"] == "PERMISSION_DENIED", refused
            assert "corrupted" not in json.dumps(refused) and "failed" not in json.dumps(refused)
    listed = output(await bus.call("list_artifacts", {"status": "failed"}, context=STRANGER))
    assert listed["count"] == 0


async def test_each_run_takes_a_bounded_batch_oldest_verified_first(workers: Workers) -> None:
    """With STORAGE_VERIFY_BATCH=2, five artifacts are verified two per run: never-verified ones first, in
    registration order, then the one verified longest ago."""
    worker, bus = await workers.start(verify_batch=2)
    root = Path(worker.settings.storage_root.removeprefix("file://"))
    ids = [(await _register(bus, root, f"report {n}".encode()))["artifact_id"] for n in range(5)]
    await _registered_in_order(worker.settings, ids)

    runs = []
    for _ in range(4):
        before = await _verified_at(worker.settings, *ids)
        assert await cleanup(bus, VERIFY) == {VERIFY: 2}
        after = await _verified_at(worker.settings, *ids)
        runs.append(sorted(ids.index(i) for i in ids if after[i] != before[i]))
    assert runs == [[0, 1], [2, 3], [0, 4], [1, 2]]


async def test_a_run_stops_at_its_bytes_but_reads_at_least_one_file(workers: Workers) -> None:
    """STORAGE_VERIFY_MAX_BYTES bounds a run's reading: 10-byte files with a 25-byte bound go two a run; a file
    larger than the bound is still verified, alone in its run."""
    worker, bus = await workers.start(verify_max_bytes=25)
    root = Path(worker.settings.storage_root.removeprefix("file://"))
    ids = [(await _register(bus, root, data))["artifact_id"] for data in (b"0123456789", b"abcdefghij", b"x" * 100)]
    await _registered_in_order(worker.settings, ids)
    assert await cleanup(bus, VERIFY, dry_run=True) == {VERIFY: 2}
    assert all(v is None for v in (await _verified_at(worker.settings, *ids)).values()), "a dry run records nothing"
    assert await cleanup(bus, VERIFY) == {VERIFY: 2}
    assert await cleanup(bus, VERIFY) == {VERIFY: 1}
    assert all(v is not None for v in (await _verified_at(worker.settings, *ids)).values())


async def test_a_missing_file_is_handled_as_missing_files_does(
    bus: Bus, storage_root: Path, settings: Settings
) -> None:
    """No file: registered over an hour ago → failed, details.reason ``missing``; registered just now (its move
    may be under way) → left completed for the next run. Both are counted as checked."""
    old = await _register(bus, storage_root, b"lost long ago")
    young = await _register(bus, storage_root, b"lost just now")
    for registered in (old, young):
        _path(registered["uri"]).unlink()
    await execute(
        settings, update(artifacts).where(artifacts.c.id == old["artifact_id"]).values(registered_at=ago(hours=2))
    )
    assert await cleanup(bus, VERIFY) == {VERIFY: 2}

    lost = output(await bus.call("get_artifact", {"artifact_id": old["artifact_id"]}, context=OWNER))
    assert lost["manifest"]["status"] == "failed" and lost["details"] == {"reason": "missing"}
    uri = error(await bus.call("get_artifact_uri", {"artifact_id": old["artifact_id"]}, context=OWNER))
    assert uri["code"] == "FAILED_PRECONDITION" and uri["details"]["reason"] == "missing"
    waiting = output(await bus.call("get_artifact", {"artifact_id": young["artifact_id"]}, context=OWNER))
    assert waiting["manifest"]["status"] == "completed" and waiting["details"] is None


async def test_tombstones_are_not_verified(bus: Bus, storage_root: Path) -> None:
    """A deleted artifact (its file moved to orphans/) is neither read nor counted by the scrubber."""
    kept = await _register(bus, storage_root, b"kept")
    deleted = await _register(bus, storage_root, b"deleted")
    output(await bus.call("delete_artifact", {"artifact_id": deleted["artifact_id"]}, amqp=ADMIN_AMQP))
    assert await cleanup(bus, VERIFY) == {VERIFY: 1}
    assert (
        output(await bus.call("get_artifact", {"artifact_id": kept["artifact_id"]}, context=OWNER))["details"] is None
    )


async def test_only_admins_run_the_scope(workers: Workers, tmp_path: Path) -> None:
    """An agent that is not in STORAGE_ADMINS asking for verify_checksums is refused, and nothing is verified."""
    worker, bus = await workers.start()
    root = Path(worker.settings.storage_root.removeprefix("file://"))
    registered = await _register(bus, root, b"not yours to scrub")
    async with StorageClient(**client_settings(worker, tmp_path / "agent"), trace_id="trace-1") as agent:
        with pytest.raises(PermissionDenied) as refused:
            await agent.cleanup(scopes=[VERIFY])
    assert refused.value.details["action"] == "cleanup"
    raw = error(await bus.call("cleanup", {"scopes": [VERIFY]}, context={"requester_id": "some-agent"}))
    assert raw["code"] == "PERMISSION_DENIED"
    assert (await _verified_at(worker.settings, registered["artifact_id"]))[registered["artifact_id"]] is None


async def test_a_misspelt_scope_is_invalid_argument(bus: Bus, storage_root: Path, settings: Settings) -> None:
    """``verify_checksum`` (no s) beside the real scope is INVALID_ARGUMENT naming the scopes field; nothing runs."""
    registered = await _register(bus, storage_root, b"untouched")
    refused = error(await bus.call("cleanup", {"scopes": [VERIFY, "verify_checksum"]}, amqp=ADMIN_AMQP))
    assert refused["code"] == "INVALID_ARGUMENT" and "scopes" in json.dumps(refused["details"])
    assert (await _verified_at(settings, registered["artifact_id"]))[registered["artifact_id"]] is None


async def test_metrics_count_files_by_result_and_bytes(workers: Workers) -> None:
    """A scrape after a run shows the files verified by result and the bytes read."""
    worker, bus = await workers.start(metrics_port=0, metrics_host="127.0.0.1")
    root = Path(worker.settings.storage_root.removeprefix("file://"))
    good = await _register(bus, root, b"twelve bytes")
    bad = await _register(bus, root, b"seven b")
    _path(bad["uri"]).write_bytes(b"SEVEN B")
    gone = await _register(bus, root, b"gone")
    _path(gone["uri"]).unlink()
    assert await cleanup(bus, VERIFY) == {VERIFY: 3}
    metrics = worker.operations.metrics  # type: ignore[attr-defined]
    status, _, body = await http_get(metrics.port, "/metrics")
    assert status == 200 and good
    found = samples(body.decode())
    assert found[("storage_verified_files_total", (("result", "ok"),))] == 1
    assert found[("storage_verified_files_total", (("result", "corrupted"),))] == 1
    assert found[("storage_verified_files_total", (("result", "missing"),))] == 1
    assert found[("storage_verified_bytes_total", ())] == len(b"twelve bytes") + len(b"SEVEN B")
    assert found[("storage_cleanup_items_total", (("scope", VERIFY),))] == 3


# -- the event loop while a large file is read ---------------------------------------------------------------------

BIG_FILE_BYTES = 64 * 1024 * 1024
BIG_COPIES = 16
"""Sixteen rows on hard links of one 64 MiB file: a run reads 1 GiB without writing it to disk sixteen times."""


async def _big_artifacts(bus: Bus, worker: Any) -> list[str]:
    root = Path(worker.settings.storage_root.removeprefix("file://"))
    first = await _register(bus, root, os.urandom(1024) * (BIG_FILE_BYTES // 1024))
    source = _path(first["uri"])
    ids = [first["artifact_id"]]
    async with database(worker.settings) as conn:
        row = dict((await conn.execute(select(artifacts).where(artifacts.c.id == ids[0]))).one()._mapping)
        for _ in range(BIG_COPIES - 1):
            artifact_id = new_artifact_id()
            link = source.with_name(artifact_id + source.suffix)
            os.link(source, link)
            text = row["manifest"].replace(row["id"], artifact_id).replace(row["uri"], link.as_uri())
            await conn.execute(
                insert(artifacts).values({**row, "id": artifact_id, "uri": link.as_uri(), "manifest": text})
            )
            ids.append(artifact_id)
    return ids


async def test_pings_answer_within_a_second_while_a_gigabyte_is_verified(workers: Workers) -> None:
    """While the scope re-hashes 1 GiB (sixteen 64 MiB files), every ping sent meanwhile is answered within 1 s."""
    worker, bus = await workers.start(max_file_bytes=2 * BIG_FILE_BYTES, verify_max_bytes=BIG_COPIES * BIG_FILE_BYTES)
    ids = await _big_artifacts(bus, worker)
    job = asyncio.create_task(cleanup(bus, VERIFY))
    pings: list[float] = []
    while not job.done():
        began = time.monotonic()
        output(await bus.call("ping", timeout=10))
        pings.append(time.monotonic() - began)
        await asyncio.sleep(0.02)
    assert (await job) == {VERIFY: BIG_COPIES}
    print(f"\n{len(pings)} pings during the run, slowest {max(pings) * 1000:.0f} ms")
    assert len(pings) >= 5, f"the run was too quick to measure anything ({len(pings)} pings)"
    assert max(pings) < 1.0, f"slowest ping took {max(pings):.2f}s"
    assert all(v is not None for v in (await _verified_at(worker.settings, *ids)).values())


# -- storage-worker verify -----------------------------------------------------------------------------------------


async def test_cli_verifies_everything_with_a_progress_bar_and_exits_1_on_corruption(
    settings: Settings, storage_root: Path
) -> None:
    """`storage-worker verify --all` reads every completed file with a progress bar on stderr, exit 0; with a file
    altered it names the corrupted artifact and exits 1; without --all it reads one batch (STORAGE_VERIFY_BATCH)."""
    async with running(settings), Bus.of(settings) as bus:
        registered = [await _register(bus, storage_root, f"cli report {n}".encode()) for n in range(3)]

    code, out, err = await storage_worker_cli(settings, "verify", "--all")
    assert code == 0, err
    assert "verify 3 files" in err and "100%" in err, "the progress bar reached the end"
    assert re.search(r"^\s+ok\s+3$", out, re.M) and re.search(r"^\s+corrupted\s+0$", out, re.M)

    victim = registered[1]
    _path(victim["uri"]).write_bytes(b"cli REPORT 1")
    code, out, err = await storage_worker_cli(settings, "verify", "--all", "--json", "--no-progress")
    assert code == 1 and "verify 3 files" not in err, "--no-progress draws no bar"
    assert f"artifact {victim['artifact_id']}" in err and "marked failed (corrupted)" in err, "the warning is logged"
    result = json.loads(out)
    assert (result["checked"], result["ok"], result["corrupted"]) == (3, 2, 1)
    assert result["corrupted_ids"] == [victim["artifact_id"]]

    code, out, _ = await storage_worker_cli(settings, "verify", "--json", "--no-progress", STORAGE_VERIFY_BATCH="1")
    assert code == 0 and json.loads(out)["checked"] == 1, "the failed one is no longer in the queue"
    async with running(settings), Bus.of(settings) as bus:
        got = output(await bus.call("get_artifact", {"artifact_id": victim["artifact_id"]}, context=OWNER))
    assert got["details"] == {"reason": "corrupted"}
