"""Scrubbing: completed artifacts' files are read again and compared with their registered size and sha256.

A run of the ``verify_checksums`` scope takes a bounded batch from the scrub queue (``STORAGE_VERIFY_BATCH``
files, ``STORAGE_VERIFY_MAX_BYTES`` bytes; never-verified first, then the oldest ``verified_at``), reads each
file in the I/O thread a chunk at a time (``FileStore.read_stored``), and records through the single writer,
a short job per ``STORAGE_CLEANUP_BATCH`` files:

- the registered bytes → ``verified_at`` = the run's time (the row goes to the back of the queue);
- other bytes (size or sha256) → ``failed`` with ``failure_reason = corrupted``: readers are told
  ``details.reason = "corrupted"``, and the file stays where it is for an operator to look at;
- no file (gone, or a link in its place) → what the ``missing_files`` scope does, with its age limit: an
  artifact registered over an hour ago is put back from temp/ or becomes ``failed``, reason ``missing``; a
  younger one is left alone (its move into place may be under way) and checked again next run.

Tombstones are never verified. ``storage-worker verify --all`` passes over every completed file instead of a
batch (``verify_everything``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import ArtifactFailure, StorageError, Unavailable
from service.core.context import HandlerContext
from service.maintenance.file_scopes import TempBytes, repair_or_fail
from service.maintenance.limits import STALE_UPLOADING_AGE
from service.store import scrub
from service.store.types import AnyRow

log = logging.getLogger(__name__)

OK, CORRUPTED, MISSING = "ok", "corrupted", "missing"
"""The results of checking one file, as the metrics label them."""


class Progress(Protocol):
    """What a progress display is told: the extent first, then every chunk read (from the I/O thread)."""

    def planned(self, files: int, size: int) -> None: ...

    def read(self, size: int) -> None: ...


@dataclass(slots=True)
class VerifyReport:
    """What a scrub found; ``missing`` counts every file not found, ``repaired``/``failed_missing`` what became
    of them, ``unchecked`` the rows whose uri lies outside this storage (nothing to read from here)."""

    ok: int = 0
    corrupted: int = 0
    missing: int = 0
    repaired: int = 0
    failed_missing: int = 0
    unchecked: int = 0
    bytes_read: int = 0
    corrupted_ids: list[str] = field(default_factory=list)

    @property
    def checked(self) -> int:
        return self.ok + self.corrupted + self.missing

    @property
    def clean(self) -> bool:
        """Nothing corrupted and nothing missing: every file checked held its registered bytes."""
        return self.corrupted == 0 and self.missing == 0


async def verify_checksums(ctx: HandlerContext) -> int:
    """The cleanup scope: one bounded batch; the count is the files checked (in a dry run: to be checked)."""
    if ctx.dry_run:
        async with ctx.read() as conn:
            return len(_within_bytes(await scrub.queue(conn, ctx.settings.verify_batch), ctx.settings.verify_max_bytes))
    return (await verify_batch(ctx)).checked


async def verify_batch(ctx: HandlerContext, progress: Progress | None = None) -> VerifyReport:
    """The next batch of the scrub queue, checked and recorded."""
    async with ctx.read() as conn:
        rows = _within_bytes(await scrub.queue(conn, ctx.settings.verify_batch), ctx.settings.verify_max_bytes)
    if progress is not None:
        progress.planned(len(rows), sum(row.size_bytes for row in rows))
    report = VerifyReport()
    for start in range(0, len(rows), ctx.batch):
        await _check(ctx, rows[start : start + ctx.batch], report, progress)
    _log(report)
    return report


async def verify_everything(ctx: HandlerContext, progress: Progress | None = None) -> VerifyReport:
    """Every completed, live artifact's file, in registration order (a keyset walk, a page per batch)."""
    async with ctx.read() as conn:
        files, size = await scrub.totals(conn)
    if progress is not None:
        progress.planned(files, size)
    report = VerifyReport()
    after = None
    while True:
        async with ctx.read() as conn:
            page = await scrub.every_page(conn, after, ctx.batch)
        if not page:
            break
        after = (page[-1].registered_at, page[-1].id)
        await _check(ctx, [row for row in page if scrub.verifiable(row)], report, progress)
        if len(page) < ctx.batch:
            break
    _log(report)
    return report


