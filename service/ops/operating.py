"""What ops see of a worker: the command log, metrics, the node registry and tracing, each as configured."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.ops import commandlog, telemetry
from service.ops.metrics import Metrics
from service.ops.outbox import OutboxPublisher
from service.ops.registry import NodeRegistry

if TYPE_CHECKING:
    from service.ops.telemetry import Tracing
    from service.transport.worker import Worker

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Operations:
    metrics: Metrics | None = None
    registry: NodeRegistry | None = None
    outbox: OutboxPublisher | None = None
    """Change events (``evt.storage.*``) from the outbox: installed on every worker."""
    tracing: Tracing | None = None


def install(worker: Worker) -> Operations:
    """Hook the enabled parts into the worker's lifecycle and outcome observers."""
    s = worker.settings
    outbox = OutboxPublisher(worker)  # always: change events are part of the contract, not an ops option
    outbox.attach()
    ops = Operations(outbox=outbox)
    if s.command_log:
        worker.on_outcome.append(commandlog.log_outcome)
    if s.metrics_port is not None:
        ops.metrics = Metrics(worker)
        ops.metrics.attach()
        outbox.expose(ops.metrics.registry)
    if s.node_registry:
        ops.registry = NodeRegistry(worker)
        ops.registry.attach()
    if telemetry.wanted(s):
        if telemetry.available():
            ops.tracing = telemetry.Tracing(worker)
            ops.tracing.attach()
        else:
            log.warning("tracing asked for but not installed: pip install 'mindbus-storage[telemetry]'")
    return ops
