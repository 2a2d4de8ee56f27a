"""``storage-worker console``: found by ``service.cli`` through the ``storage_worker.commands`` entry point,
so the worker's package never imports the console (which is a bus client, like an agent)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from urllib.parse import urlsplit

import aio_pika
from aiormq.exceptions import AMQPError, ProbableAuthenticationError
from pydantic import ValidationError

from console.settings import ConsoleSettings

HELP = "the operators' web page (artifacts, lineage, threads, memory, dead letters, cleanup), over the bus"


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="listen address (default $STORAGE_CONSOLE_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default $STORAGE_CONSOLE_PORT or 8088)")


def main(args: argparse.Namespace) -> int:
    import uvicorn

    from console.app import create_app

    overrides = {key: value for key, value in (("host", args.host), ("port", args.port)) if value is not None}
    try:
        settings = ConsoleSettings(**overrides)
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            secret = any(word in where.lower() for word in ("token", "url"))  # a URL may hold a password
            got = "" if secret else f" (got {error.get('input')!r})"
            print(f"storage-worker console: {where}: {error['msg']}{got}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.disable(logging.ERROR)  # aiormq logs the failed connect too: the one line below says it
    try:
        problem = asyncio.run(broker_problem(settings.amqp_url))
    finally:
        logging.disable(logging.NOTSET)
    if problem is not None:
        print(f"storage-worker console: {problem}", file=sys.stderr)
        return 1
    if settings.token is None and settings.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger(__name__).warning(
            "the console listens on %s without STORAGE_CONSOLE_TOKEN: anyone who reaches it acts as %s",
            settings.host,
            settings.broker_user,
        )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info", access_log=False)
    return 0


async def broker_problem(amqp_url: str, timeout_s: float = 10.0) -> str | None:
    """Why the broker cannot be reached at start (one line, password hidden), or None. Once started, the
    console's robust connection rides out outages and its pages say when the bus is away; but a console that
    never reached the broker would only show error pages, so it stops at once with the reason."""
    shown = redacted(amqp_url)
    try:
        connection = await aio_pika.connect(amqp_url, timeout=timeout_s)
    except ProbableAuthenticationError:
        return f"the broker at {shown} refused the user and password of AMQP_URL"
    except (AMQPError, OSError, TimeoutError) as exc:
        return f"cannot reach the broker at {shown}: {exc or type(exc).__name__}"
    await connection.close()
    return None


def redacted(amqp_url: str) -> str:
    """The URL with its password replaced, fit for a log or a terminal."""
    parts = urlsplit(amqp_url)
    if parts.password is None:
        return amqp_url
    return parts._replace(netloc=f"{parts.username}:***@{parts.hostname}:{parts.port or 5672}").geturl()


class _Console:
    """What ``service.cli`` asks of an outside subcommand: ``help``, ``arguments(parser)``, ``main(args)``."""

    help = HELP
    arguments = staticmethod(arguments)
    main = staticmethod(main)


SUBCOMMAND = _Console()
