"""The ports stage: the metrics port bound and let go, so a busy port fails before anything starts."""

from __future__ import annotations

import errno
import socket

from service.settings import Settings
from service.startup.codes import Exit, Stage, StartupError, caused, unexpected


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
    return caused(exc, Stage.PORTS, what, hint, Exit.PORT_UNAVAILABLE)
