"""Case 4: the database becomes unavailable in the middle of a stream of registrations.

SQLite: another process takes the write lock (``BEGIN EXCLUSIVE``, what an operator's open shell or a
backup tool does) and holds it past the worker's busy timeout. PostgreSQL: a private cluster (never the
machine's shared one) is shut down immediately, like a crash, and started again. Commands meanwhile must
get a retryable ``UNAVAILABLE`` instead of crashing the worker; the client retries or buffers them; after
recovery every command takes effect exactly once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from contextlib import AsyncExitStack, closing
from pathlib import Path

import pytest

from service.store.engine.db import SQLITE_BUSY_TIMEOUT_MS
from tests.support.client_load import ClientLoad, client_for
from tests.support.private_postgres import PostgresError, PrivatePostgres
from tests.support.requirements import missing, require_postgres_server
from tests.support.store_view import StoreView
from tests.support.tally import Tally
from tests.support.worker_process import SpawnWorker

pytestmark = pytest.mark.faults

COMMANDS = 1000
OUTAGE_S = 8.0
LOCK_S = 2.5 * SQLITE_BUSY_TIMEOUT_MS / 1000
"""Longer than two busy timeouts: at least two write batches give up before the lock goes away."""
SETTLE_S = 120.0


def hold_write_lock(db_file: Path, seconds: float, locked: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
    """Take SQLite's write lock from another connection and keep it ``seconds`` (runs in a thread)."""
    with closing(sqlite3.connect(db_file, timeout=60, isolation_level=None)) as conn:
        conn.execute("BEGIN EXCLUSIVE")
        loop.call_soon_threadsafe(locked.set)
        time.sleep(seconds)  # the outage itself
        conn.execute("ROLLBACK")


async def make_immutable(files: list[Path], on: bool) -> None:
    """``chattr +i`` (or ``-i``): not even root may write the files (what a read-only remount looks like)."""
    flag = "+i" if on else "-i"
    present = [str(f) for f in files if f.exists()]
    proc = await asyncio.create_subprocess_exec(
        "chattr", flag, *present, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise OSError(f"chattr {flag} failed: {out.decode(errors='replace').strip()}")


def immutable_files_supported(folder: Path) -> str | None:
    """None when ``chattr +i`` works on this filesystem for this user, else why not."""
    import subprocess

    probe = folder / "chattr-probe"
    probe.write_text("x")
    try:
        done = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return "chattr is not installed"
    if done.returncode != 0:
        return f"chattr +i is not possible here: {done.stderr.strip()}"
    subprocess.run(["chattr", "-i", str(probe)], check=True)
    probe.unlink()
    return None


@pytest.mark.parametrize("backend", ["sqlite-locked", "sqlite-readonly", "postgres-stopped"])
async def test_database_outage_gives_unavailable_and_every_command_lands_once(
    backend: str, spawn_worker: SpawnWorker, tmp_path: Path
) -> None:
    """While the database is away agents get a retryable UNAVAILABLE (the worker keeps running); once it
    is back, every command they sent or buffered is registered exactly once."""
    tally = Tally(f"case4 database outage ({backend})")
    async with AsyncExitStack() as stack:
        settings: dict[str, str] = {}
        pg: PrivatePostgres | None = None
        if backend == "postgres-stopped":
            require_postgres_server()
            pg = await stack.enter_async_context(PrivatePostgres())
            settings = {"DATABASE_URL": pg.url, "STORAGE_MIGRATE_ON_START": "true"}
        if backend == "sqlite-readonly" and (reason := immutable_files_supported(tmp_path)) is not None:
            missing(f"case 4 (read-only SQLite) cannot run: {reason}")
        worker = await spawn_worker(**settings)
        pid = worker.pid
        client = await stack.enter_async_context(client_for(worker.env, tmp_path / "buffer"))
        load = ClientLoad(client, COMMANDS, tag=backend)
        tally.commands = COMMANDS
        outage: dict[str, float] = {}

        async def break_database() -> None:
            await load.answered(COMMANDS // 4)
            outage["start"] = time.monotonic()
            if backend == "sqlite-readonly":
                # The database and its write-ahead log, not the -shm index: SQLite maps that into memory, and a
                # mapped page that can no longer be written is a SIGBUS, not an I/O error (no filesystem turns
                # read-only under a live mapping).
                db = worker.folder / "storage.db"
                files = [db, db.with_name("storage.db-wal")]
                await make_immutable(files, True)
                try:
                    await asyncio.sleep(OUTAGE_S)  # the outage itself
                finally:
                    await make_immutable(files, False)
            elif pg is None:
                locked = asyncio.Event()
                holder = asyncio.to_thread(
                    hold_write_lock, worker.folder / "storage.db", LOCK_S, locked, asyncio.get_running_loop()
                )
                await holder
            else:
                await pg.stop("immediate")
                await asyncio.sleep(OUTAGE_S)  # the outage itself
                try:
                    await pg.start()
                except PostgresError as exc:
                    tally.unexpected.append(str(exc))
            outage["end"] = time.monotonic()

        await asyncio.wait_for(asyncio.gather(load.run(), break_database()), SETTLE_S * 3)
        emptied = await load.settle(time.monotonic() + SETTLE_S)
        if emptied is None:
            tally.unexpected.append(f"the client's buffer still holds commands {SETTLE_S:.0f}s after recovery")
        if pg is None:
            figures = load.audit(tally, StoreView(worker.folder / "storage.db"))
        else:
            figures = load.audit(tally, await _pg_view(pg, tmp_path))

    unavailable = worker.current.count("register_artifact UNAVAILABLE")
    if unavailable == 0:
        tally.unexpected.append("no command got UNAVAILABLE: the outage never reached the worker")
    if worker.pid != pid or len(worker.runs) != 1:
        tally.unexpected.append("the worker crashed or restarted during the outage")
    tally.figures.update(
        figures,
        outage_s=round(outage.get("end", 0) - outage.get("start", 0), 1),
        unavailable_replies=unavailable,
    )
    tally.check()


async def _pg_view(pg: PrivatePostgres, folder: Path) -> StoreView:
    """The audit reads SQLite: copy the rows it needs out of the private cluster into a SQLite file."""
    import asyncpg

    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{pg.port}/postgres")
    try:
        artifacts = await conn.fetch("SELECT id, uri, checksum, status FROM artifacts")
        inbox = await conn.fetch("SELECT id, action, idempotency_key, reply_id, reply_data FROM inbox")
    finally:
        await conn.close()
    db_file = folder / "pg-snapshot.db"
    with closing(sqlite3.connect(db_file)) as lite:
        lite.execute("CREATE TABLE artifacts (id TEXT, uri TEXT, checksum TEXT, status TEXT)")
        lite.execute("CREATE TABLE inbox (id TEXT, action TEXT, idempotency_key TEXT, reply_id TEXT, reply_data TEXT)")
        lite.executemany("INSERT INTO artifacts VALUES (?, ?, ?, ?)", [tuple(r) for r in artifacts])
        lite.executemany("INSERT INTO inbox VALUES (?, ?, ?, ?, ?)", [tuple(r) for r in inbox])
        lite.commit()
    return StoreView(db_file)
