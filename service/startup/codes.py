"""What a failed start is told as: the stage at fault, one line, and an exit code of its own.

Exit codes (2, 3 and 4 are the codes the worker had before the start-up checks):

====  ========  ============================================================================
code  stage     meaning
====  ========  ============================================================================
0               ran and stopped cleanly
1     any       unexpected failure (``--debug`` shows the traceback); a command's own "no"
2     database  the SQLite file is owned by another running worker
3     broker    RabbitMQ cannot be reached (refused, unknown host, TLS mismatch, no answer)
4     database  the schema is not at this worker's revision (run ``storage-worker migrate``)
5     settings  a setting has a value it does not accept
6     database  ``DATABASE_URL`` is not usable: not a URL, or not an async driver
7     database  the database server cannot be reached or does not accept connections yet
8     database  the database named in ``DATABASE_URL`` does not exist
9     database  the database server refused the user or password
10    database  the SQLite file's folder cannot be created or written
11    storage   the local ``STORAGE_ROOT`` cannot be created or written
12    storage   ``STORAGE_ROOT`` names a scheme whose filesystem package is not installed
13    storage   the object store cannot be reached
14    storage   the object store has no credentials, or refuses them
15    storage   the bucket of ``STORAGE_ROOT`` does not exist
16    broker    RabbitMQ refused the user or password
17    broker    RabbitMQ refused to open the virtual host (missing, or no access)
18    ports     the metrics port is in use or may not be bound
19    broker    a queue the worker declares exists with other arguments (``STORAGE_QUEUE_TYPE``)
====  ========  ============================================================================
"""

from __future__ import annotations

import sys
import traceback
from enum import IntEnum, StrEnum


class Stage(StrEnum):
    SETTINGS = "settings"
    DATABASE = "database"
    STORAGE = "storage"
    BROKER = "broker"
    PORTS = "ports"
    START = "start"
    """Not a stage of its own: a failure that no stage's classification recognised."""


ALL_STAGES: tuple[Stage, ...] = (Stage.SETTINGS, Stage.DATABASE, Stage.STORAGE, Stage.BROKER, Stage.PORTS)
STORES: tuple[Stage, ...] = (Stage.DATABASE, Stage.STORAGE)
"""What a command that opens the stores without the broker checks (``cleanup``, ``import``)."""


class Exit(IntEnum):
    """The exit code of each known start-up mistake (the table in the module docstring)."""

    UNEXPECTED = 1
    DATABASE_LOCKED = 2
    BROKER_UNREACHABLE = 3
    SCHEMA_NOT_READY = 4
    SETTINGS_INVALID = 5
    DATABASE_URL = 6
    DATABASE_UNREACHABLE = 7
    DATABASE_MISSING = 8
    DATABASE_AUTH = 9
    DATABASE_FOLDER = 10
    STORAGE_LOCAL = 11
    STORAGE_SCHEME = 12
    STORAGE_UNREACHABLE = 13
    STORAGE_CREDENTIALS = 14
    STORAGE_BUCKET = 15
    BROKER_AUTH = 16
    BROKER_VHOST = 17
    PORT_UNAVAILABLE = 18
    BROKER_QUEUE = 19


class StartupError(Exception):
    """A start that cannot go on, told as one line naming the stage at fault; the cause keeps the traceback."""

    def __init__(self, stage: Stage, what: str, hint: str | None, code: Exit) -> None:
        super().__init__(what)
        self.stage = stage
        self.what = what
        self.hint = hint
        self.code = code

    def line(self) -> str:
        what = " ".join(self.what.split())  # one line, whatever the driver's message held
        return f"storage-worker: {self.stage}: {what}" + (f" ({self.hint})" if self.hint else "")


def report(error: StartupError, *, debug: bool) -> int:
    """Print the one line (the traceback of its cause first, with ``--debug``); returns the exit code."""
    if debug:
        traceback.print_exception(error.__cause__ or error, file=sys.stderr)
    print(error.line(), file=sys.stderr)
    return int(error.code)


def unexpected(stage: Stage, exc: BaseException) -> StartupError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    what = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    error = StartupError(stage, what, "unexpected; run with --debug for the traceback", Exit.UNEXPECTED)
    error.__cause__ = exc
    return error


def caused(exc: BaseException, stage: Stage, what: str, hint: str | None, code: Exit) -> StartupError:
    """A ``StartupError`` whose cause is ``exc``, so ``--debug`` shows where it came from."""
    error = StartupError(stage, what, hint, code)
    error.__cause__ = exc
    return error


def safe_url(url: str) -> str:
    """A URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]
