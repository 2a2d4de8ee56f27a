"""The crash-safe spill buffer: writes the worker could not take, kept on local disk until replay.

Layout of the buffer directory::

    pending/     one file per command, named <sequence>-<envelope id>.cmd; replay order = name order;
                 beside a register_artifact, <same name>.blob: a copy of the artifact's bytes (see below)
    tmp/         files being written (temp name + fsync + rename: a crash leaves a whole file or none)
    quarantine/  files that were not valid items (cut, empty, garbage, foreign), with a .reason.json note
    failed/      commands the worker refused for good, with the error beside them (.error.json)
    replay.lock  flock held by whoever replays, so two clients never send the same item at once
    spill.lock   flock held while a command and its file copy are put in place or taken away, so a
                 client opening the buffer never mistakes a copy whose command is being written for debris

Why a file copy: a buffered registration points at a file staged under ``<STORAGE_ROOT>/temp/``, and the
worker's ``temp_orphans`` cleanup moves temp files older than an hour away. The copy lets replay put the
bytes back after an outage of any length. It is written like an item (temp name, fsync, rename, fsync of
the folder) and before it, so a crash leaves a whole pair, or a copy without its command (quarantined on
open), never a command whose copy is half there. Both count toward the byte limit and go together.

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
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from buffer import _format
from buffer._format import BlobInfo, NotAnItem, TooLarge
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
class FileCopy:
    """Where to read the bytes a ``register_artifact`` points at, so the buffer can keep a copy beside it."""

    open: Callable[[], AbstractContextManager[BinaryIO]]
    """Opens the staged file for reading (called once, in the spilling thread)."""
    uri: str
    """For log lines only."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A pending file as listed, not yet read."""

    path: Path
    seq: int
    size: int
    """Bytes on disk: the command file plus its file copy, if any."""
    blob: Path | None = None
    """The file copy beside the command, when one was listed."""

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
    blob: Path | None = None
    """The copy of the artifact's bytes kept with a ``register_artifact`` (None: the command alone)."""
    blob_info: BlobInfo | None = None
    user_id: str | None = None
    """The AMQP ``user_id`` it was sent with (None: none): only a client connected as that user replays it."""

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
    copies_kept: int = 0
    """Registrations spilled with a copy of their file's bytes."""
    restaged: int = 0
    """Files put back from a copy before a replay because the staged one was gone."""


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
                    if problem := _blob_problem(blob, header.blob, full=True):
                        self._quarantine(path, problem, companion=blob)
                        continue
                self._last_seq = max(self._last_seq, seq)
        return self

    @contextlib.contextmanager
    def _pair_lock(self) -> Iterator[None]:
        """Between processes and threads alike: each holder opens its own descriptor, so flock excludes all."""
        fd = os.open(self.directory / "spill.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

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
        target.with_name(target.name + ".reason.json").write_text(json.dumps(note))
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
            copied = self._copy_in(envelope, file_copy, room=self.max_bytes - len(data)) if file_copy else None
            blob_size = 0
            if copied is not None:
                data = _format.encode(envelope, reason, copied[1], user_id=user_id)
                blob_size = copied[1].size
                if len(data) + blob_size > self.max_bytes:  # the header grew by a few bytes: keep the command
                    self._drop_temp(copied[0])
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
                        self._drop_temp(leftover)
                raise SpillFailed(
                    f"could not write the buffer file: {exc.strerror or exc}",
                    {"path": str(final), "errno": exc.errno, "envelope_id": envelope.id},
                ) from exc
        self.counters.spilled += 1
        if blob is not None:
            self.counters.copies_kept += 1
        return Entry(final, seq, len(data) + blob_size, blob)

    def _copy_in(self, envelope: CommandEnvelope, source: FileCopy, *, room: int) -> tuple[Path, BlobInfo] | None:
        """Copy the file into ``tmp/`` (fsynced, not yet in place) if it can be kept; None when it cannot."""
        expected = _format.manifest_checksum(envelope)
        manifest = envelope.data.params.get("manifest") or {}
        size = manifest.get("size_bytes") if isinstance(manifest, dict) else None
        if expected is None or not isinstance(size, int):
            return None
        if size > room:
            log.warning(
                "buffer: %s (%d bytes) does not fit the buffer's byte limit (%d): the registration %s is kept "
                "without a copy, so it needs the staged file to outlast the outage",
                source.uri,
                size,
                self.max_bytes,
                envelope.id,
            )
            return None
        temp = self.folder(TMP) / f"{_format.item_name(0, envelope.id)[:-4]}{_format.BLOB_SUFFIX}.{os.getpid()}.tmp"
        self._drop_temp(temp)  # a leftover of a killed writer whose pid this process now has
        try:
            with source.open() as reader:
                got_size, digest = _format.copy_to_temp(reader, temp, limit=size)
        except (OSError, TooLarge) as exc:
            self._drop_temp(temp)
            log.warning("buffer: no copy of %s kept for %s: %s", source.uri, envelope.id, exc)
            return None
        if (got_size, digest) != (size, expected):
            self._drop_temp(temp)
            log.warning(
                "buffer: no copy of %s kept for %s: the file is not the one its manifest describes "
                "(%d bytes, sha256 %s)",
                source.uri,
                envelope.id,
                got_size,
                digest,
            )
            return None
        return temp, BlobInfo(size, digest)

    @staticmethod
    def _drop_temp(path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink()

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
            if problem := _blob_problem(blob, header.blob, full=False):
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
        note = failed / (item.entry.name + ".error.json")
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
            quarantined=_count_items(self.folder(QUARANTINE)),
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
            counts[name] = _count_items(self.folder(name))
            for path in self.folder(name).iterdir():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            _format.fsync_dir(self.folder(name))
        return counts


def _blob_problem(path: Path, expected: BlobInfo, *, full: bool) -> str | None:
    """Why a file copy cannot be trusted (missing, wrong size, with ``full`` wrong sha256), or None."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "its file copy is missing"
    if size != expected.size:
        return f"its file copy is {size} bytes, the manifest says {expected.size}"
    if full and _format.sha256_of(path)[1] != expected.sha256:
        return "its file copy does not hash to the manifest's checksum"
    return None


def _count_items(folder: Path) -> int:
    """Files set aside, one per command: notes do not count, nor a file copy kept with its command."""
    names = {p.name for p in folder.iterdir()}
    count = 0
    for name in names:
        if name.endswith((".reason.json", ".error.json")):
            continue
        if name.endswith(_format.BLOB_SUFFIX) and name[: -len(_format.BLOB_SUFFIX)] + _format.SUFFIX in names:
            continue
        count += 1
    return count


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
