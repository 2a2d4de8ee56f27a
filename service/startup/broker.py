"""The broker stage: one login to RabbitMQ, and a refused password told apart from a broker that is down."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from service.settings import Settings
from service.startup.codes import Exit, Stage, StartupError, caused, safe_url, unexpected
from service.startup.probes import quiet

BROKER_TIMEOUT_S = 15.0


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
