"""The broker stage: one login to RabbitMQ, and a refused password told apart from a broker that is down."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from service.settings import Settings
from service.startup.codes import Exit, Stage, StartupError, caused, safe_url, unexpected
from service.startup.probes import quiet

BROKER_TIMEOUT_S = 15.0
INEQUIVALENT = re.compile(r"inequivalent arg '(?P<arg>[^']+)' for queue '(?P<queue>[^']*)'[^:]*: (?P<detail>.*)")
"""RabbitMQ's PRECONDITION_FAILED text when a queue is redeclared with other arguments than it has."""
CURRENT_TYPE = re.compile(r"current is (?:none|(?:the value )?'(?P<type>[\w-]+)')")
QUEUE_TYPES_DOC = 'docs/operating.md, "Classic or quorum command queues"'


async def check_broker(settings: Settings, *, debug: bool = False) -> None:
    """Log in to the broker once and leave: a refusal here leaves no half-started worker behind."""
    import aio_pika

    try:
        with quiet("aiormq", "aio_pika", enabled=not debug):  # aiormq logs every refused connect as an ERROR
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
        return caused(
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
        return caused(
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
        return caused(
            exc,
            Stage.BROKER,
            f"cannot reach RabbitMQ at {safe_url(url)}: {reason}",
            "is it running? check the host and port in AMQP_URL",
            Exit.BROKER_UNREACHABLE,
        )
    return None


def queue_mismatch(exc: BaseException, settings: Settings) -> StartupError | None:
    """A queue the worker declares exists with other arguments (RabbitMQ's PRECONDITION_FAILED), or None.

    Mostly a classic queue met by ``STORAGE_QUEUE_TYPE=quorum`` or the other way round: a queue's type and
    arguments never change once declared, so the start cannot go on and the line says which setting to fix.
    """
    from aio_pika.exceptions import ChannelPreconditionFailed

    found = INEQUIVALENT.search(str(exc)) if isinstance(exc, ChannelPreconditionFailed) else None
    if found is None:
        return None
    arg, queue, detail = found["arg"], found["queue"], found["detail"].strip()
    wanted = settings.queue_type
    existing = _existing_type(arg, detail, wanted)
    if existing is not None and existing != wanted:
        what = f"it is a {existing} queue, but STORAGE_QUEUE_TYPE={wanted} declares a {wanted} one"
        hint = f"set STORAGE_QUEUE_TYPE={existing}, or move the queues to {wanted}: {QUEUE_TYPES_DOC}"
    elif arg == "x-delivery-limit":
        what = f"its delivery limit is not STORAGE_DELIVERY_LIMIT={settings.delivery_limit} ({detail})"
        hint = f"set STORAGE_DELIVERY_LIMIT to the queue's; a queue's arguments never change: {QUEUE_TYPES_DOC}"
    else:
        what = f"it exists with other arguments than this worker declares ({arg}: {detail})"
        hint = f"a queue's arguments never change: delete it once empty, or name another: {QUEUE_TYPES_DOC}"
    return caused(exc, Stage.BROKER, f'RabbitMQ refused to declare queue "{queue}": {what}', hint, Exit.BROKER_QUEUE)


def _existing_type(arg: str, detail: str, wanted: str) -> str | None:
    """The type of the queue on the broker, when the differing argument tells it.

    The worker names the type (``x-queue-type``), so that argument differs first; a classic queue declared
    without a type (by hand, or by an older tool) differs first in ``x-max-priority`` from a quorum one.
    """
    if arg == "x-queue-type" and (current := CURRENT_TYPE.search(detail)) is not None:
        return current["type"] or "classic"
    if arg == "x-max-priority" and wanted == "quorum":
        return "classic"
    return None
