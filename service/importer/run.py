"""The import loop: map, check what is already here, verify and copy the file, register like an agent.

Registration is the ``register_artifact`` handler itself, run in this process on the single writer with
the SYSTEM requester: every check of that path applies (confinement, size limit, size, sha256, version
chain) and the commit point is the same. A record is imported whole or not at all: its file is verified
while it is copied into ``temp/``, and any refusal removes that copy before the record is reported.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import posixpath
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from contracts import ErrorCode, RegisterArtifactParams, StorageError
from service.core.context import HandlerContext, Services
from service.core.recording import Committed
from service.files import TEMP, safe_segment
from service.handlers.artifacts import register_artifact
from service.identity import SYSTEM
from service.importer import legacy
from service.importer.mapping import Mapped, Skip, map_row
from service.store import artifacts as artifact_store
from service.store.engine.db import read_connection

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
DEFAULT_JOBS = 4

REASON_OF_CODE = {
    ErrorCode.NOT_FOUND: "file_missing",
    ErrorCode.OUT_OF_RANGE: "too_large",
    ErrorCode.ALREADY_EXISTS: "conflict",
    ErrorCode.FAILED_PRECONDITION: "broken_chain",
    ErrorCode.PERMISSION_DENIED: "bad_uri",
}
"""What a refusal of the register path means for an imported record."""


@dataclass(frozen=True, slots=True)
class Skipped:
    legacy_id: str
    reason: str
    message: str


@dataclass
class Summary:
    total: int = 0
    imported: int = 0
    already_present: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    dry_run: bool = False

    @property
    def by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(s.reason for s in self.skipped).items()))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one record: ``kind`` is "imported", "present" or "skipped"."""

    kind: str
    skip: Skipped | None = None


