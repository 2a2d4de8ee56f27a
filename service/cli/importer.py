"""``storage-worker import DIR [--dry-run]``: bring a legacy MindBus storage directory into this worker's stores.

The import runs in this process on its own single writer, like ``storage-worker cleanup``: with SQLite it
needs the database to itself (stop the worker first; the command says so when one runs), with PostgreSQL
it runs beside running workers. ``--dry-run`` changes nothing and takes no lock: it verifies every record
and file and reports what an import would do.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tqdm import tqdm

from contracts import StorageError
from service.core.context import Services
from service.importer import legacy
from service.importer.run import DEFAULT_JOBS, Importer, Outcome, Summary
from service.settings import Settings
from service.startup import safe_url


def import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", type=Path, help="the legacy directory holding storage.db")
    parser.add_argument("--dry-run", action="store_true", help="verify and report, import nothing")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help="records verified and registered at once")
    parser.add_argument("--report", type=Path, help="also write every skipped record to this file, one JSON per line")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (it hides itself off a TTY)")


@asynccontextmanager
async def _read_only_services(settings: Settings) -> AsyncIterator[tuple[Services, bool]]:
    """What a dry run needs: reads only, no lock, no migration; plus whether the schema exists at all."""
    from sqlalchemy import inspect

    from service.files import FileStore
    from service.store.engine.db import create_engine
    from service.store.engine.writer import SingleWriter

    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        writer = SingleWriter(engine)  # never started: a dry run writes nothing
        yield (
            Services(settings=settings, engine=engine, writer=writer, files=FileStore(settings.storage_root)),
            ("artifacts" in tables),
        )
    finally:
        await engine.dispose()


async def import_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from service.bootstrap import standalone_services
    from service.store.engine.lock import DatabaseLocked

    root: Path = args.directory.resolve()
    # a schema not at this worker's revision (SchemaNotReady) is told by ``main``: one line, exit 4, as for run
    try:
        with legacy.open_legacy(root) as conn:
            total = legacy.count(conn)
            with tqdm(total=total, unit="rec", desc="import", disable=True if args.no_progress else None) as bar:

                def on_record(outcome: Outcome) -> None:
                    if outcome.skip is not None:
                        skip = outcome.skip
                        bar.write(f"skipped {skip.legacy_id}: {skip.reason}: {skip.message}", file=sys.stderr)
                    bar.update()

                if args.dry_run:
                    async with _read_only_services(settings) as (services, has_schema):
                        importer = Importer(
                            services,
                            root,
                            dry_run=True,
                            jobs=args.jobs,
                            on_record=on_record,
                            look_up_existing=has_schema,
                        )
                        summary = await importer.run(conn)
                else:
                    async with standalone_services(settings) as services:
                        summary = await Importer(services, root, jobs=args.jobs, on_record=on_record).run(conn)
    except legacy.NotLegacyLayout as exc:
        print(f"storage-worker import: {exc}", file=sys.stderr)
        return 2
    except DatabaseLocked as exc:
        print(
            f"storage-worker import: refused, a running worker owns the SQLite database ({exc}).\n"
            "Stop that worker for the import (it takes the database to itself), then start it again.",
            file=sys.stderr,
        )
        return 2
    except StorageError as exc:
        print(
            f"storage-worker import: stopped: {exc.code.value}: {exc.message} {exc.details or ''}\n"
            "Nothing is half-imported; run the same command again to continue.",
            file=sys.stderr,
        )
        return 1
    if args.report is not None:
        _write_report(args.report, summary)
    print(render(summary, root, safe_url(settings.database_url)))
    return 1 if summary.skipped else 0


def render(summary: Summary, root: Path, target: str) -> str:
    """The summary table: imported, already present, skipped by reason."""
    title = f"import of {root} into {target}"
    if summary.dry_run:
        title += " (dry run: nothing changed)"
    rows: list[tuple[str, int]] = [
        ("records", summary.total),
        ("would import" if summary.dry_run else "imported", summary.imported),
        ("already present", summary.already_present),
        ("skipped", len(summary.skipped)),
    ]
    rows += [(f"  {reason}", n) for reason, n in summary.by_reason.items()]
    width = max(len(label) for label, _ in rows)
    digits = max(len(str(n)) for _, n in rows)
    lines = [title] + [f"  {label:<{width}}  {n:>{digits}}" for label, n in rows]
    return "\n".join(lines)


def _write_report(path: Path, summary: Summary) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for skipped in summary.skipped:
            record = {"legacy_id": skipped.legacy_id, "reason": skipped.reason, "message": skipped.message}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


__all__ = ["import_arguments", "import_cmd", "render"]
