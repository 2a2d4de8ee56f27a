"""Checking an upload in ``temp/``: its size and sha256, read from one descriptor that is then held.

A registration opens its file once, without following a link, hashes it from that descriptor and keeps
it open until the move (``Placing.place``), so exactly the hashed bytes are placed.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime

from contracts import InvalidArgument, NotFound
from service.files.blocking import INLINE_FILE_BYTES, _call, _io, refusal, sha256_of
from service.files.layout import FileInfo, StorageRoot, modified_time

_UPLOAD_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW
"""O_NOFOLLOW: a link in place of the file fails (ELOOP); O_NONBLOCK: a FIFO never blocks the open."""
_FOLDER_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY


@dataclass(slots=True)
class Upload:
    """A file of ``temp/`` checked for a registration.

    On local storage ``fd`` is the open file that was hashed (and ``stat`` its fstat then), held until the
    move so that exactly those bytes are placed, whatever happens to the file's name in between. ``close``
    it in every case; ``checksum`` is None when the file was not read (another size than announced, or over
    the cap), and then nothing is held.
    """

    path: str
    uri: str
    size: int
    modified: datetime | None
    checksum: str | None = None
    stat: os.stat_result | None = None
    fd: int | None = None
    dir_fd: int | None = None
    """The file's folder, open, when it lies below a subfolder of temp/: the move goes through it."""

    def close(self) -> None:
        for fd in (self.fd, self.dir_fd):
            if fd is not None:
                os.close(fd)
        self.fd = self.dir_fd = None


class Staging(StorageRoot):
    async def info(self, path: str) -> FileInfo:
        return await _io(self._info, path)

    def _info(self, path: str) -> FileInfo:
        try:
            details = self.fs.info(path)
        except FileNotFoundError:
            raise NotFound("file not found", {"uri": self.url(path)}) from None
        if details.get("type") != "file":
            raise InvalidArgument("uri names a directory, not a file", {"uri": self.url(path)})
        return FileInfo(path, int(details.get("size") or 0), modified_time(details))

    async def sha256(self, path: str) -> str:
        return await _io(self._sha256, path)

    def _sha256(self, path: str) -> str:
        try:
            with self.fs.open(path, "rb") as handle:
                return sha256_of(handle.read)
        except FileNotFoundError:
            raise NotFound("file not found", {"uri": self.url(path)}) from None

    async def stage(self, path: str, uri: str, *, expected_size: int, max_bytes: int) -> Upload:
        """Size and, when the size is ``expected_size`` and at most ``max_bytes``, the sha256 of an upload.

        ``path`` comes from ``resolve_upload``; ``uri`` is what the agent sent, for error details. One trip
        to the I/O thread for what a register checks; none for a small local file (see INLINE_FILE_BYTES).
        A file larger than announced is never read. Refusals: a link → PERMISSION_DENIED, missing →
        NOT_FOUND, not a regular file or a name the file system cannot hold → INVALID_ARGUMENT.
        """
        if self.is_local and expected_size <= INLINE_FILE_BYTES:
            return _call(self._stage, path, uri, expected_size, max_bytes)
        return await _io(self._stage, path, uri, expected_size, max_bytes)

    def _stage(self, path: str, uri: str, expected_size: int, max_bytes: int) -> Upload:
        if self.is_local:
            return self._stage_local(path, uri, expected_size, max_bytes)
        try:
            info = self._info(path)
        except NotFound:
            raise NotFound("file not found", {"uri": uri}) from None
        upload = Upload(path, uri, info.size, info.modified)
        if info.size == expected_size and info.size <= max_bytes:
            upload.checksum = self._sha256(path)
        return upload

    def _stage_local(self, path: str, uri: str, expected_size: int, max_bytes: int) -> Upload:
        """One open without following a link, an fstat of that file and its bytes: nothing looked up twice."""
        try:
            fd, dir_fd = self._open_upload(path)
        except FileNotFoundError:
            raise NotFound("file not found", {"uri": uri}) from None
        except OSError as exc:
            if (refused := refusal(exc, uri)) is None:
                raise  # the storage's own failure: _call makes it UNAVAILABLE
            raise refused from exc
        upload = Upload(path, uri, 0, None, fd=fd, dir_fd=dir_fd)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise InvalidArgument("uri names a directory, not a file", {"uri": uri})
            if not stat.S_ISREG(st.st_mode):
                raise InvalidArgument("uri does not name a regular file", {"uri": uri})
            upload.size, upload.modified, upload.stat = st.st_size, datetime.fromtimestamp(st.st_mtime, UTC), st
            if st.st_size == expected_size and st.st_size <= max_bytes:
                upload.checksum = sha256_of(functools.partial(os.read, fd))
        except BaseException:
            upload.close()
            raise
        if upload.checksum is None:
            upload.close()  # refused on its size: nothing to place, nothing to hold
        return upload

    def _open_upload(self, path: str) -> tuple[int, int | None]:
        """The file, opened without following a link, and its folder's descriptor when below temp/'s own.

        Subfolders are opened one by one from temp/, none through a link, so a folder swapped for a link
        after ``resolve_upload`` leads nowhere.
        """
        folder, name = os.path.split(path)
        if folder == self._temp:
            return os.open(path, _UPLOAD_FLAGS), None
        dir_fd = os.open(self._temp, _FOLDER_FLAGS)
        try:
            for part in os.path.relpath(folder, self._temp).split(os.sep):
                try:
                    inner = os.open(part, _FOLDER_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
                except NotADirectoryError as exc:  # a link opened with O_DIRECTORY | O_NOFOLLOW says ENOTDIR
                    if stat.S_ISLNK(os.lstat(part, dir_fd=dir_fd).st_mode):
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), part) from exc
                    raise
                os.close(dir_fd)
                dir_fd = inner
            return os.open(name, _UPLOAD_FLAGS, dir_fd=dir_fd), dir_fd
        except BaseException:
            os.close(dir_fd)
            raise

    async def exists(self, path: str) -> bool:
        return await _io(self.fs.exists, path)
