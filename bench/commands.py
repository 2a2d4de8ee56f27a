"""The commands the load generator sends: COMMAND envelopes as an agent builds them, made before timing.

Write commands need unique envelope ids (the inbox answers a repeated id from storage), and
``register_artifact`` needs its 1 KiB file already under ``<STORAGE_ROOT>/temp/``, as the client library
leaves it; both are prepared here, outside the timed window.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

AGENT = "bench-agent"
READ_TRACE = "bench-read"
WRITE_TRACE = "bench-write"
"""Where the throughput matrix registers, away from the trace it lists."""
FILE_BYTES = 1024
THREADS_PER_RUN = 100
MIX = ("get_artifact", "register_artifact", "list_artifacts", "save_thread")


@dataclass(frozen=True)
class Workload:
    """What to send: ``action`` is a contract action, ``echo`` (any body) or ``mix`` (the four in turn).

    ``artifact_ids`` are the artifacts reads target; ``new_ids`` (optional) the ids registers give theirs.
    """

    action: str
    count: int
    artifact_ids: tuple[str, ...] = ()
    new_ids: tuple[str, ...] = ()
    temp_dir: str | None = None
    trace_id: str = READ_TRACE
    thread_prefix: str = field(default_factory=lambda: f"bench-thread-{uuid.uuid4().hex[:8]}")
    filters: dict[str, Any] = field(default_factory=dict)
    """``list_artifacts`` filters (by default the workload's trace; ``limit`` 20 unless given), ``list_threads``
    ones, or ``get_lineage``'s direction and depth."""


def envelope(action: str, params: dict[str, Any], trace_id: str = READ_TRACE) -> tuple[bytes, str]:
    """A COMMAND body and its id (used as the AMQP correlation id)."""
    command_id = str(uuid.uuid4())
    body = {
        "specversion": "1.0",
        "type": "ai.team.command",
        "source": AGENT,
        "id": command_id,
        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": {
            "action": action,
            "params": params,
            "context": {"requester_id": AGENT, "requester_trace_id": trace_id},
        },
    }
    return json.dumps(body, separators=(",", ":")).encode(), command_id


def write_temp_file(temp_dir: str) -> tuple[str, int, str]:
    """A fresh 1 KiB file under temp/: its URI, size and checksum."""
    data = os.urandom(FILE_BYTES)
    path = Path(temp_dir) / f"bench-{uuid.uuid4().hex}.bin"
    path.write_bytes(data)
    return path.resolve().as_uri(), len(data), "sha256:" + hashlib.sha256(data).hexdigest()


def manifest(temp_dir: str, trace_id: str, index: int, artifact_id: str | None = None) -> dict[str, Any]:
    uri, size, checksum = write_temp_file(temp_dir)
    return {
        "id": artifact_id or f"art_{uuid.uuid4()}",
        "trace_id": trace_id,
        "step_id": f"step-{index % 7}",
        "created_by": AGENT,
        "artifact_type": "report" if index % 2 else "table",
        "content_type": "application/octet-stream",
        "uri": uri,
        "size_bytes": size,
        "checksum": checksum,
        "visibility": "trace",
        "labels": {"risk_level": "low" if index % 3 else "high", "inn": f"77{index % 100:08d}"},
    }


def one(action: str, index: int, w: Workload) -> tuple[bytes, str]:
    if action in ("get_artifact", "echo"):
        return envelope("get_artifact", {"artifact_id": w.artifact_ids[index % len(w.artifact_ids)]}, w.trace_id)
    if action == "list_artifacts":
        return envelope("list_artifacts", {"limit": 20, **(w.filters or {"trace_id": w.trace_id})}, w.trace_id)
    if action == "get_lineage":  # filters: direction and depth
        return envelope("get_lineage", {"artifact_id": w.artifact_ids[index % len(w.artifact_ids)], **w.filters})
    if action == "list_threads":
        return envelope("list_threads", {**w.filters, "limit": 20}, w.trace_id)
    if action == "register_artifact":
        assert w.temp_dir is not None, "register_artifact needs the worker's temp/ folder"
        chosen = w.new_ids[index] if w.new_ids else None
        return envelope("register_artifact", {"manifest": manifest(w.temp_dir, w.trace_id, index, chosen)}, w.trace_id)
    if action == "save_thread":
        message = {"role": "user" if index % 2 else "assistant", "content": f"message {index} of the benchmark"}
        params = {"thread_id": f"{w.thread_prefix}-{index % THREADS_PER_RUN}", "messages": [message]}
        return envelope("save_thread", params, w.trace_id)
    raise ValueError(f"no workload for {action!r}")


def build(w: Workload) -> list[tuple[bytes, str]]:
    """Every body of a workload, built (and its files written) before the clock starts."""
    if w.action == "mix":
        return [one(MIX[i % len(MIX)], i // len(MIX), w) for i in range(w.count)]
    return [one(w.action, i, w) for i in range(w.count)]
