"""Moves: a checked upload into ``artifacts/``, anything into ``orphans/`` (and a restored file back), removal.

After the move of an upload it checks that what now lies in ``artifacts/`` is the very file that was
hashed (same inode, size and mtime) with no other name, and otherwise places a copy written from the held
descriptor. Nothing here follows a symbolic link inside the root: links are moved and removed as links.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import stat
import uuid

from service.files.blocking import CHUNK, INLINE_FILE_BYTES, _call, _io
from service.files.layout import ORPHANS, StorageRoot
from service.files.staging import Upload


class Placing(StorageRoot):
    async def place(self, upload: Upload, dest: str) -> bool:
        """Put the staged upload at ``dest``; True when ``dest`` holds the bytes that were hashed.

        False when those bytes changed in place after hashing (written through the name or a descriptor):
        then nothing is left at ``dest``. On local storage the upload is renamed; what arrives is checked
        to be the very file that was hashed, alone (no other link), else a copy from the held descriptor
        is placed instead and whatever arrived goes to orphans/ untouched.
        """
        if self.is_local and upload.size <= INLINE_FILE_BYTES:  # a rename and an lstat: no data moved
            return _call(self._place, upload, dest)
        return await _io(self._place, upload, dest)

    def _place(self, upload: Upload, dest: str) -> bool:
        if not self.is_local:
            self._place_remote(upload.path, dest)
            return True
        assert upload.fd is not None and upload.stat is not None, "only a hashed upload is placed"
        if upload.stat.st_nlink == 1 and self._move_upload(upload, dest):
            try:
                arrived = os.lstat(dest)
            except FileNotFoundError:
                arrived = None
            if arrived is not None and _same_file(arrived, upload.stat):
                if arrived.st_nlink == 1:
                    return True  # the hot path: the hashed file itself, with no other name
            elif arrived is not None:
                self._to_orphans(dest)  # renamed over the upload meanwhile: set aside as it is, never followed
        return self._copy_into(upload, dest)

    def _place_remote(self, source: str, dest: str) -> None:
        """Object stores have no links: copy the object, then delete the upload."""
        try:
            self._move(source, dest)
        except FileNotFoundError:
            # temp_orphans may retire a stale temp file between the checks and the commit: the bytes
            # were verified, so take them back from orphans/ rather than leave a committed row fileless
            retired = self.orphan_path(source)
            if not self.fs.exists(retired):
                raise
            self._move(retired, dest)

    def _move_upload(self, upload: Upload, dest: str) -> bool:
        """Rename the upload's name to ``dest``; False when the name is gone (the open file still holds it)."""
        name = upload.path if upload.dir_fd is None else os.path.basename(upload.path)
        try:
            os.rename(name, dest, src_dir_fd=upload.dir_fd)
            return True
        except FileNotFoundError:
            if not os.path.isdir(os.path.dirname(dest)):  # a trace's first artifact: its folder is new
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    os.rename(name, dest, src_dir_fd=upload.dir_fd)
                    return True
        try:  # temp_orphans may have retired it after the checks: take it back, it is verified like any
            os.rename(self.orphan_path(upload.path), dest)
            return True
        except FileNotFoundError:
            return False

    def _copy_into(self, upload: Upload, dest: str) -> bool:
        """Write the held file's bytes to ``dest`` through a private name, hashing them on the way."""
        assert upload.fd is not None
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        staging = f"{dest}.{uuid.uuid4().hex[:16]}.part"
        out = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        placed = False
        try:
            digest, offset = hashlib.sha256(), 0
            with os.fdopen(out, "wb") as handle:
                while chunk := os.pread(upload.fd, CHUNK, offset):
                    digest.update(chunk)
                    handle.write(chunk)
                    offset += len(chunk)
            if offset == upload.size and "sha256:" + digest.hexdigest() == upload.checksum:
                os.replace(staging, dest)
                placed = True
        finally:
            if not placed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(staging)
        if not placed and os.path.lexists(dest):
            self._to_orphans(dest)  # the hashed file itself, changed in place since: not what was registered
        return placed

    def _make_parent(self, path: str) -> None:
        if self.is_local:  # object stores have no folders: a key's prefix exists with the key
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)

    def _move(self, source: str, dest: str) -> None:
        if self.is_local:
            os.replace(source, dest)  # a link is renamed as a link
        else:  # object stores have no rename: copy, then delete; recovery finishes an interrupted pair
            self.fs.copy(source, dest)
            self.fs.rm(source)

    async def to_orphans(self, path: str) -> str | None:
        """Move a file (or a link, as a link) to ``orphans/``, keeping its path below the root and starting its
        orphan clock now. None when it was already gone."""
        return await _io(self._to_orphans, path)

    def _to_orphans(self, path: str) -> str | None:
        if self.in_folder(path, ORPHANS):
            return path
        dest = self.orphan_path(path)
        try:
            self._make_parent(dest)
            self._move(path, dest)
        except FileNotFoundError:
            return None
        if self.is_local:  # a rename keeps the old mtime; old_orphans must count from the move (the link's own)
            os.utime(dest, follow_symlinks=False)
        return dest

    async def take_back(self, path: str) -> bool:
        """Move a retired file back from ``orphans/`` to ``path`` (a restored artifact's place); True when
        ``path`` then holds a regular file, moved now or never moved away (a delete whose move did not run).
        A link is never taken back, nor followed."""
        return await _io(self._take_back, path)

    def _take_back(self, path: str) -> bool:
        if self.holds_file(path):
            return True
        retired = self.orphan_path(path)
        if not self.holds_file(retired):
            return False
        self._make_parent(path)
        with contextlib.suppress(FileNotFoundError):  # a concurrent restore took it first
            self._move(retired, path)
        return self.holds_file(path)

    def holds_file(self, path: str) -> bool:
        """Blocking: a regular file (not a link, not a folder) is at ``path``."""
        if not self.is_local:
            return bool(self.fs.exists(path))
        try:
            return stat.S_ISREG(os.lstat(path).st_mode)
        except FileNotFoundError:
            return False

    async def remove(self, path: str) -> None:
        await _io(self._remove, path)

    def _remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.is_local:
                os.unlink(path)  # a link goes, never what it points at
            else:
                self.fs.rm(path)


def _same_file(arrived: os.stat_result, hashed: os.stat_result) -> bool:
    """The regular file that was hashed, unchanged since by size and mtime (a write moves the mtime on)."""
    return (
        stat.S_ISREG(arrived.st_mode)
        and (arrived.st_dev, arrived.st_ino) == (hashed.st_dev, hashed.st_ino)
        and (arrived.st_size, arrived.st_mtime_ns) == (hashed.st_size, hashed.st_mtime_ns)
    )
