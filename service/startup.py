"""Start-up checks, stage by stage, so a failed start blames the system at fault in one line.

A start passes five stages in order: settings, database, storage root, broker, ports. Each check does the
cheapest real operation of its stage (parse the settings, connect to the database, look at the storage root,
log in to the broker, bind the metrics port) before the worker starts anything, so a wrong password on the
broker does not leave a half-started worker behind. The exception each stage raises is classified; a known
mistake becomes a ``StartupError``: one line on stderr, ``storage-worker: <stage>: <what> (<hint>)``, and an
exit code of its own. ``storage-worker --debug`` prints the traceback above that line.

Exit codes (2, 3 and 4 are the codes the worker had before these checks):

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
====  ========  ============================================================================
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import ValidationError
from pydantic_settings import SettingsError

from service.settings import Settings

DATABASE_TIMEOUT_S = 15.0
BROKER_TIMEOUT_S = 15.0
STORAGE_TIMEOUT_S = 20.0


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


def _from(exc: BaseException, stage: Stage, what: str, hint: str | None, code: Exit) -> StartupError:
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


# ---- settings ------------------------------------------------------------------------------------------


def load_settings() -> Settings:
    """The settings, or one line naming every variable whose value is refused."""
    try:
        return Settings()
    except SettingsError as exc:  # a value pydantic-settings could not even decode
        raise _from(exc, Stage.SETTINGS, str(exc), "see docs/settings.md", Exit.SETTINGS_INVALID) from exc
    except ValidationError as exc:
        problems = []
        for item in exc.errors():
            name = ".".join(str(part) for part in item["loc"]).upper() or "settings"
            shown = "" if "URL" in name else f" (got {str(item.get('input'))[:40]!r})"
            problems.append(f"{name}: {item['msg']}{shown}")
        raise _from(exc, Stage.SETTINGS, "; ".join(problems), "see docs/settings.md", Exit.SETTINGS_INVALID) from exc


# ---- database --------------------------------------------------------------------------------------------


def check_database_url(url: str) -> None:
    """Only the two async drivers the worker runs on; anything else fails later with a long traceback."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise _from(
            exc,
            Stage.DATABASE,
            f"DATABASE_URL {url.split('@')[-1]!r} is not a database URL",
            "use postgresql+asyncpg://user:password@host:5432/name or sqlite+aiosqlite:///path/to/storage.db",
            Exit.DATABASE_URL,
        ) from exc
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    wanted = {"postgresql": "asyncpg", "sqlite": "aiosqlite"}.get(backend)
    if wanted is None:
        raise StartupError(
            Stage.DATABASE,
            f"DATABASE_URL names {backend}, which the worker does not run on",
            "use postgresql+asyncpg:// or sqlite+aiosqlite:///",
            Exit.DATABASE_URL,
        )
    if driver != wanted:
        fixed = parsed.set(drivername=f"{backend}+{wanted}").render_as_string(hide_password=True)
        raise StartupError(
            Stage.DATABASE,
            f"DATABASE_URL {safe_url(url)} uses the {driver} driver, not {wanted}",
            f"use {backend}+{wanted}://, as in {fixed}",
            Exit.DATABASE_URL,
        )


def check_sqlite_folder(db_file: Path) -> None:
    """SQLite writes its journal, WAL and the worker's lock file beside the database file."""
    hint = "point DATABASE_URL at a file in a folder this user can write"
    try:
        _check_writable_folder(db_file.parent)
    except OSError as exc:
        raise _from(
            exc,
            Stage.DATABASE,
            f"cannot use the SQLite folder {db_file.parent}: {_os_reason(exc)}",
            hint,
            Exit.DATABASE_FOLDER,
        ) from exc


async def check_database(settings: Settings) -> None:
    """The URL, then one connection of the worker's own engine and a ``SELECT 1``."""
    from sqlalchemy import text

    from service.store.engine.db import create_engine, sqlite_path

    url = settings.database_url
    check_database_url(url)
    if (db_file := sqlite_path(url)) is not None:
        check_sqlite_folder(db_file)
    try:
        engine = create_engine(url, pool_size=1)
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT_S), engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        finally:
            await engine.dispose()
    except Exception as exc:
        raise (database_error(exc, url) or unexpected(Stage.DATABASE, exc)) from exc


_PG_DATABASE_MISSING = "3D000"
"""invalid_catalog_name: asyncpg's InvalidCatalogNameError."""
_PG_AUTH_REFUSED = frozenset({"28P01", "28000"})
"""invalid_password, invalid_authorization_specification (no such role, no pg_hba entry)."""
_PG_NOT_NOW = frozenset({"57P03", "53300"})
"""cannot_connect_now (starting or shutting down), too_many_connections."""


