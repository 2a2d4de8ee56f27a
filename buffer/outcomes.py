"""What a write returns when the worker could not take it: proof that it is kept, not an error."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

from contracts import StorageError


@dataclass(frozen=True, slots=True)
class Buffered:
    """The command is on local disk and will be replayed; the worker will execute it exactly once.

    ``command_id`` is the envelope id it will be replayed with and ``idempotency_key`` the key the worker
    deduplicates on; ``params`` are the params as sent (``params["manifest"]["id"]`` is the artifact's id);
    ``error`` says why it could not be delivered now. ``file_copy`` is the buffer's copy of a registration's
    bytes, from which replay puts the file back if the staged one is gone by then (None: no copy was kept,
    because the file is not on the client's storage root, could not be read or does not fit the buffer).
    Should the worker have answered this envelope with NOT_FOUND while the file was away, replay registers the
    artifact under a new envelope id once the file is back; the artifact id is what stays.
    """

    action: str
    command_id: str
    idempotency_key: str
    params: dict[str, Any]
    path: Path
    error: StorageError
    file_copy: Path | None = None
    status: Literal["buffered"] = "buffered"


class CallOptions(TypedDict, total=False):
    """Per-call options every method takes as keyword arguments."""

    timeout_s: float
    """Seconds to wait for each attempt's reply (the client's ``call_timeout_s`` by default)."""
    context: dict[str, Any]
    """Merged over the client's default context (``requester_id``, ``requester_trace_id``, ...)."""
    idempotency_key: str
    """For writes: the key the worker deduplicates on (a fresh one per call by default)."""
    target_node: str
    """Send to one storage node instead of any."""
