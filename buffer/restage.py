"""The file behind a buffered registration: copied into the buffer at spill time, put back before replay.

A registration points at a file the agent staged under ``<STORAGE_ROOT>/temp/``. The worker's cleanup
(``temp_orphans``, and its start-up recovery) moves temp files older than an hour to ``orphans/``, so after
a long outage the file the buffered command names is gone and the worker would answer ``NOT_FOUND``.
``StorageFiles`` is the client's side of that: it reads the staged file so the buffer can keep a copy, and
before a replay it writes the copy back to the very same URI when nothing (or a wrong-sized file) is there,
through a temporary name and a rename, so the worker never sees half a file.

It works on the storage root the client is configured with (``STORAGE_ROOT``) and, like the worker, only
under its ``temp/`` and ``artifacts/`` folders. A URI elsewhere, a root fsspec cannot open or a file it
cannot read means no copy: the command is buffered alone and replayed as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import posixpath
import threading
import uuid
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from fsspec.core import url_to_fs

from buffer import _format
from buffer.spill import FileCopy, Item
from contracts import CommandEnvelope, Unavailable

log = logging.getLogger(__name__)

TEMP, ARTIFACTS = "temp", "artifacts"
_CHUNK = _format.CHUNK_BYTES


class CopyDamaged(Exception):
    """The buffer's copy does not hash to the manifest's checksum: it must not be put back."""


class StorageFiles:
    """The client's view of its storage root, opened on first use (a root fsspec cannot open disables it)."""

    def __init__(self, storage_root: str | None) -> None:
        self.storage_root = storage_root or None
        self._lock = threading.Lock()  # spills run in worker threads, several at once
        self._opened = False
        self._fs: Any = None
        self._root = ""
        self._local = False

    def _open(self) -> bool:
        with self._lock:
            return self._open_once()

    def _open_once(self) -> bool:
        if not self._opened:
            self._opened = True
            if self.storage_root is None:
                return False
            try:
                fs, root = url_to_fs(self.storage_root)
            except (ImportError, ValueError, OSError) as exc:
                log.warning(
                    "storage root %s cannot be opened (%s): buffered registrations are kept without a copy "
                    "of their file",
                    self.storage_root,
                    exc,
                )
                return False
            protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
            self._fs = fs
            self._local = "file" in protocols
            self._root = os.path.realpath(root) if self._local else str(root).rstrip("/")
        return self._fs is not None

    # -- where -----------------------------------------------------------------------------------

    def path_of(self, uri: str) -> str | None:
        """The fsspec path of a URI under the root's ``temp/`` or ``artifacts/``, else None."""
        if not self._open() or "\x00" in uri:
            return None
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        protocols = (self._fs.protocol,) if isinstance(self._fs.protocol, str) else tuple(self._fs.protocol)
        if self._local and scheme in ("", "file") and parts.netloc in ("", "localhost"):
            raw = unquote(parts.path if scheme else uri)
        elif not self._local and scheme in protocols:
            raw = unquote(parts.netloc + parts.path)
        else:
            return None
        if ".." in raw.split("/"):
            return None
        if self._local:
            path = os.path.realpath(raw if os.path.isabs(raw) else os.path.join(self._root, raw))
        else:
            path = posixpath.normpath(raw)
        allowed = (posixpath.join(self._root, TEMP) + "/", posixpath.join(self._root, ARTIFACTS) + "/")
        return path if path.startswith(allowed) else None

    def in_temp(self, path: str) -> bool:
        return path.startswith(posixpath.join(self._root, TEMP) + "/")

    # -- at spill time -----------------------------------------------------------------------------

    def file_copy(self, envelope: CommandEnvelope) -> FileCopy | None:
        """How the buffer can read a ``register_artifact``'s file, or None (another command, or not ours)."""
        if envelope.data.action != "register_artifact":
            return None
        uri = _manifest(envelope).get("uri")
        path = self.path_of(uri) if isinstance(uri, str) else None
        if path is None or not isinstance(uri, str):
            return None
        fs = self._fs

        def open_file() -> contextlib.AbstractContextManager[BinaryIO]:
            handle: contextlib.AbstractContextManager[BinaryIO] = fs.open(path, "rb")
            return handle

        return FileCopy(open_file, uri)

    # -- at replay time ----------------------------------------------------------------------------

    def can_put_back(self, item: Item) -> bool:
        """The item has a copy and its manifest's URI lies where this client can write it."""
        uri = _manifest(item.envelope).get("uri")
        return item.blob is not None and isinstance(uri, str) and self.path_of(uri) is not None

    def ensure(self, item: Item) -> bool:
        """Put the copy back at the manifest's URI when the file there is gone or not its size.

        Returns True when it did. Raises ``CopyDamaged`` when the copy does not hash to the checksum
        (nothing is written then) and ``Unavailable`` when the storage root cannot be reached.
        """
        if item.blob is None or item.blob_info is None:
            return False
        uri = _manifest(item.envelope).get("uri")
        path = self.path_of(uri) if isinstance(uri, str) else None
        if path is None:
            return False
        try:
            if self._size_of(path) == item.blob_info.size:
                return False
            if self._local:
                self._restage_local(item, path)
            else:
                self._restage_remote(item, path)
        except CopyDamaged:
            raise
        except (OSError, ValueError) as exc:
            raise Unavailable(
                f"cannot put the buffered file back on the storage root: {exc}", {"uri": uri, "reason": "storage"}
            ) from exc
        log.info("buffer: put %s back from the buffer's copy before replaying %s", uri, item.envelope.id)
        return True

    def _size_of(self, path: str) -> int | None:
        try:
            info = self._fs.info(path)
        except FileNotFoundError:
            return None
        return int(info.get("size") or 0) if info.get("type") == "file" else None

    def _restage_local(self, item: Item, path: str) -> None:
        assert item.blob is not None and item.blob_info is not None
        final = Path(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.restage")
        try:
            with item.blob.open("rb") as reader:
                size, digest = _format.copy_to_temp(reader, temp, limit=item.blob_info.size, mode=0o666)
            if (size, digest) != (item.blob_info.size, item.blob_info.sha256):
                raise CopyDamaged("the buffer's copy does not hash to the manifest's checksum")
            _format.publish(temp, final)
        except _format.TooLarge:
            raise CopyDamaged("the buffer's copy is larger than the manifest says") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def _restage_remote(self, item: Item, path: str) -> None:
        """Object stores have no rename: write a temporary object, check it, then move (copy + delete)."""
        assert item.blob is not None and item.blob_info is not None
        directory, name = posixpath.split(path)
        temp = posixpath.join(directory, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.restage")
        digest = hashlib.sha256()
        size = 0
        try:
            with item.blob.open("rb") as reader, self._fs.open(temp, "wb") as out:
                while chunk := reader.read(_CHUNK):
                    size += len(chunk)
                    digest.update(chunk)
                    out.write(chunk)
            if (size, digest.hexdigest()) != (item.blob_info.size, item.blob_info.sha256):
                raise CopyDamaged("the buffer's copy does not hash to the manifest's checksum")
            self._fs.mv(temp, path)
        finally:
            with contextlib.suppress(Exception):
                if self._fs.exists(temp):
                    self._fs.rm_file(temp)

    def discard_leftover(self, item: Item, output: dict[str, Any]) -> None:
        """After the worker answered a replay that needed the file put back: remove it if nothing will use it.

        The worker moves a temp file it registers, so one still there means the command had been executed
        before (its reply was lost) and the stored reply came back. The file put back is then a duplicate,
        removed once the registered file is seen at its permanent place (if that is missing, the copy is left
        for the worker's ``missing_files`` recovery, which looks in ``temp/``).
        """
        uri, final_uri = _manifest(item.envelope).get("uri"), output.get("uri")
        if not isinstance(uri, str) or not isinstance(final_uri, str) or uri == final_uri:
            return
        path, final = self.path_of(uri), self.path_of(final_uri)
        if path is None or final is None or not self.in_temp(path):
            return
        try:
            if self._fs.exists(final) and self._fs.exists(path):
                self._fs.rm_file(path)
                log.info("buffer: removed %s, a duplicate of the registered %s", uri, final_uri)
        except OSError as exc:
            log.warning("buffer: could not remove the duplicate %s: %s", uri, exc)


def _manifest(envelope: CommandEnvelope) -> dict[str, Any]:
    manifest = envelope.data.params.get("manifest")
    return manifest if isinstance(manifest, dict) else {}
