"""``storage-worker cleanup [--dry-run] [--scope ...]``: one cleanup, in this process, through its own writer.

It opens the database the way a worker does, so with SQLite it needs the file to itself: while a worker
runs on it, the command refuses and says how to clean up through that worker instead.
"""

from __future__ import annotations

import argparse
import json
import sys

from contracts import CleanupScope, StorageError
from service.settings import Settings
from service.startup import safe_url


def cleanup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="count what each scope would handle, change nothing")
    parser.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        choices=[scope.value for scope in CleanupScope],
        help="run only this scope (repeatable; every scope when absent)",
    )
    parser.add_argument("--json", action="store_true", help="print the counts as one JSON object")


async def cleanup_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from service.bootstrap import standalone_services
    from service.maintenance import run_cleanup
    from service.store.engine.lock import DatabaseLocked

    scopes = [CleanupScope(value) for value in args.scopes] if args.scopes else None
    # a schema not at this worker's revision (SchemaNotReady) is told by ``main``: one line, exit 4, as for run
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
    except StorageError as exc:
        print(f"storage-worker cleanup: {exc.code.value}: {exc.message} {exc.details or ''}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "counts": counts}))
        return 0
    print(f"cleanup of {safe_url(settings.database_url)}{' (dry run: nothing changed)' if args.dry_run else ''}")
    width = max(map(len, counts), default=0)
    for scope, count in counts.items():
        print(f"  {scope:<{width}}  {count}")
    return 0
