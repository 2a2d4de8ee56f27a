"""``storage-worker console``: found by ``service.cli`` through the ``storage_worker.commands`` entry point,
so the worker's package never imports the console (which is a bus client, like an agent)."""

from __future__ import annotations

import argparse
import logging
import sys

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
    if settings.token is None and settings.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger(__name__).warning(
            "the console listens on %s without STORAGE_CONSOLE_TOKEN: anyone who reaches it acts as %s",
            settings.host,
            settings.broker_user,
        )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info", access_log=False)
    return 0


class _Console:
    """What ``service.cli`` asks of an outside subcommand: ``help``, ``arguments(parser)``, ``main(args)``."""

    help = HELP
    arguments = staticmethod(arguments)
    main = staticmethod(main)


SUBCOMMAND = _Console()
