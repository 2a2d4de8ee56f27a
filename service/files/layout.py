"""The storage root's layout: its three folders, names that stay in their folder, and where a file goes.

``StorageRoot`` holds what every part of ``FileStore`` shares (the fsspec file system, the root path,
whether it is local) and the path arithmetic on it; it does no I/O beyond creating the folders.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import fsspec
from fsspec.core import url_to_fs
from fsspec.utils import get_protocol

TEMP = "temp"
ARTIFACTS = "artifacts"
ORPHANS = "orphans"
NAME_MAX_BYTES = 255
"""The longest path segment (in UTF-8 bytes) a registration accepts: what POSIX file systems store."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_segment(value: str, *, max_len: int = 128) -> str:
    """A single path segment that cannot escape its folder, whatever the input (``../x`` → ``.._x``)."""
    cleaned = _UNSAFE.sub("_", value)[:max_len]
    return "_" if cleaned in {"", ".", ".."} else cleaned


@dataclass(frozen=True, slots=True)
class FileInfo:
    path: str
    size: int
    modified: datetime | None


class StorageRoot:
    """Paths here are fsspec paths (no scheme); ``url()`` gives the URI agents see."""

    def __init__(self, root_url: str) -> None:
        # Object stores: no listing cache. Agents upload to temp/ behind our back, so a cached listing of
        # temp/ (from a cleanup walk) would make a fresh upload look missing; every lookup asks the store.
        local = get_protocol(root_url) in ("file", "local")
        fs, root = url_to_fs(root_url) if local else url_to_fs(root_url, use_listings_cache=False)
        self.fs: fsspec.AbstractFileSystem = fs
        self.is_local = "file" in protocols(fs)
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

    def in_folder(self, path: str, folder: str) -> bool:
        return path.startswith(self.join(folder) + "/")

    def artifact_path(self, trace_id: str, artifact_id: str, source_path: str) -> str:
        """The permanent home ``artifacts/<trace_id>/<artifact_id><ext>``; the extension comes from the source."""
        ext = posixpath.splitext(source_path)[1]
        ext = ext if re.fullmatch(r"\.[A-Za-z0-9]{1,16}", ext) else ""
        return self.join(ARTIFACTS, safe_segment(trace_id), artifact_id + ext)

    def orphan_path(self, path: str) -> str:
        """Where ``to_orphans`` puts a file: the same path below ``orphans/``."""
        return self.join(ORPHANS, posixpath.relpath(path, self.root))


def protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
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