def database_error(exc: BaseException, url: str, *, connecting: bool = True) -> StartupError | None:
    """The known mistakes among what connecting to the database raises, or None.

    ``connecting``: ``exc`` came from connecting to the database and nothing else, so a bare network error or
    timeout is the database's (the driver raises them unwrapped).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    from service.store.engine.db import sqlite_path

    parsed = make_url(url)
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    if isinstance(exc, DBAPIError):
        state = getattr(exc.orig, "sqlstate", None)
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
        reason = reason.removeprefix("<class 'asyncpg.exceptions.").split(">: ", 1)[-1]
        if state == _PG_DATABASE_MISSING:
            return _from(
                exc,
                Stage.DATABASE,
                f'database "{parsed.database}" does not exist on {where}',
                f"create it: createdb -h {parsed.host or 'localhost'} -p {parsed.port or 5432} "
                f"-U {parsed.username or 'postgres'} {parsed.database}; then run storage-worker migrate",
                Exit.DATABASE_MISSING,
            )
        if state in _PG_AUTH_REFUSED:
            return _from(
                exc,
                Stage.DATABASE,
                f'PostgreSQL at {where} refused user "{parsed.username}": {reason}',
                "check the user and password in DATABASE_URL",
                Exit.DATABASE_AUTH,
            )
        if state in _PG_NOT_NOW:
            return _from(
                exc,
                Stage.DATABASE,
                f"PostgreSQL at {where} does not take connections now: {reason}",
                "wait until it has started, or raise max_connections",
                Exit.DATABASE_UNREACHABLE,
            )
        return None
    if connecting and isinstance(exc, TimeoutError):
        return _from(
            exc,
            Stage.DATABASE,
            f"no answer from the database at {where} within {DATABASE_TIMEOUT_S:g}s",
            "is it running, and is the host in DATABASE_URL reachable from here?",
            Exit.DATABASE_UNREACHABLE,
        )
    db_file = sqlite_path(url)
    if db_file is not None and isinstance(exc, OSError):
        if _concerns(exc, db_file.parent):
            return _from(
                exc,
                Stage.DATABASE,
                f"cannot use the SQLite folder {db_file.parent}: {_os_reason(exc)}",
                "point DATABASE_URL at a file in a folder this user can write",
                Exit.DATABASE_FOLDER,
            )
        return None
    if connecting and db_file is None and isinstance(exc, OSError) and _network_failure(exc):
        return _from(
            exc,
            Stage.DATABASE,
            f"cannot reach PostgreSQL at {where}: {_os_reason(exc)}",
            "is it running? check the host and port in DATABASE_URL",
            Exit.DATABASE_UNREACHABLE,
        )
    return None


_NETWORK_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT})


def _network_failure(exc: BaseException) -> bool:
    """A connect that found no server: refused, no route, unknown host."""
    return isinstance(exc, socket.gaierror | ConnectionError) or (
        isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS
    )


# ---- storage root ----------------------------------------------------------------------------------------


def check_storage(settings: Settings, *, debug: bool = False) -> None:
    """A local root must be a folder this user can create and write; an object store must let us see the bucket.

    Nothing is created here: ``import --dry-run`` changes nothing, and the worker lays out its folders itself.
    """
    from fsspec.utils import get_protocol

    root = settings.storage_root
    protocol = get_protocol(root)
    if protocol in ("file", "local"):
        try:
            _check_writable_folder(_local_root(root))
        except OSError as exc:
            raise (storage_error(exc, root) or unexpected(Stage.STORAGE, exc)) from exc
        return
    try:
        with _quiet("botocore", "aiobotocore", "s3fs", enabled=not debug):  # botocore logs its endpoint at INFO
            _check_object_store(root, protocol)
    except Exception as exc:
        raise (storage_error(exc, root) or unexpected(Stage.STORAGE, exc)) from exc


def _local_root(root: str) -> Path:
    """The folder of a ``file://`` root, as the file store resolves it."""
    from fsspec.core import url_to_fs

    _, path = url_to_fs(root)
    return Path(path)


def _check_object_store(root: str, protocol: str) -> None:
    from fsspec.core import url_to_fs

    options: dict[str, Any] = {"use_listings_cache": False, "skip_instance_cache": True}
    if protocol in ("s3", "s3a"):  # one quick attempt: botocore's default retries take minutes on a dead endpoint
        timeout = {"connect_timeout": STORAGE_TIMEOUT_S / 2, "read_timeout": STORAGE_TIMEOUT_S / 2}
        options["config_kwargs"] = {**timeout, "retries": {"max_attempts": 1}}
    fs, path = url_to_fs(root, **options)
    bucket = path.strip("/").split("/", 1)[0]
    if bucket:
        fs.info(bucket)


