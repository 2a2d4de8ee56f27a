"""The action → handler table. A handler is ``async (params, HandlerContext) -> output``; no AMQP in sight."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from service.handlers import artifacts, maintenance, memory, system, threads

Handler = Callable[[Any, Any], Awaitable[Any]]

HANDLERS: dict[str, Handler] = {
    **artifacts.HANDLERS,
    **maintenance.HANDLERS,
    **memory.HANDLERS,
    **system.HANDLERS,
    **threads.HANDLERS,
}

__all__ = ["HANDLERS", "Handler"]
