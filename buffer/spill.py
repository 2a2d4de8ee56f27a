"""The crash-safe spill buffer: writes the worker could not take, kept on local disk until replay.

Layout of the buffer directory::

    pending/     one file per command, named <sequence>-<envelope id>.cmd; replay order = name order
    tmp/         files being written (temp name + fsync + rename: a crash leaves a whole file or none)
    quarantine/  files that were not valid items (cut, empty, garbage, foreign), with a .reason.json note
    failed/      commands the worker refused for good, with the error beside them (.error.json)
    replay.lock  flock held by whoever replays, so two clients never send the same item at once

Methods here do blocking file I/O (fsync); the async client calls them in a thread.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from buffer import _format
from buffer._format import NotAnItem
from buffer.errors import SpillFailed
from contracts import CommandEnvelope, utc_now

log = logging.getLogger(__name__)

DEFAULT_DIR = ".data/buffer"
DEFAULT_MAX_ITEMS = 1000
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
STALE_TEMP_S = 3600.0
"""A temp file older than this is a leftover even if its writer's pid is alive again (pid reuse)."""

PENDING, TMP, QUARANTINE, FAILED = "pending", "tmp", "quarantine", "failed"


@dataclass(frozen=True, slots=True)
class Entry:
    """A pending file as listed, not yet read."""

    path: Path
    seq: int
    size: int

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True, slots=True)
class Item:
    """A pending command, read and checked."""

    entry: Entry
    envelope: CommandEnvelope
    spilled_at: datetime
    reason: str | None

    @property
    def action(self) -> str:
        return self.envelope.data.action


