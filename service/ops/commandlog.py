"""One structured log line per command: action, outcome code, duration, trace id, requester.

Logged through ``service.commands`` so it can be routed or silenced on its own. Message bodies never
appear here (params may hold personal data); the envelope id is enough to find a command again.
The line is built only when the logger is enabled for its level, so a silenced log costs one check.
"""

from __future__ import annotations

import logging

from service.core.pipeline import Outcome, Settle

LOGGER_NAME = "service.commands"
log = logging.getLogger(LOGGER_NAME)

SERVER_FAULTS = frozenset({"INTERNAL", "UNAVAILABLE", "DATA_LOSS"})
"""Outcomes that point at the worker or its stores rather than at the command: logged as warnings."""


def otel_trace_id(traceparent: str | None) -> str | None:
    """The 32-hex trace id of a W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``)."""
    if traceparent is None:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def log_outcome(outcome: Outcome, elapsed_s: float) -> None:
    """A ``Worker.on_outcome`` observer."""
    level = logging.WARNING if outcome.code in SERVER_FAULTS else logging.INFO
    if not log.isEnabledFor(level):
        return
    duration_ms = round(elapsed_s * 1000, 3)
    log.log(
        level,
        "%s %s %.1fms requester=%s trace=%s",
        outcome.action or "(invalid)",
        outcome.code,
        duration_ms,
        outcome.requester_id,
        outcome.trace_id,
        extra={
            "action": outcome.action,
            "code": outcome.code,
            "duration_ms": duration_ms,
            "requester": outcome.requester_id,
            "trace_id": outcome.trace_id,
            "otel_trace_id": otel_trace_id(outcome.traceparent),
            "envelope_id": outcome.envelope_id,
            "correlation_id": outcome.correlation_id,
            "replayed": outcome.replayed,
            "dead_lettered": outcome.settle is Settle.REJECT,
        },
    )
