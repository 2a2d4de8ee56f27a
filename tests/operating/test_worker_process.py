"""One worker per SQLite file, and the ``storage-worker`` command line an operator runs (run, health)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest

from service.bootstrap import build_worker
from service.settings import Settings
from service.store.engine.lock import DatabaseLocked
from service.transport.worker import Worker
from tests.support.databases import sqlite_url
from tests.support.workers import make_settings, running

_OWN_ENV = ("AMQP_URL", "DATABASE_URL")


def cli_path() -> str:
    script = Path(sys.executable).with_name("storage-worker")
    assert script.exists(), "the console script is installed with the project"
    return str(script)


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment an operator would set for this worker (nothing inherited that could change it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORAGE_") and k not in _OWN_ENV}
    env.update(
        AMQP_URL=settings.amqp_url,
        DATABASE_URL=settings.database_url,
        STORAGE_ROOT=settings.storage_root,
        STORAGE_EXCHANGE=settings.exchange,
        STORAGE_QUEUE=settings.queue,
        STORAGE_DLQ=settings.dlq,
        STORAGE_NODE_NAME=settings.node_name,
        STORAGE_CLEANUP_INTERVAL="0",
    )
    env.update(extra)
    return env


async def run_cli(*args: str, env: dict[str, str], cwd: Path, timeout_s: float = 60) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        cli_path(), *args, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
def sqlite_settings(amqp_url: str, tmp_path: Path, storage_root: Path) -> Settings:
    return make_settings(amqp_url, sqlite_url(tmp_path), storage_root)


@pytest.fixture
async def sqlite_worker(sqlite_settings: Settings) -> AsyncIterator[Worker]:
    async with running(sqlite_settings) as worker:
        yield worker


async def test_a_second_worker_on_the_same_sqlite_file_refuses_to_start(
    sqlite_worker: Worker, sqlite_settings: Settings, amqp_url: str, tmp_path: Path
) -> None:
    """A second worker on a SQLite file in use fails at start with a message saying why and what to do."""
    other_root = tmp_path / "other-files"
    other_root.mkdir()
    second = build_worker(make_settings(amqp_url, sqlite_settings.database_url, other_root))
    with pytest.raises(DatabaseLocked) as refused:
        await second.start()
    message = str(refused.value)
    assert "another storage worker" in message
    assert f"pid {os.getpid()}" in message
    assert str(tmp_path / "storage.db") in message
    assert "PostgreSQL" in message

    await sqlite_worker.stop()  # once the owner is gone, the file is free again
    async with running(make_settings(amqp_url, sqlite_settings.database_url, other_root)) as third:
        assert third.services is not None


async def test_cli_run_on_a_held_database_exits_2_with_the_reason(
    sqlite_worker: Worker, sqlite_settings: Settings, tmp_path: Path
) -> None:
    """``storage-worker run`` against a SQLite file another worker owns exits 2 and says so on stderr."""
    code, out, err = await run_cli("run", env=env_for(sqlite_settings), cwd=tmp_path)
    assert code == 2, (out, err)
    assert "another storage worker" in err
    assert "storage.db" in err


async def test_cli_health_is_0_against_a_running_worker(
    sqlite_worker: Worker, sqlite_settings: Settings, tmp_path: Path
) -> None:
    """``storage-worker health`` exits 0 with a one-line 'healthy' when the node answers its ping."""
    code, out, err = await run_cli("health", "--timeout", "10", env=env_for(sqlite_settings), cwd=tmp_path)
    assert code == 0, (out, err)
    assert out.strip().splitlines() == [f"healthy: {sqlite_settings.node_name} answered ping"]


async def test_cli_health_fails_with_one_line_when_nothing_answers(
    sqlite_settings: Settings, amqp_url: str, tmp_path: Path
) -> None:
    """No worker, no exchange or no broker: health exits non-zero with a one-line reason, within its timeout."""
    conn = await aio_pika.connect(amqp_url)
    try:
        channel = await conn.channel()
        # The exchange exists (agents declared it) but no storage node consumes from it.
        await channel.declare_exchange(sqlite_settings.exchange, aio_pika.ExchangeType.TOPIC, auto_delete=True)
        cases = {
            "no worker": env_for(sqlite_settings),
            "no exchange": env_for(sqlite_settings, STORAGE_EXCHANGE=f"{sqlite_settings.exchange}.missing"),
            "no broker": env_for(sqlite_settings, AMQP_URL="amqp://guest:guest@127.0.0.1:1/"),
        }
        results = await asyncio.gather(
            *(run_cli("health", "--timeout", "2", env=env, cwd=tmp_path) for env in cases.values())
        )
    finally:
        await conn.close()
    for (case, _), (code, out, err) in zip(cases.items(), results, strict=True):
        assert code != 0, (case, out, err)
        lines = out.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("unhealthy: "), (case, out, err)
    assert "no ping reply" in results[0][1] and "within 2s" in results[0][1]
    assert sqlite_settings.exchange in results[1][1] or "NOT_FOUND" in results[1][1]
    assert "cannot connect" in results[2][1]