@dataclass(slots=True)
class Counters:
    """What happened in this process; ``status()`` reports what is on disk."""

    spilled: int = 0
    evicted: int = 0
    quarantined: int = 0
    replayed: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class FailedItem:
    name: str
    action: str | None
    error: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BufferStatus:
    directory: Path
    pending: int
    pending_bytes: int
    by_action: dict[str, int]
    oldest: datetime | None
    newest: datetime | None
    quarantined: int
    failed: list[FailedItem] = field(default_factory=list)
    max_items: int = DEFAULT_MAX_ITEMS
    max_bytes: int = DEFAULT_MAX_BYTES

    def as_dict(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "pending": self.pending,
            "pending_bytes": self.pending_bytes,
            "by_action": self.by_action,
            "oldest": self.oldest.isoformat() if self.oldest else None,
            "newest": self.newest.isoformat() if self.newest else None,
            "quarantined": self.quarantined,
            "failed": [{"name": f.name, "action": f.action, "error": f.error} for f in self.failed],
            "max_items": self.max_items,
            "max_bytes": self.max_bytes,
        }


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
        """Create the layout, quarantine whatever is not a valid item, and continue the sequence."""
        for name in (PENDING, TMP, QUARANTINE, FAILED):
            self.folder(name).mkdir(parents=True, exist_ok=True)
        self._sweep_temp()
        for path in sorted(self.folder(PENDING).iterdir()):
            if path.name.startswith("."):
                continue
            seq = _format.seq_of(path.name)
            if seq is None or not path.is_file():
                self._quarantine(path, "file name is not a buffer item's")
                continue
            try:
                _format.decode(path.read_bytes())
            except NotAnItem as exc:
                self._quarantine(path, str(exc))
                continue
            except FileNotFoundError:
                continue  # replayed or evicted by another client meanwhile
            self._last_seq = max(self._last_seq, seq)
        return self

    def _sweep_temp(self) -> None:
        """Temp files of writers that are gone were never acknowledged: keep them aside, never replay them."""
        now = time.time()
        for path in self.folder(TMP).iterdir():
            pid = _pid_of_temp(path.name)
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if pid is not None and _pid_alive(pid) and age < STALE_TEMP_S:
                continue
            self._quarantine(path, "half-written (its writer stopped before the rename)")

    def _quarantine(self, path: Path, reason: str) -> None:
        target = self.folder(QUARANTINE) / f"{utc_now().strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{path.name}"
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return
        note = {"reason": reason, "original": str(path), "quarantined_at": utc_now().isoformat()}
        target.with_name(target.name + ".reason.json").write_text(json.dumps(note))
        _format.fsync_dir(target.parent)
        self.counters.quarantined += 1
        log.warning("buffer: quarantined %s: %s", path, reason)

    # -- writing -------------------------------------------------------------------------------

    def spill(self, envelope: CommandEnvelope, reason: str | None = None) -> Entry:
        """Keep a command durably; returns once it is on disk (then, and only then, the caller may say so)."""
        data = _format.encode(envelope, reason)
        if len(data) > self.max_bytes:
            raise SpillFailed(
                f"command is {len(data)} bytes, more than the whole buffer ({self.max_bytes} bytes)",
                {"size_bytes": len(data), "max_bytes": self.max_bytes, "envelope_id": envelope.id},
            )
        with self._write_lock:
            self._make_room(len(data))
            seq = self._next_seq()
            name = _format.item_name(seq, envelope.id)
            final = self.folder(PENDING) / name
            temp = self.folder(TMP) / f"{name}.{os.getpid()}.tmp"
            try:
                _format.write_durably(temp, final, data)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    temp.unlink()
                raise SpillFailed(
                    f"could not write the buffer file: {exc.strerror or exc}",
                    {"path": str(final), "errno": exc.errno, "envelope_id": envelope.id},
                ) from exc
        self.counters.spilled += 1
        return Entry(final, seq, len(data))

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
            with contextlib.suppress(FileNotFoundError):
                oldest.path.unlink()
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
        """Pending files in replay order (oldest first)."""
        found = []
        with os.scandir(self.folder(PENDING)) as listing:
            for dirent in listing:
                seq = _format.seq_of(dirent.name)
                if seq is None:
                    continue
                try:
                    size = dirent.stat().st_size
                except FileNotFoundError:
                    continue
                found.append(Entry(Path(dirent.path), seq, size))
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
            self._quarantine(entry.path, str(exc))
            return None
        return Item(entry, envelope, header.spilled_at, header.reason)

    # -- settling ------------------------------------------------------------------------------

    def remove(self, item: Item) -> None:
        """The worker answered: the item is done. Gone already (another replayer, eviction) is fine."""
        with contextlib.suppress(FileNotFoundError):
            item.entry.path.unlink()
            _format.fsync_dir(item.entry.path.parent)
        self.counters.replayed += 1

    def fail(self, item: Item, error: dict[str, Any]) -> None:
        """The worker refused the command for good: keep it in ``failed/`` with the error beside it."""
        failed = self.folder(FAILED)
        note = failed / (item.entry.name + ".error.json")
        body = json.dumps({"error": error, "action": item.action, "failed_at": utc_now().isoformat()}, default=str)
        temp = self.folder(TMP) / f"{note.name}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        _format.write_durably(temp, note, body.encode())
        with contextlib.suppress(FileNotFoundError):
            os.replace(item.entry.path, failed / item.entry.name)
            _format.fsync_dir(failed)
            _format.fsync_dir(item.entry.path.parent)
        self.counters.failed += 1
        log.error("buffer: %s %s refused by the worker: %s", item.action, item.envelope.id, error.get("message"))

    @contextlib.contextmanager
    def replay_lock(self) -> Iterator[bool]:
        """Yield True while this process alone may replay, False when another holder has it."""
        fd = os.open(self.directory / "replay.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

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
            quarantined=sum(1 for p in self.folder(QUARANTINE).iterdir() if not p.name.endswith(".reason.json")),
            failed=self._failed_items(),
            max_items=self.max_items,
            max_bytes=self.max_bytes,
        )

    def _failed_items(self) -> list[FailedItem]:
        found = []
        for path in sorted(self.folder(FAILED).glob("*" + _format.SUFFIX)):
            note = path.with_name(path.name + ".error.json")
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
            removed = 0
            for path in self.folder(name).iterdir():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1 if not path.name.endswith((".reason.json", ".error.json")) else 0
            _format.fsync_dir(self.folder(name))
            counts[name] = removed
        return counts


def _pid_of_temp(name: str) -> int | None:
    parts = name.rsplit(".", 2)
    if len(parts) == 3 and parts[2] == "tmp" and parts[1].isdigit():
        return int(parts[1])
    return None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
