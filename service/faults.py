"""Fault hooks tests can arm to crash the worker at precise points of a command's life.

Armed through ``STORAGE_FAULTS``, a comma list of:

- ``point``, ``point:count`` or ``point@skip``: at ``after_commit`` (a write committed, its reply not yet
  sent), ``after_reply`` (the reply published, the message not yet acked), ``before_outbox_publish`` (change
  events committed, about to be published) or ``after_outbox_publish`` (published and confirmed, their
  outbox rows not yet deleted) kill the process with SIGKILL, the way a power cut or OOM kill would, so
  nothing gets to clean up. ``@skip`` lets the first ``skip`` passes go by (a restarted worker first answers
  the redelivered command again, then dies on the next).
- ``stall:<point>``: at that point the task waits forever instead (``before_outbox_publish``: the worker
  goes on committing and answering while no change event leaves it), so a test can kill it when it likes.
- ``raise_in:<action>``: every write of that action raises an unexpected exception inside its transaction,
  after doing its work: the command that always fails, whose effect must be rolled back and whose
  neighbours must not notice.

Unset in production: then every hook is a dictionary lookup that finds nothing. When it arms anything, the
worker says so in one WARNING line at start, so a crash on purpose is never mistaken for a real one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass, field
from typing import NoReturn

log = logging.getLogger(__name__)

POINTS = frozenset({"after_commit", "after_reply", "before_outbox_publish", "after_outbox_publish"})
RAISE_IN = "raise_in"
STALL = "stall"


class InjectedFault(RuntimeError):
    """The unexpected exception ``raise_in`` throws: what a bug in a handler looks like to the pipeline."""


@dataclass
class _Arming:
    count: int = 1
    skip: int = 0


@dataclass
class FaultSpec:
    kills: dict[str, _Arming] = field(default_factory=dict)
    raise_in: frozenset[str] = frozenset()
    stalls: frozenset[str] = frozenset()

    def describe(self) -> list[str]:
        """Every armed hook, written as ``STORAGE_FAULTS`` arms it (``after_reply:2@1``, ``raise_in:ping``)."""
        kills = [
            f"{point}:{arming.count}" + (f"@{arming.skip}" if arming.skip else "")
            for point, arming in sorted(self.kills.items())
            if arming.count > 0
        ]
        stalls = [f"{STALL}:{point}" for point in sorted(self.stalls)]
        return kills + [f"{RAISE_IN}:{action}" for action in sorted(self.raise_in)] + stalls


def parse(spec: str) -> FaultSpec:
    kills: dict[str, _Arming] = {}
    raise_in: set[str] = set()
    stalls: set[str] = set()
    for item in filter(None, (part.strip() for part in spec.split(","))):
        head, _, skip = item.partition("@")
        point, _, arg = head.partition(":")
        if point == RAISE_IN:
            if not arg or skip:
                raise ValueError(f"{RAISE_IN} needs an action name, as in {RAISE_IN}:register_artifact")
            raise_in.add(arg)
        elif point == STALL:
            if arg not in POINTS or skip:
                raise ValueError(f"{STALL} needs a fault point, as in {STALL}:before_outbox_publish")
            stalls.add(arg)
        elif point in POINTS:
            kills[point] = _Arming(count=int(arg or 1), skip=int(skip or 0))
        else:
            raise ValueError(f"unknown fault point {point!r}; known: {sorted(POINTS | {RAISE_IN, STALL})}")
    return FaultSpec(kills, frozenset(raise_in), frozenset(stalls))


def from_environment() -> FaultSpec:
    """The hooks ``STORAGE_FAULTS`` arms, announced in one WARNING line when there are any."""
    spec = parse(os.environ.get("STORAGE_FAULTS", ""))
    if armed := spec.describe():
        log.warning("STORAGE_FAULTS arms fault hooks, this process will crash or fail on purpose: %s", ", ".join(armed))
    return spec


@dataclass
class FaultHooks:
    spec: FaultSpec = field(default_factory=from_environment)

    @property
    def armed(self) -> dict[str, int]:
        """Kill points still armed, with how many times each will fire."""
        return {point: arming.count for point, arming in self.spec.kills.items() if arming.count > 0}

    def hit(self, point: str) -> None:
        """Kill the process here if this point is armed (after its skips; each arming fires once per count)."""
        arming = self.spec.kills.get(point)
        if arming is None or arming.count <= 0:
            return
        if arming.skip > 0:
            arming.skip -= 1
            return
        arming.count -= 1
        log.warning("fault hook %s fired: killing the worker", point)
        os.kill(os.getpid(), signal.SIGKILL)

    async def stall(self, point: str) -> None:
        """Wait here forever (until cancelled) if ``stall:<point>`` is armed."""
        if point in self.spec.stalls:
            log.warning("fault hook stall:%s fired: this task waits forever", point)
            await asyncio.Event().wait()

    def raises_in(self, action: str | None) -> bool:
        return action is not None and action in self.spec.raise_in

    def fail(self, action: str) -> NoReturn:
        log.warning("fault hook raise_in fired: %s raises inside its transaction", action)
        raise InjectedFault(f"injected fault: {action} always fails")
