"""CONTROL signals (``ctl.{all,storage,<node>}.{pause,resume,shutdown,config,stop}``): how operators steer a node.

The node hears them on a private queue of its own (exclusive, gone with its connection: a signal is for the
nodes alive now) bound to the three patterns of ``contracts.control_bindings``. Only a signal whose AMQP
``user_id`` is an admin broker user is obeyed: RabbitMQ checks that ``user_id`` against the connection's
login, so it cannot be claimed by another agent. Anything else is logged and dropped, and nothing is ever
answered: a sender learns the node's state from its heartbeats.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from faststream.rabbit import RabbitQueue
from pydantic import ValidationError

from contracts import ControlEnvelope, ControlScope, control_bindings, parse_control_key, topology
from contracts.control import PRIORITY_CONTROL
from service.logs import set_level
from service.maintenance import Maintenance, stop_cleanups
from service.settings import Settings
from service.transport import topology as declared

if TYPE_CHECKING:
    from service.transport.worker import Worker

log = logging.getLogger(__name__)

LIVE_SETTINGS = ("admins", "log_level", "cleanup_interval_s")
"""What ``config`` re-reads; everything else needs a restart."""
MAX_SIGNAL_BYTES = 64 * 1024


class ControlSignals:
    """Consumes this node's CONTROL signals from ``on_connected`` until ``on_stopping``."""

    def __init__(
        self, worker: Worker, maintenance: Maintenance | None, *, reread: Callable[[], Settings] = Settings
    ) -> None:
        self.worker = worker
        self.maintenance = maintenance
        self.reread = reread
        """Where ``config`` reads the settings from: the environment and ``.env``, as at start."""
        self.obeyed: list[ControlScope] = []
        """Every signal obeyed, in order (what the tests and an operator's debugging look at)."""
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None

    def attach(self) -> None:
        self.worker.on_connected.append(self._start)  # before commands flow: no signal sent after start is lost
        self.worker.on_stopping.append(self._stop)

    def queue_name(self) -> str:
        s = self.worker.settings
        return f"{s.node_queue}.control.{uuid.uuid4().hex[:8]}"

    async def _start(self, worker: Worker) -> None:
        s = worker.settings
        queue = await worker.broker.declare_queue(
            RabbitQueue(
                self.queue_name(),
                exclusive=True,
                auto_delete=True,
                arguments={"x-max-priority": topology.MAX_PRIORITY},
            )
        )
        exchange = await worker.broker.declare_exchange(declared.exchange(s))
        for pattern in control_bindings(s.node_name):
            await queue.bind(exchange, routing_key=pattern)
        self._queue = queue
        self._tag = await queue.consume(self._on_signal)
        log.info("node %s hears CONTROL signals on %s", s.node_name, ", ".join(control_bindings(s.node_name)))

    async def _stop(self, worker: Worker) -> None:
        queue, tag, self._queue, self._tag = self._queue, self._tag, None, None
        if queue is None or tag is None or queue.channel.is_closed:
            return
        try:
            await queue.cancel(tag)
        except Exception as exc:  # the connection is closing anyway
            log.debug("cancelling the control consumer failed: %s", exc)

    async def _on_signal(self, raw: AbstractIncomingMessage) -> None:
        """Obey or drop, then ack: a signal is never redelivered, never dead-lettered, never answered."""
        try:
            scope = self._accepted(raw)
            if scope is not None:
                await self.obey(scope, raw.user_id or "")
        except Exception:
            log.exception("CONTROL signal %s failed", raw.routing_key)
        finally:
            if not raw.processed:
                await raw.ack()

    def _accepted(self, raw: AbstractIncomingMessage) -> ControlScope | None:
        """The scope to obey, or None (logged) for a signal from a non-admin, an unknown key or a bad envelope."""
        key = raw.routing_key or ""
        parsed = parse_control_key(key)
        sender = raw.user_id
        if parsed is None:
            log.warning("CONTROL signal dropped: %r is not ctl.<target>.<scope> with a known scope", key[:200])
            return None
        if not sender or sender not in self.worker.settings.admins:
            log.warning("CONTROL signal %s dropped: sender %r is not an admin broker identity", key, sender)
            return None
        if len(raw.body) > MAX_SIGNAL_BYTES:
            log.warning("CONTROL signal %s from %s dropped: %d bytes", key, sender, len(raw.body))
            return None
        try:
            envelope = ControlEnvelope.model_validate_json(raw.body)
        except ValidationError as exc:
            errors = len(exc.errors())
            log.warning("CONTROL signal %s from %s dropped: not a control envelope (%d errors)", key, sender, errors)
            return None
        log.info(
            "CONTROL %s from %s (priority %s)%s",
            key,
            sender,
            raw.priority if raw.priority is not None else PRIORITY_CONTROL,
            f": {envelope.data.reason}" if envelope.data.reason else "",
        )
        return parsed[1]

    async def obey(self, scope: ControlScope, sender: str) -> None:
        worker = self.worker
        if scope is ControlScope.PAUSE:
            if not await worker.pause():
                log.info("already paused")
        elif scope is ControlScope.RESUME:
            if not await worker.resume():
                log.info("not paused: nothing to resume")
        elif scope is ControlScope.SHUTDOWN:
            log.info("shutting down at the request of %s", sender)
            worker.stop_requested.set()
        elif scope is ControlScope.CONFIG:
            self.reload()
        elif scope is ControlScope.STOP:
            stopped = stop_cleanups()
            log.info("stop: %s", "cleanup cancelled" if stopped else "no cleanup was running")
        self.obeyed.append(scope)

    def reload(self) -> dict[str, tuple[object, object]]:
        """Re-read the live settings, apply the changed ones and log them; the rest waits for a restart."""
        try:
            fresh = self.reread()
        except ValidationError as exc:
            log.error("config: the settings do not validate, nothing changed: %s", exc)
            return {}
        current = self.worker.settings
        changed = {
            name: (getattr(current, name), getattr(fresh, name))
            for name in LIVE_SETTINGS
            if getattr(current, name) != getattr(fresh, name)
        }
        if "log_level" in changed and not set_level(fresh.log_level):
            log.error("config: log level %r is not a level; kept %s", fresh.log_level, current.log_level)
            del changed["log_level"]
        for name, (_, new) in changed.items():
            setattr(current, name, new)
        if "cleanup_interval_s" in changed and self.maintenance is not None:
            self.maintenance.reschedule()
        if changed:
            for name, (old, new) in changed.items():
                log.info("config: %s %s -> %s", name, _shown(old), _shown(new))
        else:
            log.info("config: no live setting changed")
        return changed


def _shown(value: object) -> str:
    if isinstance(value, frozenset):
        return ",".join(sorted(value)) or "(none)"
    return str(value)