def storage_error(exc: BaseException, root: str, *, checking: bool = True) -> StartupError | None:
    """The known mistakes among what opening the storage root raises, or None.

    ``checking``: ``exc`` came from the storage check alone, so a missing package, a refused access, a missing
    bucket or a dropped connection is the storage root's. Otherwise only errors that carry their origin count:
    an OSError on a path of the local root, or botocore's credentials and endpoint errors.
    """
    from fsspec.utils import get_protocol

    protocol = get_protocol(root)
    shown = root.split("@")[-1]
    name = type(exc).__name__
    if protocol in ("file", "local"):
        path = _local_root(root)
        if isinstance(exc, OSError) and _concerns(exc, path):
            return _from(
                exc,
                Stage.STORAGE,
                f"cannot use STORAGE_ROOT {path}: {_os_reason(exc)}",
                "point STORAGE_ROOT at a folder this user can create and write",
                Exit.STORAGE_LOCAL,
            )
        return None
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError") or (
        checking and isinstance(exc, PermissionError)
    ):
        return _from(
            exc,
            Stage.STORAGE,
            f"the object store refused access to {shown}: {exc}",
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile or a role with access to the bucket",
            Exit.STORAGE_CREDENTIALS,
        )
    if name in ("EndpointConnectionError", "ConnectTimeoutError") or (
        checking and isinstance(exc, ConnectionError | TimeoutError)
    ):
        return _from(
            exc,
            Stage.STORAGE,
            f"cannot reach the object store of {shown}: {exc}",
            "check AWS_ENDPOINT_URL (or FSSPEC_S3_ENDPOINT_URL) and that the store is up",
            Exit.STORAGE_UNREACHABLE,
        )
    if not checking:
        return None
    if isinstance(exc, FileNotFoundError):
        return _from(
            exc,
            Stage.STORAGE,
            f"the bucket of STORAGE_ROOT {shown} does not exist",
            "create it first; the worker does not create buckets",
            Exit.STORAGE_BUCKET,
        )
    if isinstance(exc, ImportError):
        extra = "pip install 'mindbus-storage[s3]'" if protocol in ("s3", "s3a") else "install the package it names"
        return _from(
            exc,
            Stage.STORAGE,
            f"STORAGE_ROOT {shown} needs a package that is not installed: {exc}",
            extra,
            Exit.STORAGE_SCHEME,
        )
    if isinstance(exc, ValueError) and "Protocol not known" in str(exc):
        return _from(
            exc,
            Stage.STORAGE,
            f"STORAGE_ROOT {shown}: no filesystem for {protocol}://",
            "use file:///path or s3://bucket/prefix",
            Exit.STORAGE_SCHEME,
        )
    return None


def _check_writable_folder(folder: Path) -> None:
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


def _concerns(exc: OSError, folder: Path) -> bool:
    """Whether the failing path of ``exc`` is ``folder``, one of its parents or something under it."""
    if exc.filename is None:
        return False
    failing = Path(os.fsdecode(exc.filename)).absolute()
    target = folder.absolute()
    return failing == target or failing in target.parents or target in failing.parents


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, NotADirectoryError) and exc.strerror and " is a file" in exc.strerror:
        return exc.strerror
    if exc.strerror:
        return exc.strerror + (f": {os.fsdecode(exc.filename)}" if exc.filename else "")
    return str(exc) or type(exc).__name__


# ---- broker ----------------------------------------------------------------------------------------------


async def check_broker(settings: Settings, *, debug: bool = False) -> None:
    """Log in to the broker once and leave: a refusal here leaves no half-started worker behind."""
    import aio_pika

    try:
        with _quiet("aiormq", "aio_pika", enabled=not debug):  # aiormq logs every refused connect as an ERROR
            connection = await aio_pika.connect(settings.amqp_url, timeout=BROKER_TIMEOUT_S)
            await connection.close()
    except Exception as exc:
        raise (broker_error(exc, settings.amqp_url) or unexpected(Stage.BROKER, exc)) from exc


