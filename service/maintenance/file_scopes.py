"""Cleanup scopes over files: old temp files, files without rows, old orphans, rows without files.

A completed artifact whose file is missing is first looked for in temp/ by size and sha256: that is
where the bytes sit when the worker died between the commit and the move. Only when they are not there
does the row become ``failed``. Startup recovery runs the same repair over the newest rows.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import ARTIFACT_ID_PATTERN, ArtifactFailure, StorageError
from service.core.context import HandlerContext
from service.files import ARTIFACTS, ORPHANS, TEMP, FileStore, Upload
from service.maintenance.fileops import Entry, older_than, remove, retire, walk
from service.maintenance.limits import ORPHAN_FILE_MIN_AGE, ORPHAN_KEEP, STALE_UPLOADING_AGE, TEMP_MAX_AGE
from service.store import maintenance as q
from service.store import scrub
from service.store.types import AnyRow

log = logging.getLogger(__name__)

WALK_PAGES_PER_BATCH = 4
"""The artifact walk reads this many batches of rows per query (only the completed ones are checked)."""
_ARTIFACT_FILE = re.compile(f"^({ARTIFACT_ID_PATTERN.strip('^$')})" + r"(\.[A-Za-z0-9]{1,16})?$")
"""``artifacts/<trace>/<artifact id><ext>``: the name the worker gives every file it places."""


# -- temp/, orphans/ ---------------------------------------------------------------------------


async def temp_orphans(ctx: HandlerContext) -> int:
    """Temp files older than an hour were never registered (or their registration failed): to orphans/."""

    async def to_orphans(path: str) -> bool:
        return await retire(ctx.files, path, reason="temp file older than 1 h") is not None

    return await _sweep(ctx, TEMP, ctx.now - TEMP_MAX_AGE, to_orphans)


async def old_orphans(ctx: HandlerContext) -> int:
    """Files that sat in orphans/ for a week are deleted, except a deleted artifact's: it waits there for a
    restore until ``purge_deleted`` removes it with its tombstone (after ``STORAGE_PURGE_AFTER``)."""

    async def delete(path: str) -> bool:
        if not await remove(ctx.files, path):
            return False
        log.info("deleted %s: in orphans/ for more than %s", ctx.files.url(path), ORPHAN_KEEP)
        return True

    return await _sweep(ctx, ORPHANS, ctx.now - ORPHAN_KEEP, delete, keep=_tombstone_files)


async def _tombstone_files(ctx: HandlerContext, entries: Sequence[Entry]) -> set[str]:
    """Which of these orphans/ entries are the retired file of a tombstone (by the id in the name, then its uri)."""
    places = {entry.path: place for entry in entries if (place := _place_of(ctx.files, entry.path)) is not None}
    ids = {entry.path: artifact_id for entry in entries if entry.path in places and (artifact_id := _id_of(entry))}
    if not ids:
        return set()
    async with ctx.read() as conn:
        uris = await q.tombstone_uris(conn, sorted(set(ids.values())))
    return {path for path, artifact_id in ids.items() if _points_at(ctx.files, uris.get(artifact_id), places[path])}


def _place_of(files: FileStore, orphan: str) -> str | None:
    """Where a file of ``orphans/artifacts/...`` lay before it was retired; None for any other orphan."""
    prefix = files.join(ORPHANS) + "/"
    if not files.in_folder(orphan, ORPHANS):
        return None
    place = files.join(orphan.removeprefix(prefix))
    return place if files.in_folder(place, ARTIFACTS) else None


async def _sweep(
    ctx: HandlerContext,
    folder: str,
    cutoff: datetime,
    act: Callable[[str], Awaitable[bool]],
    *,
    keep: Callable[[HandlerContext, Sequence[Entry]], Awaitable[set[str]]] | None = None,
) -> int:
    """Apply ``act`` to every file of ``folder`` older than ``cutoff`` (but those ``keep`` names), a batch of the
    listing at a time."""
    total = 0
    async for chunk in walk(ctx.files, folder, ctx.batch):
        old = [entry for entry in chunk if older_than(entry, cutoff)]
        if old and keep is not None:
            kept = await keep(ctx, old)
            old = [entry for entry in old if entry.path not in kept]
        if ctx.dry_run:
            total += len(old)
            continue
        for entry in old:
            total += await act(entry.path)
    return total


# -- artifacts/ without rows -------------------------------------------------------------------


async def orphan_files(ctx: HandlerContext) -> int:
    """Files under artifacts/ that no artifact row points at, older than a day: to orphans/."""
    cutoff = ctx.now - ORPHAN_FILE_MIN_AGE
    total = 0
    async for chunk in walk(ctx.files, ARTIFACTS, ctx.batch):
        old = [entry for entry in chunk if older_than(entry, cutoff)]
        if not old:
            continue
        async with ctx.read() as conn:
            unreferenced = await _unreferenced(conn, ctx.files, old)
        if ctx.dry_run:
            total += len(unreferenced)
            continue
        for entry in unreferenced:
            if await retire(ctx.files, entry.path, reason="no artifact row points at it") is not None:
                total += 1
    return total


async def _unreferenced(conn: AsyncConnection, files: FileStore, entries: Sequence[Entry]) -> list[Entry]:
    """Fast path: a file named after an artifact id is checked by primary key; the rest by uri."""
    ids = {entry.path: _id_of(entry) for entry in entries}
    stored = await q.uris_of(conn, [artifact_id for artifact_id in ids.values() if artifact_id])
    left = [entry for entry in entries if not _points_at(files, stored.get(ids[entry.path] or ""), entry.path)]
    if not left:
        return []
    forms = {entry.path: (files.url(entry.path), _quoted_url(files, entry.path)) for entry in left}
    referenced = await q.referenced_uris(conn, [uri for pair in forms.values() for uri in pair])
    return [entry for entry in left if not referenced.intersection(forms[entry.path])]


def _id_of(entry: Entry) -> str | None:
    match = _ARTIFACT_FILE.match(posixpath.basename(entry.path))
    return match.group(1) if match else None


def _points_at(files: FileStore, uri: str | None, path: str) -> bool:
    if uri is None:
        return False
    try:
        return files.resolve_stored(uri) == path
    except StorageError:
        return False


def _quoted_url(files: FileStore, path: str) -> str:
    return "file://" + quote(path) if files.is_local else files.url(path)


# -- rows without files ------------------------------------------------------------------------


@dataclass(slots=True)
class TempBytes:
    """temp/ indexed by size; each candidate staged (opened without following a link, hashed) lazily, handed
    out once, and only as the very file that was hashed."""

    files: FileStore
    max_bytes: int
    by_size: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    digests: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    async def scan(cls, files: FileStore, max_bytes: int, chunk: int) -> TempBytes:
        index = cls(files, max_bytes)
        async for entries in walk(files, TEMP, chunk):
            for entry in entries:
                if entry.size <= max_bytes:
                    index.by_size[entry.size].append(entry.path)
        return index

    async def take(self, checksum: str, size: int) -> Upload | None:
        """A staged temp file holding these bytes (the caller places and closes it), or None."""
        for path in list(self.by_size.get(size, ())):
            if path in self.digests and self.digests[path] != checksum:
                continue  # hashed for another row already: other bytes
            try:
                uri = self.files.url(path)
                upload = await self.files.stage(path, uri, expected_size=size, max_bytes=self.max_bytes)
            except StorageError:  # gone, a link, not a regular file: never a candidate
                self.by_size[size].remove(path)
                continue
            if upload.checksum == checksum:
                self.by_size[size].remove(path)
                return upload
            self.digests[path] = upload.checksum
            upload.close()
        return None


@dataclass(frozen=True, slots=True)
class FileCheck:
    repaired: int = 0
    failed: int = 0
    missing: int = 0


async def check_completed(
    ctx: HandlerContext, *, registered_before: datetime | None = None, registered_since: datetime | None = None
) -> FileCheck:
    """Walk completed artifacts (optionally by registration time); repair or fail those without a file."""
    after = ""
    recent_after: tuple[datetime, str] | None = None
    temp: TempBytes | None = None
    repaired = failed = missing = 0
    page = ctx.batch * WALK_PAGES_PER_BATCH
    while True:
        async with ctx.read() as conn:
            if registered_since is not None:
                rows = await q.recent_artifacts_page(conn, registered_since, recent_after, page)
            else:
                rows = await q.artifacts_page(conn, after_id=after, limit=page)
        if not rows:
            break
        after = rows[-1].id
        recent_after = (rows[-1].registered_at, rows[-1].id)
        wanted = [
            row
            for row in rows
            if row.status == q.COMPLETED
            and row.deleted_at is None  # a tombstone's file lies in orphans/, waiting for a restore or the purge
            and (registered_before is None or row.registered_at < registered_before)
            and (registered_since is None or row.registered_at >= registered_since)
        ]
        absent = await asyncio.to_thread(_absent, ctx.files, wanted) if wanted else []
        missing += len(absent)
        if absent and not ctx.dry_run:
            if temp is None:
                temp = await TempBytes.scan(ctx.files, ctx.settings.max_file_bytes, ctx.batch)
            settled = await repair_or_fail(ctx, temp, absent)
            repaired += settled.repaired
            failed += settled.failed
        if len(rows) < page:
            break
    return FileCheck(repaired, failed, missing)


async def repair_or_fail(ctx: HandlerContext, temp: TempBytes, absent: Sequence[tuple[AnyRow, str]]) -> FileCheck:
    """Completed artifacts without their file (row, path): put back from temp/ when the bytes are there,
    else ``failed`` with reason ``missing``. The scrubber (``verify``) settles the missing files it meets so."""
    unrepaired = [row.id for row, path in absent if not await _repair(ctx.files, temp, row, path)]
    failed = await _fail(ctx, unrepaired)
    return FileCheck(repaired=len(absent) - len(unrepaired), failed=len(failed), missing=len(absent))


def _absent(files: FileStore, rows: Sequence[AnyRow]) -> list[tuple[AnyRow, str]]:
    found = []
    for row in rows:
        try:
            path = files.resolve_stored(row.uri)
        except StorageError:
            continue  # a uri outside this storage root cannot be checked from here
        if not files.holds_file(path):  # a link where the file should be is not the file
            found.append((row, path))
    return found


async def _repair(files: FileStore, temp: TempBytes, row: AnyRow, dest: str) -> bool:
    upload = await temp.take(row.checksum, row.size_bytes)
    if upload is None:
        return False
    try:
        placed = await files.place(upload, dest)
    except StorageError as exc:
        log.warning("artifact %s: moving %s into place failed: %s", row.id, upload.uri, exc.message)
        return False
    finally:
        upload.close()
    if not placed:
        log.warning("artifact %s: %s changed while it was moved into place: not used", row.id, upload.uri)
        return False
    log.warning("artifact %s: its file was still in temp/, moved %s to %s", row.id, upload.uri, row.uri)
    return True


async def _fail(ctx: HandlerContext, ids: list[str]) -> list[str]:
    if not ids:
        return []

    async def job(conn: AsyncConnection) -> list[str]:
        return await scrub.mark_failed(conn, ids, ArtifactFailure.MISSING)

    changed = await ctx.write(job)
    for artifact_id in changed:
        log.warning("artifact %s is completed but its file is gone (not in temp/ either): marked failed", artifact_id)
    return changed


async def missing_files(ctx: HandlerContext) -> int:
    """Completed artifacts whose file is gone (registered over an hour ago): repaired from temp/ or failed."""
    check = await check_completed(ctx, registered_before=ctx.now - STALE_UPLOADING_AGE)
    return check.missing if ctx.dry_run else check.repaired + check.failed
