"""The on-disk form of one buffered command, and the durable file operations the buffer is built from.

A file is one header line of JSON (magic, version, body length and sha256, when and why it was spilled)
followed by the envelope's JSON bytes. Reading checks all of it, so a file that was cut, emptied, filled
with garbage or written by something else is recognised as not a valid item instead of being replayed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contracts import SPILLABLE_ACTIONS, CommandEnvelope, utc_now

MAGIC = "mindbus-spill"
FORMAT_VERSION = 1
SUFFIX = ".cmd"
SEQ_DIGITS = 20
NAME_PATTERN = re.compile(rf"^(\d{{{SEQ_DIGITS}}})-([A-Za-z0-9_.-]{{1,200}})\{SUFFIX}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
MAX_HEADER_BYTES = 4096


class NotAnItem(ValueError):
    """The file is not a valid buffered command; the message says why (it goes to the quarantine note)."""


@dataclass(frozen=True, slots=True)
class Header:
    length: int
    sha256: str
    spilled_at: datetime
    reason: str | None


def item_name(seq: int, envelope_id: str) -> str:
    return f"{seq:0{SEQ_DIGITS}d}-{_UNSAFE.sub('_', envelope_id)[:200]}{SUFFIX}"


def seq_of(name: str) -> int | None:
    match = NAME_PATTERN.match(name)
    return int(match.group(1)) if match else None


def encode(envelope: CommandEnvelope, reason: str | None) -> bytes:
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
    return Header(len(body), header["sha256"], spilled_at, reason if isinstance(reason, str) else None), envelope


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (the entry lives in the directory, not the file)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(temp: Path, final: Path, data: bytes) -> None:
    """Write to ``temp``, fsync it, rename it to ``final``, fsync the folder: ``final`` is whole or absent."""
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, final)
    fsync_dir(final.parent)
    if temp.parent != final.parent:
        fsync_dir(temp.parent)
