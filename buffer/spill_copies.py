"""The file copy kept beside a buffered ``register_artifact``: taking it, and checking it on the way back.

A buffered registration points at a file staged under ``<STORAGE_ROOT>/temp/``, and the worker's
``temp_orphans`` cleanup moves temp files older than an hour away. The copy lets replay put the bytes back
after an outage of any length. It is written like an item (temp name, fsync, rename, fsync of the folder)
and before it, so a crash leaves a whole pair, or a copy without its command (quarantined on open), never a
command whose copy is half there. Both count toward the byte limit and go together.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from buffer import _format
from buffer._format import BlobInfo, TooLarge
from contracts import CommandEnvelope
from contracts.spill_layout import BLOB_SUFFIX

log = logging.getLogger("buffer.spill")


@dataclass(frozen=True, slots=True)
class FileCopy:
    """Where to read the bytes a ``register_artifact`` points at, so the buffer can keep a copy beside it."""

    open: Callable[[], AbstractContextManager[BinaryIO]]
    """Opens the staged file for reading (called once, in the spilling thread)."""
    uri: str
    """For log lines only."""


def copy_in(
    tmp: Path, envelope: CommandEnvelope, source: FileCopy | None, *, room: int, max_bytes: int
) -> tuple[Path, BlobInfo] | None:
    """Copy the file into ``tmp`` (fsynced, not yet in place) if it can be kept; None when it cannot."""
    if source is None:
        return None
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
            max_bytes,
            envelope.id,
        )
        return None
    temp = tmp / f"{_format.item_name(0, envelope.id)[:-4]}{BLOB_SUFFIX}.{os.getpid()}.tmp"
    _format.drop_temp(temp)  # a leftover of a killed writer whose pid this process now has
    try:
        with source.open() as reader:
            got_size, digest = _format.copy_to_temp(reader, temp, limit=size)
    except (OSError, TooLarge) as exc:
        _format.drop_temp(temp)
        log.warning("buffer: no copy of %s kept for %s: %s", source.uri, envelope.id, exc)
        return None
    if (got_size, digest) != (size, expected):
        _format.drop_temp(temp)
        log.warning(
            "buffer: no copy of %s kept for %s: the file is not the one its manifest describes (%d bytes, sha256 %s)",
            source.uri,
            envelope.id,
            got_size,
            digest,
        )
        return None
    return temp, BlobInfo(size, digest)


def blob_problem(path: Path, expected: BlobInfo, *, full: bool) -> str | None:
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