def _within_bytes(rows: Sequence[AnyRow], max_bytes: int) -> list[AnyRow]:
    """The queue's head up to ``max_bytes`` of files; the first file always, however large."""
    kept: list[AnyRow] = []
    total = 0
    for row in rows:
        if kept and total + row.size_bytes > max_bytes:
            break
        kept.append(row)
        total += row.size_bytes
    return kept


async def _check(ctx: HandlerContext, rows: Sequence[AnyRow], report: VerifyReport, progress: Progress | None) -> None:
    """Read these files (one at a time, each in the I/O thread), then record the outcome in one short write."""
    good: list[tuple[str, str]] = []
    bad: list[str] = []
    absent: list[tuple[AnyRow, str]] = []
    read = {OK: 0, CORRUPTED: 0}

    def passed_over(row: AnyRow) -> None:  # a file not read still counts towards the progress shown
        if progress is not None:
            progress.read(row.size_bytes)

    for row in rows:
        try:
            path = ctx.files.resolve_stored(row.uri)
        except StorageError:
            report.unchecked += 1
            passed_over(row)
            log.warning("artifact %s: its uri %s lies outside this storage root: not verified", row.id, row.uri)
            continue
        try:
            stored = await ctx.files.read_stored(path, None if progress is None else progress.read)
        except Unavailable:
            raise  # the storage is down: the run stops, and the next one starts from the same queue
        except StorageError as exc:  # this one file cannot be read (permissions): the others still are
            report.unchecked += 1
            passed_over(row)
            log.warning("artifact %s: %s could not be read: %s %s", row.id, row.uri, exc.message, exc.details)
            continue
        if stored is None:
            absent.append((row, path))
            passed_over(row)
            continue
        result = OK if (stored.size, stored.checksum) == (row.size_bytes, row.checksum) else CORRUPTED
        read[result] += stored.size
        if result == OK:
            good.append((row.id, row.checksum))
        else:
            bad.append(row.id)

    async def record(conn: AsyncConnection) -> list[str]:
        await scrub.record_verified(conn, good, ctx.now)
        return await scrub.mark_failed(conn, bad, ArtifactFailure.CORRUPTED)

    failed = await ctx.write(record) if good or bad else []
    for artifact_id in failed:
        log.warning(
            "artifact %s: its file no longer holds the registered bytes: marked failed (corrupted)", artifact_id
        )
    report.ok += len(good)
    report.corrupted += len(bad)
    report.corrupted_ids += failed
    report.bytes_read += read[OK] + read[CORRUPTED]
    report.missing += len(absent)
    await _settle_missing(ctx, absent, report)
    for result, files, size in (
        (OK, len(good), read[OK]),
        (CORRUPTED, len(bad), read[CORRUPTED]),
        (MISSING, len(absent), 0),
    ):
        if files:
            for observer in ctx.services.on_verified:
                observer(result, files, size)


async def _settle_missing(ctx: HandlerContext, absent: list[tuple[AnyRow, str]], report: VerifyReport) -> None:
    """Old enough: as ``missing_files`` does. Younger than its age limit: left for the next run."""
    cutoff = ctx.now - STALE_UPLOADING_AGE
    due = [(row, path) for row, path in absent if row.registered_at < cutoff]
    for row, _ in absent:
        if row.registered_at >= cutoff:
            log.info("artifact %s: no file yet, registered %s: checked again later", row.id, row.registered_at)
    if not due:
        return
    temp = await TempBytes.scan(ctx.files, ctx.settings.max_file_bytes, ctx.batch)
    settled = await repair_or_fail(ctx, temp, due)
    report.repaired += settled.repaired
    report.failed_missing += settled.failed


def _log(report: VerifyReport) -> None:
    if report.checked or report.unchecked:
        log.info(
            "verified %d files (%d bytes): %d ok, %d corrupted, %d missing (%d put back, %d failed), %d unchecked",
            report.checked,
            report.bytes_read,
            report.ok,
            report.corrupted,
            report.missing,
            report.repaired,
            report.failed_missing,
            report.unchecked,
        )
