"""The action table of this worker: every domain's handlers beside their contract entries.

A handler is ``async (params, HandlerContext) -> output`` (or ``Committed[output]`` when it commits a
write); no AMQP in sight. ``service.core.actions.check`` verifies the table at start-up.
"""

from __future__ import annotations

from service.core.actions import ActionTable, table
from service.handlers import artifacts, maintenance, memory, system, threads

ACTIONS: ActionTable = table(
    {
        **artifacts.HANDLERS,
        **maintenance.HANDLERS,
        **memory.HANDLERS,
        **system.HANDLERS,
        **threads.HANDLERS,
    }
)

__all__ = ["ACTIONS"]
