"""The worker's event loop: uvloop where it is installed and allowed, asyncio's own otherwise.

Every command costs the worker a handful of loop callbacks, two task steps, socket reads and writes and
a thread hop or two; uvloop does that bookkeeping in C, which on a CPU shared with the broker leaves
more of it to the broker. ``STORAGE_EVENT_LOOP=asyncio`` keeps the standard loop (for debugging, or
where uvloop is not available, such as Windows).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def run(main: Coroutine[Any, Any, T], *, choice: str = "auto") -> T:
    """``asyncio.run(main)`` on the loop ``choice`` names: ``auto`` (uvloop if importable), ``uvloop``, ``asyncio``."""
    if choice == "asyncio" or (choice == "auto" and not uvloop_available()):
        return asyncio.run(main)
    import uvloop

    return uvloop.run(main)
