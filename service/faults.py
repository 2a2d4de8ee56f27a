"""Fault hooks tests can arm to crash the worker at precise points of a command's life.

Armed through ``STORAGE_FAULTS`` (comma list of ``point`` or ``point:count``); a hook that fires kills
the process with SIGKILL, the way a power cut or OOM kill would, so nothing gets to clean up.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

POINTS = frozenset({"after_commit", "after_reply"})


def _parse(spec: str) -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        point, _, count = item.partition(":")
        if point not in POINTS:
            raise ValueError(f"unknown fault point {point!r}; known: {sorted(POINTS)}")
        armed[point] = int(count or 1)
    return armed


@dataclass
class FaultHooks:
    armed: dict[str, int] = field(default_factory=lambda: _parse(os.environ.get("STORAGE_FAULTS", "")))

    def hit(self, point: str) -> None:
        """Kill the process here if this point is armed (each arming fires once per count)."""
        remaining = self.armed.get(point, 0)
        if remaining <= 0:
            return
        self.armed[point] = remaining - 1
        log.warning("fault hook %s fired: killing the worker", point)
        os.kill(os.getpid(), signal.SIGKILL)
