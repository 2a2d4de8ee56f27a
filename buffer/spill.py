"""The crash-safe spill buffer: writes the worker could not take, kept on local disk until replay.

The directory's layout is ``contracts.spill_layout``; the file copy kept beside a ``register_artifact``
is ``buffer.spill_copies``. Methods here do blocking file I/O (fsync); the async client calls them in a
thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import Counter
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

from buffer import _format
from buffer._format import NotAnItem
from buffer.errors import SpillFailed
from buffer.spill_copies import FileCopy, blob_problem, copy_in
from buffer.spill_types import (
    DEFAULT_DIR,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ITEMS,
    BufferStatus,
    Counters,
    Entry,
    FailedItem,
    Item,
)
from contracts import CommandEnvelope, utc_now
from contracts.spill_layout import (
    ERROR_NOTE,
    FAILED,
    ITEM_SUFFIX,
    PENDING,
    QUARANTINE,
    REASON_NOTE,
    REPLAY_LOCK,
    SPILL_LOCK,
    TMP,
    count_items,
)

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_DIR",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ITEMS",
    "BufferStatus",
    "Entry",
    "FileCopy",
    "Item",
    "SpillBuffer",
]


class SpillBuffer:
    """One buffer directory. ``open()`` checks every file once; later reads check each file again."""

    def __init__(
        self,
        directory: str | os.PathLike[str] = DEFAULT_DIR,
        *,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("buffer limits must be at least 1 item and 1 byte")
        self.directory = Path(directory).absolute()
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.counters = Counters()
        self._last_seq = 0
        self._seq_lock = threading.Lock()
        self._write_lock = threading.Lock()

    def folder(self, name: str) -> Path:
        return self.directory / name

    # -- opening -------------------------------------------------------------------------------

    def open(self) -> SpillBuffer:
        """Create the layout, quarantine whatever is not a valid item, and continue the sequence.

        Every file copy is hashed here (at most the byte limit in all), so a damaged one is found now.
        """
        for name in (PENDING, TMP, QUARANTINE, FAILED):
            self.folder(name).mkdir(parents=True, exist_ok=True)
        self._sweep_temp()
        with self._pair_lock():
            for path in sorted(self.folder(PENDING).iterdir()):
                if path.name.startswith("."):
                    continue
                owner = _format.item_of_blob(path)
                if owner is not None:
                    if not owner.exists():
                        self._quarantine(path, "a file copy without its command (the spill stopped in between)")
                    continue
                seq = _format.seq_of(path.name)
                if seq is None or not path.is_file():
                    self._quarantine(path, "file name is not a buffer item's")
                    continue
                try:
                    header, _ = _format.decode(path.read_bytes())
                except NotAnItem as exc:
                    self._quarantine(path, str(exc), companion=_format.blob_path(path))
                    continue
                except FileNotFoundError:
                    continue  # replayed or evicted by another client meanwhile
                if header.blob is not None:
                    blob = _format.blob_path(path)
                    if problem := blob_problem(blob, header.blob, full=True):
                        self._quarantine(path, problem, companion=blob)
                        continue
                self._last_seq = max(self._last_seq, seq)
        return self

    def _pair_lock(self) -> AbstractContextManager[bool]:
        """Held while a command and its file copy are put in place or taken away (see ``spill.lock``)."""
        return _format.locked(self.directory / SPILL_LOCK)

    def _sweep_temp(self) -> None:
        """Temp files of writers that are gone were never acknowledged: keep them aside, never replay them."""
        now = time.time()
        for path in self.folder(TMP).iterdir():
            if _format.is_leftover(path, now):
                self._quarantine(path, "half-written (its writer stopped before the rename)")

    def _quarantine(self, path: Path, reason: str, *, companion: Path | None = None) -> None:
        """Set a file aside with a note (and its file copy with it, under the same prefix); counts one."""
        prefix = f"{utc_now().strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-"
        target = self.folder(QUARANTINE) / (prefix + path.name)
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return
        if companion is not None:
            with contextlib.suppress(FileNotFoundError):
                os.replace(companion, self.folder(QUARANTINE) / (prefix + companion.name))
        note = {"reason": reason, "original": str(path), "quarantined_at": utc_now().isoformat()}
        target.with_name(target.name + REASON_NOTE).write_text(json.dumps(note))
        _format.fsync_dir(target.parent)
        _format.fsync_dir(path.parent)
        self.counters.quarantined += 1
        log.warning("buffer: quarantined %s: %s", path, reason)

    def quarantine(self, item: Item, reason: str) -> None:
        """Set a pending item (and its file copy) aside: it must not be replayed as it is."""
        with self._pair_lock():
            self._quarantine(item.entry.path, reason, companion=_format.blob_path(item.entry.path))

    # -- writing -------------------------------------------------------------------------------

    def spill(
        self,
        envelope: CommandEnvelope,
        reason: str | None = None,
        file_copy: FileCopy | None = None,
        *,
        user_id: str | None = None,
    ) -> Entry:
        """Keep a command durably; returns once it is on disk (then, and only then, the caller may say so).

        ``user_id`` is the AMQP ``user_id`` the command was sent with: kept in the header, so that only a
        client connected as that same broker user replays it (it runs as that identity, and its retries
        dedupe against the first attempt only under the same requester).

        With ``file_copy`` (a ``register_artifact`` whose file the client can read) the file's bytes are kept
        too, when they fit the byte limit and hash to the manifest's checksum; otherwise the command is kept
        alone, as it would be without a copy, and a warning says why. ``Entry.blob`` tells which happened.
        """
        data = _format.encode(envelope, reason, user_id=user_id)
        if len(data) > self.max_bytes:
            raise SpillFailed(
                f"command is {len(data)} bytes, more than the whole buffer ({self.max_bytes} bytes)",
                {"size_bytes": len(data), "max_bytes": self.max_bytes, "envelope_id": envelope.id},
            )
        with self._write_lock:
            room = self.max_bytes - len(data)
            copied = copy_in(self.folder(TMP), envelope, file_copy, room=room, max_bytes=self.max_bytes)
            blob_size = 0
            if copied is not None:
                data = _format.encode(envelope, reason, copied[1], user_id=user_id)
                blob_size = copied[1].size
                if len(data) + blob_size > self.max_bytes:  # the header grew by a few bytes: keep the command
                    _format.drop_temp(copied[0])
                    copied, blob_size, data = None, 0, _format.encode(envelope, reason, user_id=user_id)
            self._make_room(len(data) + blob_size)
            seq = self._next_seq()
            name = _format.item_name(seq, envelope.id)
            final = self.folder(PENDING) / name
            temp = self.folder(TMP) / f"{name}.{os.getpid()}.tmp"
            blob = _format.blob_path(final) if copied is not None else None
            try:
                with self._pair_lock():
                    if copied is not None and blob is not None:
                        _format.publish(copied[0], blob)
                    _format.write_durably(temp, final, data)
            except OSError as exc:
                leftovers = [temp, copied[0] if copied else None, None if final.exists() else blob]
                for leftover in leftovers:
                    if leftover is not None:
                        _format.drop_temp(leftover)
                raise SpillFailed(
                    f"could not write the buffer file: {exc.strerror or exc}",
                    {"path": str(final), "errno": exc.errno, "envelope_id": envelope.id},
                ) from exc
        self.counters.spilled += 1
        if blob is not None:
            self.counters.copies_kept += 1
        return Entry(final, seq, len(data) + blob_size, blob)

    def _next_seq(self) -> int:
        """Monotonic in this process and after every item already on disk (wall-clock based across restarts)."""
        with self._seq_lock:
            self._last_seq = max(self._last_seq + 1, time.time_ns())
            return self._last_seq

    def _make_room(self, incoming: int) -> None:
        entries = self.entries()
        count, total = len(entries), sum(e.size for e in entries)
        for oldest in entries:
            if count + 1 <= self.max_items and total + incoming <= self.max_bytes:
                break
            if self._discard(oldest):
                self.counters.evicted += 1
                log.warning(
                    "buffer full (%d items, %d bytes; limits %d / %d): evicted the oldest command %s",
                    count,
                    total,
                    self.max_items,
                    self.max_bytes,
                    oldest.name,
                )
            count, total = count - 1, total - oldest.size
        self._last_seq = max([self._last_seq] + [e.seq for e in entries])

    # -- reading -------------------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        """Pending commands in replay order (oldest first), each sized with its file copy."""
        items: list[tuple[Path, int, int]] = []
        blobs: dict[Path, tuple[Path, int]] = {}
        with os.scandir(self.folder(PENDING)) as listing:
            for dirent in listing:
                path = Path(dirent.path)
                seq = _format.seq_of(dirent.name)
                owner = _format.item_of_blob(path) if seq is None else None
                if seq is None and owner is None:
                    continue
                try:
                    size = dirent.stat().st_size
                except FileNotFoundError:
                    continue
                if owner is not None:
                    blobs[owner] = (path, size)
                elif seq is not None:
                    items.append((path, seq, size))
        found = []
        for path, seq, size in items:
            blob, blob_size = blobs.get(path, (None, 0))
            found.append(Entry(path, seq, size + blob_size, blob))
        found.sort(key=lambda e: (e.seq, e.name))
        return found

    def has_pending(self) -> bool:
        with os.scandir(self.folder(PENDING)) as listing:
            return any(_format.seq_of(d.name) is not None for d in listing)

    def load(self, entry: Entry) -> Item | None:
        """Read and check one pending file; a bad one is quarantined and ``None`` returned."""
        try:
            raw = entry.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            header, envelope = _format.decode(raw)
        except NotAnItem as exc:
            self._quarantine(entry.path, str(exc), companion=_format.blob_path(entry.path))
            return None
        blob = None
        if header.blob is not None:
            blob = _format.blob_path(entry.path)
            if problem := blob_problem(blob, header.blob, full=False):
                with self._pair_lock():
                    if entry.path.exists():  # not removed by a replayer meanwhile: really damaged
                        self._quarantine(entry.path, problem, companion=blob)
                return None
        return Item(entry, envelope, header.spilled_at, header.reason, blob, header.blob, header.user_id)

    # -- settling ------------------------------------------------------------------------------

    def remove(self, item: Item) -> None:
        """The worker answered: the item is done. Gone already (another replayer, eviction) is fine."""
        self._discard(item.entry)
        self.counters.replayed += 1

    def _discard(self, entry: Entry) -> bool:
        """Delete a command, then its file copy (a crash in between leaves a copy that open() sets aside)."""
        with self._pair_lock():
            try:
                entry.path.unlink()
            except FileNotFoundError:
                return False
            with contextlib.suppress(FileNotFoundError):
                _format.blob_path(entry.path).unlink()
            _format.fsync_dir(entry.path.parent)
        return True

    def fail(self, item: Item, error: dict[str, Any]) -> None:
        """The worker refused the command for good: keep it in ``failed/`` with the error beside it."""
        failed = self.folder(FAILED)
        note = failed / (item.entry.name + ERROR_NOTE)
        body = json.dumps({"error": error, "action": item.action, "failed_at": utc_now().isoformat()}, default=str)
        temp = self.folder(TMP) / f"{note.name}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        _format.write_durably(temp, note, body.encode())
        blob = _format.blob_path(item.entry.path)
        with self._pair_lock(), contextlib.suppress(FileNotFoundError):
            os.replace(item.entry.path, failed / item.entry.name)
            with contextlib.suppress(FileNotFoundError):
                os.replace(blob, failed / blob.name)  # the agent's bytes stay with the command for the operator
            _format.fsync_dir(failed)
            _format.fsync_dir(item.entry.path.parent)
        self.counters.failed += 1
        log.error("buffer: %s %s refused by the worker: %s", item.action, item.envelope.id, error.get("message"))

    def replay_lock(self) -> AbstractContextManager[bool]:
        """Yield True while this process alone may replay, False when another holder has it."""
        return _format.locked(self.directory / REPLAY_LOCK, wait=False)

    # -- operators -----------------------------------------------------------------------------

    def status(self) -> BufferStatus:
        entries = self.entries()
        by_action: Counter[str] = Counter()
        times: list[datetime] = []
        for entry in entries:
            item = self.load(entry)
            if item is not None:
                by_action[item.action] += 1
                times.append(item.spilled_at)
        return BufferStatus(
            directory=self.directory,
            pending=sum(by_action.values()),
            pending_bytes=sum(e.size for e in entries if e.path.exists()),
            by_action=dict(by_action),
            oldest=min(times, default=None),
            newest=max(times, default=None),
            quarantined=count_items(self.folder(QUARANTINE)),
            failed=self._failed_items(),
            max_items=self.max_items,
            max_bytes=self.max_bytes,
        )

    def _failed_items(self) -> list[FailedItem]:
        found = []
        for path in sorted(self.folder(FAILED).glob("*" + ITEM_SUFFIX)):
            note = path.with_name(path.name + ERROR_NOTE)
            try:
                body = json.loads(note.read_text())
            except (OSError, ValueError):
                body = {}
            found.append(FailedItem(path.name, body.get("action"), body.get("error") or {}))
        return found

    def purge(self, *, pending: bool = False, failed: bool = False, quarantine: bool = False) -> dict[str, int]:
        """Delete the chosen folders' files (an operator's decision); returns how many went from each."""
        chosen = {PENDING: pending, FAILED: failed, QUARANTINE: quarantine}
        counts = {}
        for name, wanted in chosen.items():
            if not wanted:
                continue
            counts[name] = count_items(self.folder(name))
            for path in self.folder(name).iterdir():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            _format.fsync_dir(self.folder(name))
        return counts
