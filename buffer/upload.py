"""Staging an artifact's bytes under ``<STORAGE_ROOT>/temp/`` through fsspec, hashing while streaming.

The worker only ever receives a pointer: this writes the file where the worker will look for it and
returns the size and sha256 the manifest must state. A local file is read in chunks, never whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import mimetypes
import os
import posixpath
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import fsspec
from fsspec.core import url_to_fs

from contracts import InvalidArgument, NotFound, Unavailable

TEMP = "temp"
CHUNK_BYTES = 1024 * 1024
_EXT = re.compile(r"\.[A-Za-z0-9]{1,16}")

Source = bytes | bytearray | memoryview | str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class StagedFile:
    uri: str
    size_bytes: int
    checksum: str
    content_type: str


def new_artifact_id() -> str:
    return f"art_{uuid.uuid4()}"


class Stager:
    """Writes into one storage root; blocking, so the async client runs it in a thread."""

    def __init__(self, storage_root: str) -> None:
        fs, root = url_to_fs(storage_root)
        self.fs: fsspec.AbstractFileSystem = fs
        protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
        self.is_local = "file" in protocols
        self.root = os.path.realpath(root) if self.is_local else root.rstrip("/")

    def stage(
        self, source: Source, artifact_id: str, *, filename: str | None = None, content_type: str | None = None
    ) -> StagedFile:
        name_hint = filename or (os.fspath(source) if isinstance(source, str | os.PathLike) else "")
        ext = posixpath.splitext(name_hint)[1]
        ext = ext if _EXT.fullmatch(ext) else ""
        dest = posixpath.join(self.root, TEMP, artifact_id + ext)
        guessed = mimetypes.guess_type("x" + ext)[0] if ext else None
        with self._open_source(source) as reader:
            size, digest = self._copy(reader, dest)
        uri = Path(dest).as_uri() if self.is_local else self.fs.unstrip_protocol(dest)
        return StagedFile(uri, size, "sha256:" + digest, content_type or guessed or "application/octet-stream")

    @contextlib.contextmanager
    def _open_source(self, source: Source) -> Iterator[BinaryIO]:
        if isinstance(source, bytes | bytearray | memoryview):
            yield io.BytesIO(bytes(source))
            return
        path = Path(source)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise NotFound("the file to upload does not exist", {"path": str(path)}) from None
        except IsADirectoryError:
            raise InvalidArgument("the file to upload is a directory", {"path": str(path)}) from None
        with handle:
            yield handle

    def _copy(self, reader: BinaryIO, dest: str) -> tuple[int, str]:
        digest = hashlib.sha256()
        size = 0
        try:
            self.fs.makedirs(posixpath.dirname(dest), exist_ok=True)
            with self.fs.open(dest, "wb") as out:
                while chunk := reader.read(CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
        except OSError as exc:
            with contextlib.suppress(Exception):
                self.fs.rm_file(dest)
            raise Unavailable(
                f"cannot write the artifact to the storage root: {exc.strerror or exc}", {"path": dest}
            ) from exc
        return size, digest.hexdigest()
