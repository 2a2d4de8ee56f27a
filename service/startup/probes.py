"""Small probes the database and storage stages share: a folder's writability, whose path an OSError is about."""

from __future__ import annotations

import errno
import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def check_writable_folder(folder: Path) -> None:
    """Raise the OSError that creating and writing in ``folder`` would meet, creating nothing that stays.

    The nearest existing folder on the way must be a folder, and a file can be made in it (checked by making
    one: permission bits say nothing to root, a read-only mount or an ACL).
    """
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file, not a folder", str(existing))
    with tempfile.TemporaryFile(dir=existing, prefix=".storage-worker-probe-"):
        pass


def concerns(exc: OSError, folder: Path) -> bool:
    """Whether the failing path of ``exc`` is ``folder``, one of its parents or something under it."""
    if exc.filename is None:
        return False
    failing = Path(os.fsdecode(exc.filename)).absolute()
    target = folder.absolute()
    return failing == target or failing in target.parents or target in failing.parents


def os_reason(exc: OSError) -> str:
    """The reason of an OSError in a few words, with the path it names."""
    if isinstance(exc, NotADirectoryError) and exc.strerror and " is a file" in exc.strerror:
        return exc.strerror
    if exc.strerror:
        return exc.strerror + (f": {os.fsdecode(exc.filename)}" if exc.filename else "")
    return str(exc) or type(exc).__name__


_NETWORK_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT})


def network_failure(exc: BaseException) -> bool:
    """A connect that found no server: refused, no route, unknown host."""
    return isinstance(exc, socket.gaierror | ConnectionError) or (
        isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS
    )


@contextmanager
def quiet(*names: str, enabled: bool = True) -> Iterator[None]:
    """Silence the named loggers for a probe whose failure is told as one line anyway."""
    loggers = [logging.getLogger(name) for name in names] if enabled else []
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
