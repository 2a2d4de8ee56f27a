"""``storage-buffer`` as an operator uses it: status, replay with a progress bar, purge."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from buffer import Buffered, SpillBuffer, StorageClient
from buffer.cli import main
from service.transport.worker import Worker
from tests.support.client import client_settings
from tests.support.fake_transport import command


def test_status_reports_pending_failed_and_quarantined(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``status`` shows how many commands wait per action, which failed and why, and the quarantine count."""
    buffer = SpillBuffer(tmp_path / "buf").open()
    buffer.spill(command("save_thread", thread_id="a"))
    buffer.spill(command("put_memory", namespace=["n"], key="k", value={}))
    refused = buffer.load(buffer.spill(command("delete_thread", thread_id="gone")))
    assert refused is not None
    buffer.fail(refused, {"code": "NOT_FOUND", "message": "no thread 'gone'"})
    (buffer.folder("pending") / "stray.txt").write_text("x")

    assert main(["status", "--dir", str(tmp_path / "buf")]) == 0
    text = capsys.readouterr().out
    assert "pending    2 commands" in text
    assert "save_thread" in text and "put_memory" in text
    assert "quarantine 1 files" in text
    assert "NOT_FOUND: no thread 'gone'" in text

    assert main(["status", "--dir", str(tmp_path / "buf"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pending"] == 2 and data["by_action"] == {"save_thread": 1, "put_memory": 1}
    assert data["failed"][0]["action"] == "delete_thread"


def test_purge_needs_a_choice_and_confirmation_for_pending(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``purge`` refuses to guess, refuses to drop undelivered commands without --yes, and then does it."""
    buffer = SpillBuffer(tmp_path / "buf").open()
    for _ in range(3):
        buffer.spill(command())
    directory = str(tmp_path / "buf")
    assert main(["purge", "--dir", directory]) == 2
    assert main(["purge", "--dir", directory, "--pending"]) == 2
    assert len(buffer.entries()) == 3
    assert main(["purge", "--dir", directory, "--pending", "--yes"]) == 0
    assert "pending: 3 removed" in capsys.readouterr().out
    assert buffer.entries() == []


def _to(worker: Worker, buffer_dir: Path) -> list[str]:
    """The options that point ``storage-buffer replay`` at a buffer and at the worker's broker and exchange."""
    return ["--dir", str(buffer_dir), "--amqp-url", worker.settings.amqp_url, "--exchange", worker.settings.exchange]


async def _run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "buffer.cli", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_replay_command_delivers_buffered_commands(
    worker: Worker, buffer_dir: Path, closed_amqp_url: str
) -> None:
    """An operator's ``storage-buffer replay`` delivers what an agent buffered, with a progress bar, exit 0."""
    down = client_settings(worker, buffer_dir, amqp_url=closed_amqp_url, retries=0)
    async with StorageClient(**down, trace_id="trace-cli") as agent:
        outs = [await agent.upload_artifact(f"cli {i}".encode(), artifact_type="report") for i in range(3)]
    assert all(isinstance(o, Buffered) for o in outs)

    unreachable = await _run_cli("replay", "--dir", str(buffer_dir), "--amqp-url", closed_amqp_url, "--exchange", "x")
    assert unreachable[0] == 1 and "remaining 3" in unreachable[1]

    code, out, err = await _run_cli("replay", *_to(worker, buffer_dir))
    assert code == 0, err
    assert "replayed 3, failed 0, remaining 0" in out
    assert "3/3" in err, "the progress bar reached the end"
    async with StorageClient(**client_settings(worker, buffer_dir), trace_id="trace-cli") as agent:
        for o in outs:
            assert isinstance(o, Buffered)
            assert (await agent.get_artifact(o.params["manifest"]["id"])).manifest.status == "completed"


async def test_replay_command_puts_orphaned_files_back(worker: Worker, buffer_dir: Path, closed_amqp_url: str) -> None:
    """``storage-buffer replay --storage-root`` registers a buffered upload whose staged file the worker's
    temp_orphans moved away, from the buffer's copy of its bytes."""
    down = client_settings(worker, buffer_dir, amqp_url=closed_amqp_url, retries=0)
    async with StorageClient(**down, trace_id="trace-cli-orphan") as agent:
        out = await agent.upload_artifact(b"kept by the buffer", artifact_type="report")
    assert isinstance(out, Buffered) and out.file_copy is not None
    staged = Path(out.params["manifest"]["uri"].removeprefix("file://"))
    orphans = staged.parent.parent / "orphans" / "temp"
    orphans.mkdir(parents=True, exist_ok=True)
    staged.rename(orphans / staged.name)

    code, out_text, err = await _run_cli(
        "replay",
        *_to(worker, buffer_dir),
        "--storage-root",
        worker.settings.storage_root,
        "--no-progress",
    )
    assert code == 0, err
    assert "replayed 1, failed 0, remaining 0" in out_text
    async with StorageClient(**client_settings(worker, buffer_dir), trace_id="trace-cli-orphan") as agent:
        got = await agent.get_artifact(out.params["manifest"]["id"])
    assert Path(got.manifest.uri.removeprefix("file://")).read_bytes() == b"kept by the buffer"
