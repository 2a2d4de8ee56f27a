"""Blocking file work and the one place where fsspec and OS errors become wire errors.

Blocking I/O runs in a thread so the event loop keeps serving other commands while a 10 MiB file is
hashed; small local files are handled inline (see INLINE_FILE_BYTES).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
from collections.abc import Callable
from functools import partial
from typing import ParamSpec, TypeVar

from contracts import InvalidArgument, PermissionDenied, StorageError, Unavailable

CHUNK = 1024 * 1024
INLINE_FILE_BYTES = 64 * 1024
"""Local files up to this size are checked (open, read, sha256) and renamed on the event loop: that takes
less than handing the work to a thread and back. Larger files and object stores always go to a thread."""
AGENTS_FAULT = {errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR}
"""OS errors caused by the path an agent sent, not by the storage: retrying cannot help."""
P = ParamSpec("P")
R = TypeVar("R")


def sha256_of(read: Callable[[int], bytes]) -> str:
    """The ``sha256:<hex>`` checksum of everything ``read`` returns, a chunk at a time."""
    digest = hashlib.sha256()
    while chunk := read(CHUNK):
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def refusal(exc: OSError, uri: str) -> StorageError | None:
    """The wire error for an upload that cannot be opened because of what the agent named, else None."""
    if exc.errno == errno.ELOOP:
        return PermissionDenied("uri names a symbolic link: register the file itself", {"uri": uri})
    if exc.errno in AGENTS_FAULT:
        reason = os.strerror(exc.errno or 0)
        return InvalidArgument(f"uri does not name a usable file: {reason}", {"field": "manifest.uri", "uri": uri})
    return None


async def _io(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    # partial: mypy cannot bind a ParamSpec-generic function (_call) to to_thread's own ParamSpec
    return await asyncio.to_thread(partial(_call, fn), *args, **kwargs)


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
        if exc.errno in AGENTS_FAULT:
            raise InvalidArgument("the path does not name a usable file", {"reason": str(exc)[:200]}) from exc
        raise Unavailable("file storage unavailable, retry later", {"reason": str(exc)[:200]}) from exc
