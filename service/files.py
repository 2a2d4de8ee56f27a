"""Files behind fsspec: the temp → artifacts → orphans life cycle, path confinement and sha256.

The one boundary where fsspec and OS errors become wire errors. Blocking I/O runs in a thread so the
event loop keeps serving other commands while a 10 MiB file is hashed.

Agents write ``temp/`` and nothing they put there is trusted. A registration opens its file once, without
following a link, hashes it from that descriptor and keeps it open until the move; after the move it
checks that what now lies in ``artifacts/`` is that very file (same inode, size and mtime) with no other
name, and otherwise places a copy written from the descriptor. No operation here follows a symbolic link
inside the root: maintenance moves and removes links as links.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import os
import posixpath
import re
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ParamSpec, TypeVar
from urllib.parse import unquote, urlsplit

import fsspec
from fsspec.core import url_to_fs
from fsspec.utils import get_protocol

from contracts import InvalidArgument, NotFound, PermissionDenied, StorageError, Unavailable

TEMP = "temp"
ARTIFACTS = "artifacts"
ORPHANS = "orphans"
_CHUNK = 1024 * 1024
INLINE_FILE_BYTES = 64 * 1024
"""Local files up to this size are checked (open, read, sha256) and renamed on the event loop: that takes
less than handing the work to a thread and back. Larger files and object stores always go to a thread."""
NAME_MAX_BYTES = 255
"""The longest path segment (in UTF-8 bytes) a registration accepts: what POSIX file systems store."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_UPLOAD_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW
"""O_NOFOLLOW: a link in place of the file fails (ELOOP); O_NONBLOCK: a FIFO never blocks the open."""
_FOLDER_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY
_AGENTS_FAULT = {errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR}
"""OS errors caused by the path an agent sent, not by the storage: retrying cannot help."""
P = ParamSpec("P")
R = TypeVar("R")


def safe_segment(value: str, *, max_len: int = 128) -> str:
    """A single path segment that cannot escape its folder, whatever the input (``../x`` → ``.._x``)."""
    cleaned = _UNSAFE.sub("_", value)[:max_len]
    return "_" if cleaned in {"", ".", ".."} else cleaned


@dataclass(frozen=True, slots=True)
class FileInfo:
    path: str
    size: int
    modified: datetime | None


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


