"""``storage-worker cleanup [--dry-run] [--scope ...]`` and ``verify [--all]``: in this process, through its own writer.

It opens the database the way a worker does, so with SQLite it needs the file to itself: while a worker
runs on it, the command refuses and says how to clean up through that worker instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import NoReturn

from tqdm import tqdm

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


def verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--all",
        dest="everything",
        action="store_true",
        help="every completed file (default: one batch of STORAGE_VERIFY_BATCH files, oldest-verified first)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


class _Bar:
    """The progress of a scrub as a tqdm bar of bytes on stderr (told from the I/O thread; tqdm locks)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: tqdm[NoReturn] | None = None

    def planned(self, files: int, size: int) -> None:
        self.bar = tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc=f"verify {files} files",
            disable=not self.enabled,
            file=sys.stderr,
        )

    def read(self, size: int) -> None:
        if self.bar is not None:
            self.bar.update(size)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def verify_cmd(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 when every file checked held its registered bytes, 1 when one was corrupted or missing."""
    from service.bootstrap import standalone_services
    from service.core.context import HandlerContext
    from service.maintenance.verify import verify_batch, verify_everything
    from service.store.engine.lock import DatabaseLocked

    bar = _Bar(enabled=not args.no_progress)
    try:
        async with standalone_services(settings) as services:
            ctx = HandlerContext(services)
            run = verify_everything if args.everything else verify_batch
            report = await run(ctx, bar)
    except DatabaseLocked as exc:
        print(
            f"storage-worker verify: refused, a running worker owns the SQLite database ({exc}).\n"
            "Stop that worker first, or let it verify: an admin (STORAGE_ADMINS) can send it the `cleanup` action "
            'with scopes ["verify_checksums"] over the bus.',
            file=sys.stderr,
        )
        return 2
    except StorageError as exc:
        print(f"storage-worker verify: {exc.code.value}: {exc.message} {exc.details or ''}", file=sys.stderr)
        return 1
    finally:
        bar.close()
    result = {
        "checked": report.checked,
        "ok": report.ok,
        "corrupted": report.corrupted,
        "missing": report.missing,
        "missing_put_back": report.repaired,
        "missing_failed": report.failed_missing,
        "unchecked": report.unchecked,
        "bytes": report.bytes_read,
    }
    if args.json:
        print(json.dumps({**result, "corrupted_ids": report.corrupted_ids}))
    else:
        scope = "every completed file" if args.everything else "one batch"
        print(f"verify of {safe_url(settings.database_url)} ({scope})")
        width = max(map(len, result))
        for name, count in result.items():
            print(f"  {name:<{width}}  {count}")
        for artifact_id in report.corrupted_ids:
            print(f"  corrupted: {artifact_id}")
    return 0 if report.clean else 1
