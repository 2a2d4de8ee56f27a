"""Reading a folder's contents for cleanup and URLs for readers, on local disk and object stores alike."""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from service.files.blocking import _io
from service.files.layout import FileInfo, StorageRoot, modified_time


class Listing(StorageRoot):
    async def walk(self, folder: str) -> list[FileInfo]:
        """Every file (and link) under a top-level folder with its size and modification time."""
        return await _io(lambda: [info for batch in self.walk_batches(folder) for info in batch])

    def walk_batches(self, folder: str) -> Iterator[list[FileInfo]]:
        """Blocking: the entries under a top-level folder, one list per directory.

        Locally a symbolic link is an entry of its own (its lstat), never followed into, so a scope that
        moves or removes it acts on the link. Folders that vanish mid-walk are skipped.
        """
        base = self.join(folder)
        if not self.is_local:
            yield from self._walk_remote(base)
            return
        pending = [base]
        while pending:
            entries = []
            try:
                with os.scandir(pending.pop()) as listing:
                    for item in listing:
                        if item.is_dir(follow_symlinks=False):
                            pending.append(item.path)
                            continue
                        with contextlib.suppress(FileNotFoundError):
                            st = item.stat(follow_symlinks=False)
                            entries.append(FileInfo(item.path, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
            except (FileNotFoundError, NotADirectoryError):
                continue
            if entries:
                yield entries

    def _walk_remote(self, base: str) -> Iterator[list[FileInfo]]:
        if not self.fs.exists(base):
            return
        for root, _dirs, found in self.fs.walk(base, detail=True):
            entries = [
                FileInfo(posixpath.join(root, name), int(d.get("size") or 0), modified_time(d))
                for name, d in found.items()
                if d.get("type") == "file"
            ]
            if entries:
                yield entries

    async def sign(self, path: str, expires_in_s: int) -> tuple[str, bool, datetime | None]:
        """A URL for reading the file: presigned where the backend can sign, else the plain URI."""
        if self.is_local:
            return self.url(path), False, None
        try:
            signed = await _io(self.fs.sign, path, expires_in_s)
        except NotImplementedError:
            return self.url(path), False, None
        return str(signed), True, datetime.now(UTC) + timedelta(seconds=expires_in_s)
