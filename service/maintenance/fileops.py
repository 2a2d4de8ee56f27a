"""File work for cleanup and recovery: walking a folder in bounded chunks, retiring files to orphans/.

Walks go directory by directory in a thread, so a folder of a million files is never listed at once and
the event loop keeps serving commands. They never follow a symbolic link: a link in temp/, artifacts/ or
orphans/ is an entry like a file, retired or removed as the link it is, and what it points at is never
touched (an agent could otherwise have cleanup move or delete another agent's file). A file that vanishes
mid-walk (an agent or a command moved it) is simply skipped: maintenance never fails because the world
changed under it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime

from contracts import StorageError
from service.files import FileInfo, FileStore

log = logging.getLogger(__name__)


Entry = FileInfo
"""One walked entry: a file, or a link as itself (its own size and mtime; never what it points at)."""


async def walk(files: FileStore, folder: str, chunk: int) -> AsyncIterator[list[Entry]]:
    """Every file under a top-level folder of the storage root, in lists of at most ``chunk``."""
    directories = files.walk_batches(folder)
    done = object()
    while True:
        try:
            entries = await asyncio.to_thread(next, directories, done)
        except OSError as exc:
            log.warning("walking %s stopped: %s", files.url(files.join(folder)), exc)
            return
        if entries is done:
            return
        assert isinstance(entries, list)
        for start in range(0, len(entries), chunk):
            yield entries[start : start + chunk]


def older_than(entry: Entry, cutoff: datetime) -> bool:
    return entry.modified is not None and entry.modified < cutoff


async def retire(files: FileStore, path: str, *, reason: str) -> str | None:
    """Move a file (a link as a link) to orphans/ and start its orphan clock now; None when already gone."""
    try:
        dest = await files.to_orphans(path)
    except StorageError as exc:
        log.warning("could not move %s to orphans/ (%s): %s", files.url(path), reason, exc.message)
        return None
    if dest is None:
        return None
    log.info("moved %s to %s: %s", files.url(path), files.url(dest), reason)
    return dest


async def remove(files: FileStore, path: str) -> bool:
    try:
        await files.remove(path)
    except StorageError as exc:
        log.warning("could not delete %s: %s", files.url(path), exc.message)
        return False
    return True