def broker_error(exc: BaseException, url: str) -> StartupError | None:
    """The known mistakes among what logging in to the broker raises, or None."""
    from aio_pika import exceptions as amqp

    parsed = urlsplit(url)
    where = f"{parsed.hostname or 'localhost'}:{parsed.port or 5672}"
    vhost = unquote(parsed.path[1:]) or "/"
    if isinstance(exc, amqp.ProbableAuthenticationError | amqp.AuthenticationError):
        return _from(
            exc,
            Stage.BROKER,
            f'RabbitMQ at {where} refused the login of user "{unquote(parsed.username or "guest")}"',
            "check the user and password in AMQP_URL",
            Exit.BROKER_AUTH,
        )
    # RabbitMQ answers the open of a virtual host it will not give with Connection.Close (NOT_ALLOWED); aiormq
    # reports that as a frame it did not expect, or (other versions) as ConnectionNotAllowed
    refused_open = isinstance(exc, amqp.InvalidFrameError) and "OpenOk" in str(exc) and "Connection.Close" in str(exc)
    if refused_open or any(kind.__name__ == "ConnectionNotAllowed" for kind in type(exc).__mro__):
        return _from(
            exc,
            Stage.BROKER,
            f'RabbitMQ at {where} refused to open virtual host "{vhost}"',
            f"create it with rabbitmqctl add_vhost {vhost}, or give the user access with rabbitmqctl set_permissions",
            Exit.BROKER_VHOST,
        )
    if isinstance(exc, amqp.AMQPConnectionError | TimeoutError | ConnectionError):
        reason = str(exc.__cause__ or exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {BROKER_TIMEOUT_S:g}s"
        return _from(
            exc,
            Stage.BROKER,
            f"cannot reach RabbitMQ at {safe_url(url)}: {reason}",
            "is it running? check the host and port in AMQP_URL",
            Exit.BROKER_UNREACHABLE,
        )
    return None


@contextmanager
def _quiet(*names: str, enabled: bool = True) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names] if enabled else []
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


# ---- ports -----------------------------------------------------------------------------------------------


def check_ports(settings: Settings) -> None:
    """Bind the metrics port the way the metrics server will, and let it go again."""
    if settings.metrics_port is None:
        return
    host, port = settings.metrics_host, settings.metrics_port
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in infos:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
                probe.bind(address)
    except OSError as exc:
        raise (port_error(exc, host, port) or unexpected(Stage.PORTS, exc)) from exc


def port_error(exc: BaseException, host: str, port: int | None) -> StartupError | None:
    """A metrics port in use, not ours to bind, or on an address this host does not have."""
    if not isinstance(exc, OSError):
        return None
    where = f"metrics port {port} on {host}"
    if exc.errno == errno.EADDRINUSE:
        what, hint = f"{where} is already in use", "stop what holds it, or set STORAGE_METRICS_PORT to a free port"
    elif exc.errno == errno.EACCES:
        what, hint = f"{where} may not be bound by this user", "use a port above 1023 in STORAGE_METRICS_PORT"
    elif exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        what, hint = f"{where}: no such local address ({exc})", "set STORAGE_METRICS_HOST to an address of this host"
    else:
        return None
    return _from(exc, Stage.PORTS, what, hint, Exit.PORT_UNAVAILABLE)


# ---- the whole start -------------------------------------------------------------------------------------


async def preflight(settings: Settings, stages: Sequence[Stage] = ALL_STAGES, *, debug: bool = False) -> None:
    """Run the checks of ``stages`` in start order; the first failing one raises its ``StartupError``."""
    checks: dict[Stage, Callable[[], Any]] = {
        Stage.DATABASE: lambda: check_database(settings),
        Stage.STORAGE: lambda: asyncio.to_thread(check_storage, settings, debug=debug),
        Stage.BROKER: lambda: check_broker(settings, debug=debug),
        Stage.PORTS: lambda: asyncio.to_thread(check_ports, settings),
    }
    for stage in ALL_STAGES:
        if stage in stages and stage in checks:
            await checks[stage]()


def explain(exc: BaseException, settings: Settings) -> StartupError | None:
    """The ``StartupError`` for an exception the real start raised, when it is a known mistake; else None.

    The checks above catch these first; this covers what changed between them and the start (a port taken
    meanwhile) and what only the start meets (another worker on the SQLite file, a schema behind).
    """
    from service.store.engine.lock import DatabaseLocked
    from service.store.engine.schema import SchemaNotReady

    if isinstance(exc, StartupError):
        return exc
    if isinstance(exc, DatabaseLocked):
        return _from(exc, Stage.DATABASE, str(exc), None, Exit.DATABASE_LOCKED)
    if isinstance(exc, SchemaNotReady):
        return _from(exc, Stage.DATABASE, str(exc), None, Exit.SCHEMA_NOT_READY)
    from aio_pika.exceptions import AMQPError

    if isinstance(exc, AMQPError):
        return broker_error(exc, settings.amqp_url)
    if (found := storage_error(exc, settings.storage_root, checking=False)) is not None:
        return found
    if settings.metrics_port is not None and isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return port_error(exc, settings.metrics_host, settings.metrics_port)
    return database_error(exc, settings.database_url, connecting=False)


__all__ = [
    "ALL_STAGES",
    "STORES",
    "Exit",
    "Stage",
    "StartupError",
    "explain",
    "load_settings",
    "preflight",
    "report",
    "unexpected",
]