class Importer:
    """One import of one legacy directory into the worker's stores."""

    def __init__(
        self,
        services: Services,
        root: Path,
        *,
        dry_run: bool = False,
        jobs: int = DEFAULT_JOBS,
        on_record: Callable[[Outcome], None] | None = None,
        look_up_existing: bool = True,
    ) -> None:
        self.services = services
        self.root = root
        self.dry_run = dry_run
        self.look_up_existing = look_up_existing
        """False only for a dry run against a database whose schema does not exist yet (nothing is there)."""
        self.jobs = max(1, jobs)
        self.on_record = on_record
        self._versions: dict[str, int] = {}
        """Artifacts this dry run would have (id → version): what the next versions' chains may name."""

    async def run(self, conn: sqlite3.Connection) -> Summary:
        """Records of one version run ``jobs`` at a time; a version starts once the one before it is done."""
        summary = Summary(dry_run=self.dry_run)
        gate = asyncio.Semaphore(self.jobs)
        pending: set[asyncio.Task[None]] = set()
        current_version: object = object()  # no version yet: differs from every row's
        chunks = legacy.rows(conn)
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            for row in chunk:
                if row.get("version") != current_version:
                    await _drain(pending)
                    current_version = row.get("version")
                await gate.acquire()
                task = asyncio.create_task(self._one(row, summary))
                task.add_done_callback(lambda _t: gate.release())
                pending.add(task)
                task.add_done_callback(pending.discard)
        await _drain(pending)
        return summary

    async def _one(self, row: legacy.LegacyRow, summary: Summary) -> None:
        legacy_id = str(row.get("id"))
        try:
            outcome = await self._import(row)
        except Skip as skip:
            outcome = Outcome("skipped", Skipped(legacy_id, skip.reason, skip.message))
        summary.total += 1
        if outcome.kind == "imported":
            summary.imported += 1
        elif outcome.kind == "present":
            summary.already_present += 1
        else:
            assert outcome.skip is not None
            summary.skipped.append(outcome.skip)
            log.debug("skipped legacy record %s: %s: %s", legacy_id, outcome.skip.reason, outcome.skip.message)
        if self.on_record is not None:
            self.on_record(outcome)

    async def _import(self, row: legacy.LegacyRow) -> Outcome:
        mapped = await asyncio.to_thread(map_row, row, self.root)
        manifest = mapped.manifest
        existing = None
        if self.look_up_existing:
            async with read_connection(self.services.engine) as conn:
                existing = await artifact_store.get(conn, manifest.id)
        if existing is not None:
            if existing.checksum != manifest.checksum:
                raise Skip("conflict", f"artifact {manifest.id} is already here with checksum {existing.checksum}")
            self._versions[manifest.id] = existing.version
            return Outcome("present")
        size = await asyncio.to_thread(_size, mapped.source)
        if size != manifest.size_bytes:
            raise Skip("size_mismatch", f"size_bytes is {manifest.size_bytes}, the file has {size} bytes")
        limit = self.services.settings.max_file_bytes
        if size > limit:
            raise Skip("too_large", f"the file has {size} bytes, STORAGE_MAX_FILE_BYTES is {limit}")
        if self.dry_run:
            actual = await asyncio.to_thread(_sha256, mapped.source)
            _check_checksum(mapped, actual)
            await self._check_chain(mapped)
            self._versions[manifest.id] = manifest.version
            return Outcome("imported")
        return await self._register(mapped)

    async def _check_chain(self, mapped: Mapped) -> None:
        """What the register path's version-chain check would say, for a dry run that registers nothing."""
        previous_id = mapped.manifest.supersedes
        if previous_id is None:
            return
        previous = self._versions.get(previous_id)
        if previous is None and self.look_up_existing:
            async with read_connection(self.services.engine) as conn:
                row = await artifact_store.get(conn, previous_id)
            previous = row.version if row is not None else None
        if previous is None:
            raise Skip("broken_chain", f"supersedes names artifact {previous_id}, which is neither here nor imported")
        if mapped.manifest.version != previous + 1:
            raise Skip("broken_chain", f"version {mapped.manifest.version} cannot follow version {previous}")

    async def _register(self, mapped: Mapped) -> Outcome:
        files = self.services.files
        manifest = mapped.manifest
        temp = files.join(TEMP, f"import-{manifest.id}{_extension(mapped.source.name)}")
        try:
            actual = await asyncio.to_thread(_copy_hashing, mapped.source, files.fs, temp)
            _check_checksum(mapped, actual)
            params = RegisterArtifactParams(manifest=manifest.model_copy(update={"uri": files.url(temp)}))
            result = await register_artifact(params, HandlerContext(self.services, SYSTEM))
            out = result.output if isinstance(result, Committed) else result
        except StorageError as exc:
            await files.remove(temp)
            if exc.retryable:
                raise  # the database or storage is out: stop, a re-run continues where this one stopped
            reason = REASON_OF_CODE.get(exc.code, exc.code.value.lower())
            if (exc.details or {}).get("field") == "manifest.supersedes":  # an unknown predecessor is NOT_FOUND
                reason = "broken_chain"
            raise Skip(reason, f"{exc.code.value}: {exc.message} {exc.details or ''}".strip()) from None
        except BaseException:
            await files.remove(temp)
            raise
        if not out.registered:
            await files.remove(temp)
            return Outcome("present")
        return Outcome("imported")


async def _drain(pending: set[asyncio.Task[None]]) -> None:
    """Wait for the records in flight; if one failed hard, cancel the others and raise its error."""
    if not pending:
        return
    tasks = list(pending)
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _check_checksum(mapped: Mapped, actual: str) -> None:
    if actual != mapped.manifest.checksum:
        raise Skip("checksum_mismatch", f"checksum is {mapped.manifest.checksum}, the file hashes to {actual}")


def _extension(name: str) -> str:
    """The legacy file's extension (``<id>_<name>.<ext>``), so the permanent file keeps it."""
    return safe_segment(posixpath.splitext(name)[1], max_len=17) if "." in name else ""


def _open_legacy(path: Path) -> BinaryIO:
    """The legacy file for reading; failing to is the record's problem (skipped), not the import's."""
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise Skip("file_missing", f"no file at {path}") from None
    except OSError as exc:
        raise Skip("file_unreadable", f"{path}: {exc.strerror or exc}") from None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        raise Skip("file_missing", f"no file at {path}") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with _open_legacy(path) as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _copy_hashing(source: Path, fs: AbstractFileSystem, dest: str) -> str:
    """Copy ``source`` to ``dest`` on the storage's filesystem in one pass, returning the bytes' sha256."""
    digest = hashlib.sha256()
    with _open_legacy(source) as reader, fs.open(dest, "wb") as writer:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            writer.write(chunk)
    return "sha256:" + digest.hexdigest()
