"""Thousands of ``upload_artifact`` calls through the agent-side client while a test breaks things.

``ClientLoad`` runs the calls with bounded concurrency (an agent fleet, not a flood that would sit in the
queue past its expiration), records what the client answered for each (a RESULT, ``Buffered``, or an
exception), lets the test wait for the n-th answer to time its fault, drains the client's buffer at the
end, and audits the worker's database against what the client promised: each artifact registered exactly
once, with its file in place.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Protocol

from buffer import Buffered, StorageClient
from contracts import RegisterArtifactOutput, StorageError
from tests.support.fault_commands import file_matches
from tests.support.tally import Tally

CONCURRENCY = 48
SETTLE_POLL_S = 1.0


def client_for(env: dict[str, str], buffer_dir: Path, **overrides: Any) -> StorageClient:
    """A client on a worker's exchange and storage root, retrying fast enough for a test's time budget."""
    settings: dict[str, Any] = {
        "amqp_url": env["AMQP_URL"],
        "exchange": env["STORAGE_EXCHANGE"],
        "storage_root": env["STORAGE_ROOT"],
        "buffer_dir": buffer_dir,
        "agent_id": "agent-faults",
        "call_timeout_s": 10.0,
        "connect_timeout_s": 3.0,
        "retries": 4,
        "retry_initial_s": 1.0,
        "retry_multiplier": 2.0,
        "retry_max_s": 8.0,
        "heartbeat_s": 2.0,
    }
    settings.update(overrides)
    return StorageClient(trace_id="trace-faults", **settings)


class Stored(Protocol):
    """What the audit reads of the worker's database: ``StoreView`` (SQLite) or ``StoreRows`` (either)."""

    def artifacts(self) -> dict[str, tuple[str, str, str]]: ...
    def inbox_by_key(self, action: str) -> Counter[str]: ...


class ClientLoad:
    def __init__(self, client: StorageClient, count: int, *, tag: str, concurrency: int = CONCURRENCY) -> None:
        self.client = client
        self.count = count
        self.tag = tag
        self.ids = [f"art_{uuid.uuid4()}" for _ in range(count)]
        self.outcomes: dict[int, RegisterArtifactOutput | Buffered | BaseException] = {}
        self._limit = asyncio.Semaphore(concurrency)
        self._answered = asyncio.Event()
        self.started = time.monotonic()
        self.finished: float | None = None
        self.late_replies = 0
        """Replies that came after their call gave up (counted by the client's transport)."""

    def payload(self, i: int) -> bytes:
        return f"{self.tag} artifact {i}".encode()

    async def _one(self, i: int) -> None:
        async with self._limit:
            try:
                result: RegisterArtifactOutput | Buffered | BaseException = await self.client.upload_artifact(
                    self.payload(i), artifact_type="report", artifact_id=self.ids[i], filename=f"{i}.txt"
                )
            except (StorageError, OSError) as exc:
                result = exc
        self.outcomes[i] = result
        self._answered.set()

    async def run(self) -> None:
        await asyncio.gather(*(self._one(i) for i in range(self.count)))
        self.finished = time.monotonic()

    async def answered(self, n: int) -> None:
        """Return once ``n`` calls have been answered (whatever the answer)."""
        while len(self.outcomes) < n:
            self._answered.clear()
            await self._answered.wait()

    def count_of(self, kind: type) -> int:
        return sum(1 for v in self.outcomes.values() if isinstance(v, kind))

    async def settle(self, deadline: float) -> float | None:
        """Replay the client's buffer until it is empty; returns when it emptied (monotonic), None at the deadline."""
        while time.monotonic() < deadline:
            status = await self.client.status()
            self.late_replies = self.client.transport.late_replies
            if status.pending == 0:
                return time.monotonic()
            report = await self.client.replay()
            if report.remaining and report.stopped is not None:
                await asyncio.sleep(SETTLE_POLL_S)  # the worker said "not now": the next heartbeat's pace
        return None

    def audit(self, tally: Tally, store: Stored) -> dict[str, Any]:
        """Fill the tally from the database: lost, duplicated and unexpected, per command."""
        rows = store.artifacts()
        keys = store.inbox_by_key("register_artifact")
        mine = set(self.ids)
        for i, artifact_id in enumerate(self.ids):
            outcome = self.outcomes.get(i)
            if outcome is None:
                tally.lost.append(f"{artifact_id}: the call never returned")
                continue
            if isinstance(outcome, BaseException):
                tally.unexpected.append(f"{artifact_id}: {type(outcome).__name__}: {outcome}")
                continue
            if isinstance(outcome, RegisterArtifactOutput) and (outcome.already_exists or not outcome.registered):
                tally.duplicated.append(f"{artifact_id}: executed twice (already_exists in the reply)")
            row = rows.get(artifact_id)
            if row is None:
                tally.lost.append(f"{artifact_id}: {type(outcome).__name__} but not registered")
            elif row[2] != "completed" or not file_matches(row[0], row[1]):
                tally.unexpected.append(f"{artifact_id}: file missing or wrong at {row[0]} ({row[2]})")
        tally.unexpected += [f"{extra}: registered but never sent" for extra in sorted(set(rows) - mine)]
        tally.duplicated += [f"idempotency key {key}: {n} inbox records" for key, n in keys.items() if n > 1]
        return {
            "results": self.count_of(RegisterArtifactOutput),
            "buffered": self.count_of(Buffered),
            "errors": self.count_of(BaseException),
            "artifacts": len(rows),
            "late_replies": self.late_replies,
        }
