"""``storage-worker cleanup [--dry-run] [--scope ...]``: one cleanup, in this process, through its own writer.

It opens the database the way a worker does, so with SQLite it needs the file to itself: while a worker
runs on it, the command refuses and says how to clean up through that worker instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from contracts import CleanupScope, StorageError
from service.cli import _safe, command
from service.core.context import Services
from service.files import FileStore
from service.settings import Settings


@asynccontextmanager
async def standalone_services(settings: Settings) -> AsyncIterator[Services]:
    """The stores a worker would open (lock, schema, files, single writer), without the broker."""
    from service.store.engine.db import create_engine, is_sqlite, sqlite_path
    from service.store.engine.lock import DatabaseLock
    from service.store.engine.schema import prepare
    from service.store.engine.writer import SingleWriter

    lock = None
    if (db_file := sqlite_path(settings.database_url)) is not None:
        lock = DatabaseLock(db_file)
        lock.acquire()
    engine = create_engine(settings.database_url)
    writer = SingleWriter(engine, batch_max=settings.write_batch_max)
    try:
        await prepare(
            engine, migrate_on_start=settings.migrate_on_start, create_if_empty=is_sqlite(settings.database_url)
        )
        files = FileStore(settings.storage_root)
        await asyncio.to_thread(files.ensure_layout)
        await writer.start()
        yield Services(settings=settings, engine=engine, writer=writer, files=files)
    finally:
        await writer.stop()
        await engine.dispose()
        if lock is not None:
            lock.release()


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="count what each scope would handle, change nothing")
    parser.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        choices=[scope.value for scope in CleanupScope],
        help="run only this scope (repeatable; every scope when absent)",
    )
    parser.add_argument("--json", action="store_true", help="print the counts as one JSON object")


@command("cleanup", "run the cleanup scopes once, here (with SQLite: only while no worker runs)", _arguments)
async def cleanup_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from service.maintenance.cleanup import run_cleanup
    from service.store.engine.lock import DatabaseLocked
    from service.store.engine.schema import SchemaNotReady

    scopes = [CleanupScope(value) for value in args.scopes] if args.scopes else None
    try:
        async with standalone_services(settings) as services:
            counts = await run_cleanup(services, scopes, dry_run=args.dry_run)
    except DatabaseLocked as exc:
        print(
            f"storage-worker cleanup: refused, a running worker owns the SQLite database ({exc}).\n"
            "Stop that worker first, or let it clean up: it runs every STORAGE_CLEANUP_INTERVAL, and an admin "
            "(STORAGE_ADMINS) can send it the `cleanup` action over the bus.",
            file=sys.stderr,
        )
        return 2
    except SchemaNotReady as exc:
        print(f"storage-worker cleanup: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"storage-worker cleanup: {exc.code.value}: {exc.message} {exc.details or ''}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "counts": counts}))
        return 0
    print(f"cleanup of {_safe(settings.database_url)}{' (dry run: nothing changed)' if args.dry_run else ''}")
    width = max(map(len, counts), default=0)
    for scope, count in counts.items():
        print(f"  {scope:<{width}}  {count}")
    return 0
