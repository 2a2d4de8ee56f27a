"""The on-disk form of one buffered command, and the durable file operations the buffer is built from.

A file is one header line of JSON (magic, version, body length and sha256, when and why it was spilled)
followed by the envelope's JSON bytes. Reading checks all of it, so a file that was cut, emptied, filled
with garbage or written by something else is recognised as not a valid item instead of being replayed.

A ``register_artifact`` item may have a file copy beside it (``<same name>.blob``): the artifact's bytes,
so replay can put the file back when the worker's cleanup moved the staged one away during a long outage.
The header then names the copy's size and sha256, which must be the manifest's checksum.

The header also keeps the AMQP ``user_id`` the command was sent with, if any: AMQP properties are not part
of the envelope, and a replay must act as the same broker-validated identity as the first attempt.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import ValidationError

from contracts import SPILLABLE_ACTIONS, CommandEnvelope, utc_now
from contracts.spill_layout import BLOB_SUFFIX, ITEM_SUFFIX

MAGIC = "mindbus-spill"
FORMAT_VERSION = 1
CHUNK_BYTES = 1024 * 1024
SEQ_DIGITS = 20
NAME_PATTERN = re.compile(rf"^(\d{{{SEQ_DIGITS}}})-([A-Za-z0-9_.-]{{1,200}})\{ITEM_SUFFIX}$")
BLOB_PATTERN = re.compile(rf"^(\d{{{SEQ_DIGITS}}})-([A-Za-z0-9_.-]{{1,200}})\{BLOB_SUFFIX}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
MAX_HEADER_BYTES = 4096
STALE_TEMP_S = 3600.0
"""A temp file older than this is a leftover even if its writer's pid is alive again (pid reuse)."""


class NotAnItem(ValueError):
    """The file is not a valid buffered command; the message says why (it goes to the quarantine note)."""


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """What the item's file copy must be: its size and its sha256 (hex), the manifest's checksum."""

    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Header:
    length: int
    sha256: str
    spilled_at: datetime
    reason: str | None
    blob: BlobInfo | None = None
    user_id: str | None = None


def item_name(seq: int, envelope_id: str) -> str:
    return f"{seq:0{SEQ_DIGITS}d}-{_UNSAFE.sub('_', envelope_id)[:200]}{ITEM_SUFFIX}"


def seq_of(name: str) -> int | None:
    match = NAME_PATTERN.match(name)
    return int(match.group(1)) if match else None


def blob_path(item_path: Path) -> Path:
    """Where an item's file copy lives: beside it, same name, ``.blob``."""
    return item_path.with_name(item_path.name[: -len(ITEM_SUFFIX)] + BLOB_SUFFIX)


def item_of_blob(path: Path) -> Path | None:
    """The item a ``.blob`` file belongs to, or None when the name is not a file copy's."""
    if not BLOB_PATTERN.match(path.name):
        return None
    return path.with_name(path.name[: -len(BLOB_SUFFIX)] + ITEM_SUFFIX)


def manifest_checksum(envelope: CommandEnvelope) -> str | None:
    """The sha256 (hex) a ``register_artifact`` manifest states, or None for any other command."""
    if envelope.data.action != "register_artifact":
        return None
    manifest = envelope.data.params.get("manifest")
    checksum = manifest.get("checksum") if isinstance(manifest, dict) else None
    if not isinstance(checksum, str) or not checksum.startswith("sha256:"):
        return None
    return checksum.removeprefix("sha256:")


def encode(
    envelope: CommandEnvelope, reason: str | None, blob: BlobInfo | None = None, *, user_id: str | None = None
) -> bytes:
    body = envelope.to_json_bytes()
    header: dict[str, Any] = {
        "magic": MAGIC,
        "v": FORMAT_VERSION,
        "length": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "spilled_at": utc_now().isoformat(),
    }
    if reason:
        header["reason"] = reason[:500]
    if blob is not None:
        header["blob"] = {"size": blob.size, "sha256": blob.sha256}
    if user_id is not None:
        header["user_id"] = user_id
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + body


