"""Reading a placed artifact's file again, for the scrubber: its size and sha256, a chunk at a time.

Locally the file is opened without following a link (a link in its place is no file, as for the
``missing_files`` scope) and must be a regular file; on an object store the key must exist and be a file.
The read runs in the I/O thread in 1 MiB chunks (``CHUNK``): hashlib releases the GIL while it digests a
chunk, so a file of any size never holds the event loop.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from service.files.blocking import CHUNK, _io
from service.files.layout import StorageRoot

_STORED_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
_NO_FILE = {errno.ENOENT, errno.ELOOP, errno.ENOTDIR}
"""What opening a stored file can meet that means "no file here" rather than a storage failure."""

OnBytes = Callable[[int], None]
"""Told the size of every chunk as it is read (a progress bar); runs in the I/O thread."""


@dataclass(frozen=True, slots=True)
class StoredBytes:
    size: int
    checksum: str


class Verifying(StorageRoot):
    async def read_stored(self, path: str, on_bytes: OnBytes | None = None) -> StoredBytes | None:
        """Size and ``sha256:<hex>`` of the regular file at ``path``; None when there is none (gone, a link,
        a folder). A failing storage is UNAVAILABLE, as for every file operation."""
        return await _io(self._read_stored, path, on_bytes)

    def _read_stored(self, path: str, on_bytes: OnBytes | None) -> StoredBytes | None:
        if not self.is_local:
            return self._read_remote(path, on_bytes)
        try:
            fd = os.open(path, _STORED_FLAGS)
        except OSError as exc:
            if exc.errno in _NO_FILE:
                return None
            raise
        with os.fdopen(fd, "rb", buffering=0) as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            return _digest(handle, on_bytes)

    def _read_remote(self, path: str, on_bytes: OnBytes | None) -> StoredBytes | None:
        try:
            if self.fs.info(path).get("type") != "file":
                return None
            with self.fs.open(path, "rb") as handle:
                return _digest(handle, on_bytes)
        except FileNotFoundError:
            return None


def _digest(handle: IO[bytes], on_bytes: OnBytes | None) -> StoredBytes:
    digest = hashlib.sha256()
    size = 0
    while chunk := handle.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if on_bytes is not None:
            on_bytes(len(chunk))
    return StoredBytes(size, "sha256:" + digest.hexdigest())
