"""Startup recovery: a registration cut between commit and file move, and the other half-done states."""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select, update

from contracts import make_command
from service.transport.worker import Worker
from tests.support.artifacts import manifest_for, write_temp
from tests.support.bus import Bus, output
from tests.support.maintenance import age_file, ago, artifacts, cleanup, execute, insert_uploading, scalar
from tests.support.worker_process import WorkerProcess, worker_env
from tests.support.workers import delete_topology, make_settings, running

READER = {"requester_trace_id": "trace-1"}


def _path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


async def test_registration_killed_between_commit_and_move_is_repaired_on_restart(
    amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    """A worker SIGKILLed right after committing a registration leaves the file in temp/; the next start moves
    it into place before taking commands, the agent gets its reply, and get_artifact serves the file."""
    env = worker_env(amqp_url, tmp_path, DATABASE_URL=database_url, STORAGE_MIGRATE_ON_START="true")
    settings = make_settings(amqp_url, database_url, tmp_path / "files")
    async with WorkerProcess(env, tmp_path) as worker:
        await worker.start(faults="after_commit")
        bus = await Bus(amqp_url, worker.exchange, worker.dlq).open()
        try:
            data = b"quarterly risk report " + uuid.uuid4().bytes
            manifest = manifest_for(worker.storage_root, data, filename="report.txt")
            temp = _path(manifest["uri"])
            final = (worker.storage_root / "artifacts" / "trace-1" / f"{manifest['id']}.txt").resolve()
            command = make_command("register_artifact", {"manifest": manifest}, source="agent-test")
            reply = await bus.publish(command.to_json_bytes(), correlation_id=command.id)
            assert reply is not None

            assert await worker.wait_exit(60) == -signal.SIGKILL, worker.output()
            assert worker.current.count("fault hook after_commit fired") == 1
            assert not reply.done(), "the worker died before replying"
            status = await scalar(settings, select(artifacts.c.status).where(artifacts.c.id == manifest["id"]))
            assert status == "completed", "the registration committed"
            assert temp.exists() and not final.exists(), "the crash left the file in temp/"

            await worker.start()
            assert worker.current.count(manifest["id"]) >= 1, "recovery logged the move"
            answered = output(await asyncio.wait_for(reply, 60))
            assert answered["registered"] is True and _path(answered["uri"]) == final
            got = output(await bus.call("get_artifact", {"artifact_id": manifest["id"]}, context=READER))
            assert got["manifest"]["status"] == "completed" and _path(got["manifest"]["uri"]) == final
            assert final.read_bytes() == data and not temp.exists()
            assert await worker.terminate() == 0
        finally:
            await bus.close()
            await delete_topology(worker)


async def test_start_repairs_every_half_done_state_and_logs_each(
    amqp_url: str, database_url: str, storage_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before consuming, a starting worker moves stranded files into place, fails rows without files and stale
    uploads, sweeps old temp files, and logs every one of these actions."""
    settings = make_settings(amqp_url, database_url, storage_root)
    async with running(settings), Bus.of(settings) as bus:
        lost = output(await bus.call("register_artifact", {"manifest": manifest_for(storage_root, b"lost bytes")}))
        stranded = output(await bus.call("register_artifact", {"manifest": manifest_for(storage_root, b"stranded")}))

    _path(lost["uri"]).unlink()
    _path(stranded["uri"]).rename(storage_root / "temp" / "upload-7.tmp")
    uploading = manifest_for(storage_root, b"never finished", status="uploading")
    await insert_uploading(settings, uploading, at=ago(hours=2), created_by="agent")
    abandoned = write_temp(storage_root, b"abandoned")
    age_file(abandoned, hours=3)
    age_file(_path(uploading["uri"]), hours=3)
    fresh = write_temp(storage_root, b"upload in progress")

    caplog.set_level(logging.INFO, logger="service")
    async with running(settings) as second, Bus.of(settings) as bus:
        assert second.maintenance.recovered == {
            "moved_into_place": 1,
            "failed_without_file": 1,
            "stale_uploading_failed": 1,
            "temp_to_orphans": 2,
        }
        status = {}
        for artifact_id in (lost["artifact_id"], stranded["artifact_id"], uploading["id"]):
            got = output(await bus.call("get_artifact", {"artifact_id": artifact_id}, context=READER))
            status[artifact_id] = got["manifest"]["status"]
    assert status == {lost["artifact_id"]: "failed", stranded["artifact_id"]: "completed", uploading["id"]: "failed"}
    assert _path(stranded["uri"]).read_bytes() == b"stranded"
    assert not abandoned.exists() and (storage_root / "orphans" / "temp" / abandoned.name).exists()
    assert fresh.exists()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for artifact_id in (lost["artifact_id"], stranded["artifact_id"], uploading["id"]):
        assert artifact_id in logged
    assert abandoned.name in logged


async def test_a_clean_start_repairs_nothing(worker: Worker) -> None:
    """A worker starting on healthy stores reports nothing to repair."""
    assert worker.maintenance.recovered == {
        "moved_into_place": 0,
        "failed_without_file": 0,
        "stale_uploading_failed": 0,
        "temp_to_orphans": 0,
    }


async def test_rows_registered_long_before_the_newest_are_left_to_the_periodic_scope(
    amqp_url: str, database_url: str, storage_root: Path
) -> None:
    """Startup checks the newest day of registrations only; an old row without a file is the missing_files scope's."""
    settings = make_settings(amqp_url, database_url, storage_root)
    async with running(settings), Bus.of(settings) as bus:
        old = output(await bus.call("register_artifact", {"manifest": manifest_for(storage_root, b"old")}))
        output(await bus.call("register_artifact", {"manifest": manifest_for(storage_root, b"new")}))
    _path(old["uri"]).unlink()
    await execute(
        settings, update(artifacts).where(artifacts.c.id == old["artifact_id"]).values(registered_at=ago(days=3))
    )
    async with running(settings) as second, Bus.of(settings) as bus:
        assert second.maintenance.recovered is not None
        assert second.maintenance.recovered["failed_without_file"] == 0
        assert (await cleanup(bus, "missing_files")) == {"missing_files": 1}
