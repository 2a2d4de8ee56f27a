"""The worker's services without a broker, as the broker-free tests get them (see the ``services`` fixture)."""

from __future__ import annotations

from collections.abc import Callable

from service.core.context import HandlerContext

UNIT_MAX_FILE_BYTES = 64 * 1024
"""STORAGE_MAX_FILE_BYTES of the broker-free tests: small, so a test can go past it cheaply."""

MakeContext = Callable[..., HandlerContext]
"""The ``make_ctx`` fixture: ``make_ctx("alice", trace="t1")`` acts as that requester."""
