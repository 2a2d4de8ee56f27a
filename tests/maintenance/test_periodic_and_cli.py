"""The worker cleans up by itself every interval; ``storage-worker cleanup`` does it from the command line."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path

from sqlalchemy import update

from service.settings import Settings
from tests.support.bus import Bus, output
from tests.support.databases import sqlite_url
from tests.support.maintenance import ago, count, execute, messages, storage_worker_cli, threads
from tests.support.workers import make_settings, running


async def _expired_thread(settings: Settings) -> str:
    """A thread saved through the worker, whose TTL has since run out."""
    thread_id = f"ttl-{uuid.uuid4().hex}"
    async with Bus.of(settings) as bus:
        saved = await bus.call(
            "save_thread",
            {"thread_id": thread_id, "messages": [{"role": "user", "content": "hi"}], "ttl_seconds": 60},
        )
        output(saved)
    await execute(settings, update(threads).where(threads.c.id == thread_id).values(expires_at=ago(seconds=1)))
    return thread_id


async def test_worker_runs_cleanup_every_interval(amqp_url: str, database_url: str, storage_root: Path) -> None:
    """With STORAGE_CLEANUP_INTERVAL set, an expired thread disappears from the database with no command sent."""
    settings = make_settings(amqp_url, database_url, storage_root, cleanup_interval_s=0.2)
    async with running(settings) as worker:
        thread_id = await _expired_thread(settings)
        seen = worker.maintenance.runs
        await asyncio.wait_for(worker.maintenance.wait_for_run(seen + 1), 60)  # the run under way may predate it
        await asyncio.wait_for(worker.maintenance.wait_for_run(seen + 2), 60)
        assert await count(settings, threads, threads.c.id == thread_id) == 0
        assert await count(settings, messages, messages.c.thread_id == thread_id) == 0


async def test_cli_cleanup_dry_run_then_for_real(
    amqp_url: str, database_url: str, storage_root: Path, tmp_path: Path
) -> None:
    """`storage-worker cleanup --dry-run --scope` counts without changing anything; without --dry-run it cleans."""
    settings = make_settings(amqp_url, database_url, storage_root)
    async with running(settings):
        thread_id = await _expired_thread(settings)

    code, out, err = await storage_worker_cli(
        settings, "cleanup", "--dry-run", "--scope", "expired_threads", "--scope", "inbox", "--json", cwd=tmp_path
    )
    assert code == 0, err
    assert json.loads(out) == {"dry_run": True, "counts": {"expired_threads": 1, "inbox": 0}}
    assert await count(settings, threads, threads.c.id == thread_id) == 1

    code, out, err = await storage_worker_cli(settings, "cleanup", "--scope", "expired_threads", cwd=tmp_path)
    assert code == 0, err
    assert "expired_threads  1" in out
    assert await count(settings, threads, threads.c.id == thread_id) == 0


async def test_cli_cleanup_refuses_while_a_worker_owns_the_sqlite_file(
    amqp_url: str, storage_root: Path, tmp_path: Path
) -> None:
    """With SQLite the command line cannot clean behind a running worker's back; it says so and how to proceed."""
    settings = make_settings(amqp_url, sqlite_url(tmp_path), storage_root)
    async with running(settings):
        code, out, err = await storage_worker_cli(settings, "cleanup", "--dry-run", cwd=tmp_path)
    assert code == 2 and out == ""
    assert "refused, a running worker owns the SQLite database" in err
    assert "`cleanup` action" in err and str(os.getpid()) in err