class FileStore:
    """Paths here are fsspec paths (no scheme); ``url()`` gives the URI agents see."""

    def __init__(self, root_url: str) -> None:
        # Object stores: no listing cache. Agents upload to temp/ behind our back, so a cached listing of
        # temp/ (from a cleanup walk) would make a fresh upload look missing; every lookup asks the store.
        local = get_protocol(root_url) in ("file", "local")
        fs, root = url_to_fs(root_url) if local else url_to_fs(root_url, use_listings_cache=False)
        self.fs: fsspec.AbstractFileSystem = fs
        self.is_local = "file" in _protocols(fs)
        self.root = os.path.realpath(root) if self.is_local else root.rstrip("/")
        self.root_url = root_url
        self._temp = self.join(TEMP)

    def ensure_layout(self) -> None:
        for folder in (TEMP, ARTIFACTS, ORPHANS):
            self.fs.makedirs(self.join(folder), exist_ok=True)

    def join(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def url(self, path: str) -> str:
        return f"file://{path}" if self.is_local else self.fs.unstrip_protocol(path)

    # -- confinement ---------------------------------------------------------------------------

    def resolve_upload(self, uri: str) -> str:
        """The path of an agent-given source, refused unless it lies under ``temp/``.

        Folders on the way are resolved (a root configured through a link still matches), the file itself
        never: a link there is refused when it is opened (``stage``).
        """
        path = self._path_of(uri)
        if self.is_local:
            folder, name = os.path.split(path)
            if folder != self._temp:  # every upload the client makes lies right in temp/: no lookup then
                path = os.path.join(os.path.realpath(folder), name)
        if not self.in_folder(path, TEMP):
            raise PermissionDenied(
                "uri must point under the storage root's temp/ folder",
                {"uri": uri, "allowed": [self.url(self._temp) + "/"]},
            )
        if _segment_too_long(path):
            raise InvalidArgument(
                f"a name in the uri is longer than {NAME_MAX_BYTES} bytes",
                {"field": "manifest.uri", "uri": uri, "limit_bytes": NAME_MAX_BYTES},
            )
        return path

    def resolve_stored(self, uri: str) -> str:
        """The path of a stored artifact's URI, which the worker wrote: under ``artifacts/``, no link resolved."""
        path = self._path_of(uri)
        if not self.in_folder(path, ARTIFACTS):
            raise PermissionDenied("a stored artifact uri lies outside artifacts/", {"uri": uri})
        return path

    def _path_of(self, uri: str) -> str:
        """The normalised absolute path a URI names on this storage; no link is followed."""
        if "\x00" in uri:
            raise PermissionDenied("uri contains a NUL byte", {"uri": uri})
        parts = urlsplit(uri)
        own = _protocols(self.fs)
        scheme = parts.scheme.lower()
        if self.is_local and scheme in ("", "file"):
            raw = unquote(parts.path if scheme else uri)
            if scheme and parts.netloc not in ("", "localhost"):
                raise PermissionDenied("file URIs must not name a host", {"uri": uri})
        elif not self.is_local and scheme in own:
            raw = unquote(parts.netloc + parts.path)
        else:
            raise PermissionDenied(f"uri scheme {scheme or '(none)'!r} is not this storage's", {"uri": uri})
        if "\x00" in raw or ".." in raw.split("/"):
            raise PermissionDenied("uri must not contain '..' segments", {"uri": uri})
        if self.is_local:
            return os.path.normpath(raw if os.path.isabs(raw) else os.path.join(self.root, raw))
        return posixpath.normpath(raw)

    def in_folder(self, path: str, folder: str) -> bool:
        return path.startswith(self.join(folder) + "/")

    # -- checks ----------------------------------------------------------------------------------

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
                return _sha256_of(handle.read)
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
            if (refused := _refusal(exc, uri)) is None:
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
                upload.checksum = _sha256_of(functools.partial(os.read, fd))
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

    def holds_file(self, path: str) -> bool:
        """Blocking: a regular file (not a link, not a folder) is at ``path``."""
        if not self.is_local:
            return bool(self.fs.exists(path))
        try:
            return stat.S_ISREG(os.lstat(path).st_mode)
        except FileNotFoundError:
            return False

    # -- moves ---------------------------------------------------------------------------------

    def artifact_path(self, trace_id: str, artifact_id: str, source_path: str) -> str:
        """The permanent home ``artifacts/<trace_id>/<artifact_id><ext>``; the extension comes from the source."""
        ext = posixpath.splitext(source_path)[1]
        ext = ext if re.fullmatch(r"\.[A-Za-z0-9]{1,16}", ext) else ""
        return self.join(ARTIFACTS, safe_segment(trace_id), artifact_id + ext)

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
                while chunk := os.pread(upload.fd, _CHUNK, offset):
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

    def orphan_path(self, path: str) -> str:
        """Where ``to_orphans`` puts a file: the same path below ``orphans/``."""
        return self.join(ORPHANS, posixpath.relpath(path, self.root))

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

    async def remove(self, path: str) -> None:
        await _io(self._remove, path)

    def _remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.is_local:
                os.unlink(path)  # a link goes, never what it points at
            else:
                self.fs.rm(path)

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

    async def sign(self, path: str, expires_in_s: int) -> tuple[str, bool, datetime | None]:
        """A URL for reading the file: presigned where the backend can sign, else the plain URI."""
        if self.is_local:
            return self.url(path), False, None
        try:
            signed = await _io(self.fs.sign, path, expires_in_s)
        except NotImplementedError:
            return self.url(path), False, None
        return str(signed), True, datetime.now(UTC) + timedelta(seconds=expires_in_s)


def _segment_too_long(path: str) -> bool:
    """A segment over NAME_MAX_BYTES: the whole path in UTF-8 first, so a usual path is one C-level encode."""
    whole = path.encode("utf-8", "surrogatepass")
    return len(whole) > NAME_MAX_BYTES and any(len(part) > NAME_MAX_BYTES for part in whole.split(b"/"))


def _same_file(arrived: os.stat_result, hashed: os.stat_result) -> bool:
    """The regular file that was hashed, unchanged since by size and mtime (a write moves the mtime on)."""
    return (
        stat.S_ISREG(arrived.st_mode)
        and (arrived.st_dev, arrived.st_ino) == (hashed.st_dev, hashed.st_ino)
        and (arrived.st_size, arrived.st_mtime_ns) == (hashed.st_size, hashed.st_mtime_ns)
    )


def _refusal(exc: OSError, uri: str) -> StorageError | None:
    """The wire error for an upload that cannot be opened because of what the agent named, else None."""
    if exc.errno == errno.ELOOP:
        return PermissionDenied("uri names a symbolic link: register the file itself", {"uri": uri})
    if exc.errno in _AGENTS_FAULT:
        reason = os.strerror(exc.errno or 0)
        return InvalidArgument(f"uri does not name a usable file: {reason}", {"field": "manifest.uri", "uri": uri})
    return None


def _sha256_of(read: Callable[[int], bytes]) -> str:
    """The ``sha256:<hex>`` checksum of everything ``read`` returns, a chunk at a time."""
    digest = hashlib.sha256()
    while chunk := read(_CHUNK):
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)


def modified_time(details: dict[str, object]) -> datetime | None:
    """The modification time in an fsspec ``info``/``find`` record, whatever the backend calls it."""
    for key in ("mtime", "LastModified", "last_modified", "created"):
        value = details.get(key)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
    return None


async def _io(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    return await asyncio.to_thread(_call, fn, *args, **kwargs)  # type: ignore[arg-type]


def _call(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run blocking file work; OS errors become wire errors, retryable only when the storage is at fault."""
    try:
        return fn(*args, **kwargs)
    except StorageError:
        raise
    except PermissionError as exc:
        raise PermissionDenied("storage refused access to the file", {"reason": str(exc)}) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PermissionDenied("a symbolic link stands where a file or folder was expected", {}) from exc
        if exc.errno in _AGENTS_FAULT:
            raise InvalidArgument("the path does not name a usable file", {"reason": str(exc)[:200]}) from exc
        raise Unavailable("file storage unavailable, retry later", {"reason": str(exc)[:200]}) from exc
