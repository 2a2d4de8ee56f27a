"""What ops see of a worker: the command log, metrics, the node registry and tracing, each as configured."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.ops import commandlog, telemetry
from service.ops.events import StorageEvents
from service.ops.metrics import Metrics
from service.ops.registry import NodeRegistry

if TYPE_CHECKING:
    from service.ops.telemetry import Tracing
    from service.transport.worker import Worker

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Operations:
    metrics: Metrics | None = None
    registry: NodeRegistry | None = None
    events: StorageEvents | None = None
    """Storage events (``evt.storage.*``): installed on every worker."""
    tracing: Tracing | None = None


def install(worker: Worker) -> Operations:
    """Hook the enabled parts into the worker's lifecycle and outcome observers."""
    s = worker.settings
    events = StorageEvents(worker)  # always: storage events are part of the contract, not an ops option
    events.attach()
    ops = Operations(events=events)
    if s.command_log:
        worker.on_outcome.append(commandlog.log_outcome)
    if s.metrics_port is not None:
        ops.metrics = Metrics(worker)
        ops.metrics.attach()
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
