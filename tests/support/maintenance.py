"""Direct database and file access for maintenance tests: seeding states that only time would produce."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Executable, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import ArtifactManifest, utc_now
from service.settings import Settings
from service.store.engine.db import create_engine
from service.store.models import Artifact, InboxRecord, Thread, ThreadLabel, ThreadMessageRow
from tests.support.broker import ADMIN_AMQP
from tests.support.bus import Bus, output

artifacts = Artifact.__table__
threads = Thread.__table__
messages = ThreadMessageRow.__table__
thread_labels = ThreadLabel.__table__
inbox = InboxRecord.__table__


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[AsyncConnection]:
    """A connection of our own beside the worker's (committed on exit)."""
    engine = create_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            yield conn
    finally:
        await engine.dispose()


async def execute(settings: Settings, *statements: Executable) -> None:
    async with database(settings) as conn:
        for statement in statements:
            await conn.execute(statement)


async def scalar(settings: Settings, statement: Executable) -> Any:
    async with database(settings) as conn:
        return (await conn.execute(statement)).scalar()


async def scalar_rows(settings: Settings, statement: Executable) -> list[Any]:
    async with database(settings) as conn:
        return list((await conn.execute(statement)).scalars())


async def count(settings: Settings, table: Any, *conditions: Any) -> int:
    return int(await scalar(settings, select(func.count()).select_from(table).where(*conditions)))


def ago(**delta: float) -> Any:
    return utc_now() - timedelta(**delta)


def age_file(path: Path, **delta: float) -> None:
    """Make a file look as old as ``delta`` (its mtime), the way time would."""
    moment = time.time() - timedelta(**delta).total_seconds()
    os.utime(path, (moment, moment))


async def cleanup(bus: Bus, *scopes: str, dry_run: bool = False) -> dict[str, int]:
    params: dict[str, Any] = {"dry_run": dry_run}
    if scopes:
        params["scopes"] = list(scopes)
    out = output(await bus.call("cleanup", params, amqp=ADMIN_AMQP, timeout=120))
    assert out["dry_run"] is dry_run
    counts: dict[str, int] = out["counts"]
    return counts


async def insert_uploading(settings: Settings, manifest: dict[str, Any], *, at: datetime, created_by: str) -> None:
    """An artifact row left ``uploading`` since ``at``: what a registration cut short leaves behind."""
    row = {key: manifest[key] for key in ("id", "uri", "size_bytes", "checksum")}
    await execute(
        settings,
        insert(artifacts).values(
            **row,
            version=1,
            trace_id="trace-1",
            created_by=created_by,
            created_at=at,
            artifact_type="report",
            status="uploading",
            visibility="trace",
            registered_at=at,
            manifest=ArtifactManifest.model_validate(manifest).model_dump_json(),  # stored as the worker stores it
        ),
    )


async def storage_worker_cli(
    settings: Settings, command: str, *args: str, cwd: Path | None = None, **env: str
) -> tuple[int, str, str]:
    """Run ``storage-worker <command> <args>`` as its own process on ``settings``' database and storage root;
    ``env`` adds variables. Returns (exit code, stdout, stderr)."""
    environment = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "STORAGE_ROOT": settings.storage_root,
        "STORAGE_LOG_LEVEL": "WARNING",
        **env,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.cli",
        command,
        *args,
        env=environment,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
