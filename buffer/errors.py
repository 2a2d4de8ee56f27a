"""The errors only the client side can see; the package exports them beside the wire hierarchy of ``contracts``.

An ERROR reply comes back as the ``contracts`` class of its code (``StorageError.from_wire``). A failure
that never reached the worker (no reply in time, nothing bound to the routing key, no broker) is one of the
narrower classes below; each keeps the wire code a caller would branch on, and all are retryable.
"""

from __future__ import annotations

from typing import Any

from contracts.errors import DeadlineExceeded, Unavailable


class CallTimeout(DeadlineExceeded):
    """No reply within the call's timeout. The command may still run: a retry reuses its idempotency key."""

    def __init__(self, action: str, timeout_s: float, details: dict[str, Any] | None = None) -> None:
        super().__init__(
            f"no reply to {action} within {timeout_s:g} s",
            {"action": action, "timeout_s": timeout_s, **(details or {})},
            retryable=True,
        )


class WaitTimeout(DeadlineExceeded):
    """``wait_for_artifact`` saw nothing matching its filter (that the requester may read) within its timeout."""

    def __init__(self, what: str, timeout_s: float, details: dict[str, Any] | None = None) -> None:
        super().__init__(
            f"no {what} within {timeout_s:g} s", {"timeout_s": timeout_s, **(details or {})}, retryable=True
        )


class Unroutable(Unavailable):
    """The broker had no queue bound for the command's routing key: no storage node has declared it yet."""

    def __init__(self, action: str, exchange: str, routing_key: str) -> None:
        super().__init__(
            f"no queue is bound to {routing_key!r} on exchange {exchange!r}",
            {"action": action, "exchange": exchange, "routing_key": routing_key, "reason": "unroutable"},
            retryable=True,
        )


class BrokerUnavailable(Unavailable):
    """The broker could not be reached, refused the publish, or the connection dropped mid-call."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, {"reason": "broker", **(details or {})}, retryable=True)


class SpillFailed(Unavailable):
    """A write could not be delivered and could not be kept in the local buffer either (disk full, too big)."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, {"reason": "spill_failed", **(details or {})}, retryable=True)


__all__ = ["BrokerUnavailable", "CallTimeout", "SpillFailed", "Unroutable", "WaitTimeout"]
