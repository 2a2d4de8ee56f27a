"""Files behind fsspec: the temp → artifacts → orphans life cycle, path confinement and sha256.

The one boundary where fsspec and OS errors become wire errors. Blocking I/O runs in a thread so the
event loop keeps serving other commands while a 10 MiB file is hashed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import posixpath
import re
import stat
from collections.abc import Callable
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
"""Local files up to this size are checked (stat, read, sha256) and renamed on the event loop: that takes
less than handing the work to a thread and back. Larger files and object stores always go to a thread."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
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
        self._temp = self._real_folder(TEMP)

    def ensure_layout(self) -> None:
        for folder in (TEMP, ARTIFACTS, ORPHANS):
            self.fs.makedirs(self.join(folder), exist_ok=True)
        self._temp = self._real_folder(TEMP)

    def _real_folder(self, folder: str) -> str | None:
        """The local folder's path when it is its own real path (no symlink), for ``_real_path``'s shortcut."""
        path = self.join(folder)
        return path if self.is_local and os.path.realpath(path) == path else None

    def join(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def url(self, path: str) -> str:
        return f"file://{path}" if self.is_local else self.fs.unstrip_protocol(path)

    # -- confinement ---------------------------------------------------------------------------

    def resolve_incoming(self, uri: str) -> str:
        """The real path of an agent-given URI, refused unless it lies under ``temp/`` or ``artifacts/``."""
        path = self._path_of(uri)
        allowed = (self.join(TEMP), self.join(ARTIFACTS))
        if not any(path.startswith(folder + "/") for folder in allowed):
            raise PermissionDenied(
                "uri must point under the storage root's temp/ or artifacts/ folder",
                {"uri": uri, "allowed": [self.url(folder) + "/" for folder in allowed]},
            )
        return path

    def _path_of(self, uri: str) -> str:
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
            joined = raw if os.path.isabs(raw) else os.path.join(self.root, raw)
            return _real_path(joined, self._temp)  # symlinks resolved: one that escapes lands outside the root
        return posixpath.normpath(raw)

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

    async def inspect(self, path: str, *, expected_size: int, max_bytes: int) -> tuple[FileInfo, str | None]:
        """Size and, when the size is ``expected_size`` and at most ``max_bytes``, the sha256 of a file.

        One trip to the I/O thread for what a register checks, instead of one for each; none for a small
        local file (see INLINE_FILE_BYTES). A file larger than announced is never read here.
        """
        if self.is_local and expected_size <= INLINE_FILE_BYTES:
            return _call(self._inspect, path, expected_size, max_bytes)
        return await _io(self._inspect, path, expected_size, max_bytes)

    def _inspect(self, path: str, expected_size: int, max_bytes: int) -> tuple[FileInfo, str | None]:
        if self.is_local:
            return self._inspect_local(path, expected_size, max_bytes)
        info = self._info(path)
        if info.size != expected_size or info.size > max_bytes:
            return info, None
        return info, self._sha256(path)

    def _inspect_local(self, path: str, expected_size: int, max_bytes: int) -> tuple[FileInfo, str | None]:
        """One open, an fstat of the same file and its bytes: no second lookup of the path, no fsspec layers."""
        try:  # O_NONBLOCK: a FIFO planted in temp/ must be refused below, not block the open for a writer
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            raise NotFound("file not found", {"uri": self.url(path)}) from None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise InvalidArgument("uri names a directory, not a file", {"uri": self.url(path)})
            if not stat.S_ISREG(st.st_mode):
                raise InvalidArgument("uri does not name a regular file", {"uri": self.url(path)})
            info = FileInfo(path, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))
            if info.size != expected_size or info.size > max_bytes:
                return info, None
            return info, _sha256_of(functools.partial(os.read, fd))
        finally:
            os.close(fd)

    async def exists(self, path: str) -> bool:
        return await _io(self.fs.exists, path)

    # -- moves ---------------------------------------------------------------------------------

    def artifact_path(self, trace_id: str, artifact_id: str, source_path: str) -> str:
        """The permanent home ``artifacts/<trace_id>/<artifact_id><ext>``; the extension comes from the source."""
        ext = posixpath.splitext(source_path)[1]
        ext = ext if re.fullmatch(r"\.[A-Za-z0-9]{1,16}", ext) else ""
        return self.join(ARTIFACTS, safe_segment(trace_id), artifact_id + ext)

    def in_folder(self, path: str, folder: str) -> bool:
        return path.startswith(self.join(folder) + "/")

    async def place(self, source: str, dest: str) -> None:
        """Move a temp file into place; copy when the source lies under ``artifacts/`` (it may be shared)."""
        if source == dest:
            return
        if self.is_local and not self.in_folder(source, ARTIFACTS):  # a rename: no data is copied
            _call(self._place, source, dest)
            return
        await _io(self._place, source, dest)

    def _place(self, source: str, dest: str) -> None:
        if self.in_folder(source, ARTIFACTS):
            self._make_parent(dest)
            self.fs.copy(source, dest)
            return
        try:
            self._move_into(source, dest)
        except FileNotFoundError:
            # temp_orphans may retire a stale temp file between the checks and the commit: the bytes
            # were verified, so take them back from orphans/ rather than leave a committed row fileless
            retired = self.orphan_path(source)
            if not self.fs.exists(retired):
                raise
            self._move(retired, dest)

    def orphan_path(self, path: str) -> str:
        """Where ``to_orphans`` puts a file: the same path below ``orphans/``."""
        return self.join(ORPHANS, posixpath.relpath(path, self.root))

    def _make_parent(self, path: str) -> None:
        if self.is_local:  # object stores have no folders: a key's prefix exists with the key
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)

    def _move_into(self, source: str, dest: str) -> None:
        """A move whose destination folder usually exists already (a trace's folder): try first, create if not."""
        try:
            self._move(source, dest)
        except FileNotFoundError:
            if not self.is_local or os.path.isdir(posixpath.dirname(dest)):
                raise  # the source is what is missing (object stores have no folders to create)
            self._make_parent(dest)
            self._move(source, dest)

    def _move(self, source: str, dest: str) -> None:
        if self.is_local:
            os.replace(source, dest)
        else:  # object stores have no rename: copy, then delete; recovery finishes an interrupted pair
            self.fs.copy(source, dest)
            self.fs.rm(source)

    async def to_orphans(self, path: str) -> str | None:
        """Move a file to ``orphans/``, keeping its path below the root and starting its orphan clock now.

        None when the file was already gone.
        """
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
        if self.is_local:  # a rename keeps the old mtime; old_orphans must count from the move
            os.utime(dest)
        return dest

    async def remove(self, path: str) -> None:
        await _io(self._remove, path)

    def _remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path)

    async def walk(self, folder: str) -> list[FileInfo]:
        """Every file under a top-level folder with its size and modification time."""
        return await _io(self._walk, folder)

    def _walk(self, folder: str) -> list[FileInfo]:
        base = self.join(folder)
        if not self.fs.exists(base):
            return []
        found = self.fs.find(base, detail=True)
        return [
            FileInfo(_strip(self.fs, name), int(d.get("size") or 0), modified_time(d))
            for name, d in found.items()
            if d.get("type") == "file"
        ]

    async def sign(self, path: str, expires_in_s: int) -> tuple[str, bool, datetime | None]:
        """A URL for reading the file: presigned where the backend can sign, else the plain URI."""
        if self.is_local:
            return self.url(path), False, None
        try:
            signed = await _io(self.fs.sign, path, expires_in_s)
        except NotImplementedError:
            return self.url(path), False, None
        return str(signed), True, datetime.now(UTC) + timedelta(seconds=expires_in_s)