def decode(raw: bytes) -> tuple[Header, CommandEnvelope]:
    """Check and parse a file's bytes; raises ``NotAnItem`` saying what is wrong."""
    if not raw:
        raise NotAnItem("empty file")
    newline = raw.find(b"\n", 0, MAX_HEADER_BYTES)
    if newline < 0:
        raise NotAnItem("no header line (truncated or not a buffer file)")
    try:
        header = json.loads(raw[:newline])
    except (ValueError, RecursionError):
        raise NotAnItem("header is not JSON") from None
    if not isinstance(header, dict) or header.get("magic") != MAGIC:
        raise NotAnItem("not a buffer file (no magic)")
    if header.get("v") != FORMAT_VERSION:
        raise NotAnItem(f"unsupported format version {header.get('v')!r}")
    body = raw[newline + 1 :]
    if len(body) != header.get("length"):
        raise NotAnItem(f"body is {len(body)} bytes, header says {header.get('length')} (truncated)")
    if hashlib.sha256(body).hexdigest() != header.get("sha256"):
        raise NotAnItem("body checksum mismatch")
    try:
        envelope = CommandEnvelope.model_validate_json(body)
        spilled_at = datetime.fromisoformat(str(header.get("spilled_at")))
    except (ValidationError, ValueError):
        raise NotAnItem("body is not a valid COMMAND envelope") from None
    if envelope.data.action not in SPILLABLE_ACTIONS:
        raise NotAnItem(f"action {envelope.data.action!r} is not one the buffer keeps")
    reason = header.get("reason")
    blob = _blob_of(header.get("blob"), envelope)
    user_id = header.get("user_id")
    if user_id is not None and (not isinstance(user_id, str) or not user_id):
        raise NotAnItem("header's user_id is not a user name")
    reason_text = reason if isinstance(reason, str) else None
    return Header(len(body), header["sha256"], spilled_at, reason_text, blob, user_id), envelope


def _blob_of(raw: object, envelope: CommandEnvelope) -> BlobInfo | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise NotAnItem("header's file copy entry is not an object")
    size, digest = raw.get("size"), raw.get("sha256")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise NotAnItem("header's file copy size is not a byte count")
    if not isinstance(digest, str) or not _HEX64.match(digest):
        raise NotAnItem("header's file copy sha256 is not 64 hex digits")
    if digest != manifest_checksum(envelope):
        raise NotAnItem("header's file copy sha256 is not the manifest's checksum")
    return BlobInfo(size, digest)


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (the entry lives in the directory, not the file)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_to_temp(reader: BinaryIO, temp: Path, *, limit: int, mode: int = 0o600) -> tuple[int, str]:
    """Stream ``reader`` into a new ``temp`` file and fsync it; returns (size, sha256 hex).

    ``mode`` (less the umask): private for the buffer's own files, world-readable for a file put back on the
    storage root, which the worker (maybe another user) must read like any staged file.

    Stops with ``TooLarge`` past ``limit`` bytes (the source grew since it was measured). The caller
    renames the temp file into place only once the size and hash are the ones it expects.
    """
    digest = hashlib.sha256()
    size = 0
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        while chunk := reader.read(CHUNK_BYTES):
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"the file is larger than {limit} bytes")
            digest.update(chunk)
            _write_all(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size, digest.hexdigest()


def sha256_of(path: Path) -> tuple[int, str]:
    """(size, sha256 hex) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            size += len(chunk)
            digest.update(chunk)
    return size, digest.hexdigest()


class TooLarge(ValueError):
    """A streamed file went past the size it was allowed."""


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def drop_temp(path: Path) -> None:
    """Remove a file that was never put in place, if it is there (best effort)."""
    with contextlib.suppress(OSError):
        path.unlink()


def publish(temp: Path, final: Path) -> None:
    """Rename a whole, fsynced ``temp`` file to ``final`` and make the rename durable."""
    os.replace(temp, final)
    fsync_dir(final.parent)
    if temp.parent != final.parent:
        fsync_dir(temp.parent)


def write_durably(temp: Path, final: Path, data: bytes) -> None:
    """Write to ``temp``, fsync it, rename it to ``final``, fsync the folder: ``final`` is whole or absent."""
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    publish(temp, final)


@contextlib.contextmanager
def locked(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive flock on ``path``: True once held; without ``wait``, False when another holds it.

    Between processes and threads alike: each holder opens its own descriptor, so flock excludes all.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if wait or exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_leftover(temp: Path, now: float) -> bool:
    """A temp file whose writer is gone (or that is older than STALE_TEMP_S): it was never acknowledged."""
    pid = _pid_of_temp(temp.name)
    try:
        age = now - temp.stat().st_mtime
    except FileNotFoundError:
        return False
    return pid is None or not _pid_alive(pid) or age >= STALE_TEMP_S


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