def _sha256_of(read: Callable[[int], bytes]) -> str:
    """The ``sha256:<hex>`` checksum of everything ``read`` returns, a chunk at a time."""
    digest = hashlib.sha256()
    while chunk := read(_CHUNK):
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _real_path(path: str, known_real_folder: str | None) -> str:
    """``os.path.realpath``, with one ``lstat`` instead of one per component for a file right in a folder
    whose own path is known to be real (the storage root's ``temp/``, where every upload lands)."""
    folder, name = os.path.split(path)
    if folder == known_real_folder and name not in ("", ".", ".."):
        try:
            if not stat.S_ISLNK(os.lstat(path).st_mode):
                return path
        except FileNotFoundError:
            return path  # nothing there to resolve: the same answer realpath gives
        except OSError:
            pass
    return os.path.realpath(path)


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)


def _strip(fs: fsspec.AbstractFileSystem, name: str) -> str:
    return os.path.realpath(name) if "file" in _protocols(fs) else name


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
    try:
        return fn(*args, **kwargs)
    except StorageError:
        raise
    except PermissionError as exc:
        raise PermissionDenied("storage refused access to the file", {"reason": str(exc)}) from exc
    except OSError as exc:
        raise Unavailable("file storage unavailable, retry later", {"reason": str(exc)[:200]}) from exc
