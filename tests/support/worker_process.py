"""The worker as a real process (``python -m service.cli run``), so a test can SIGKILL it, SIGTERM it and
start it again on the same database and files, with fault hooks armed through ``STORAGE_FAULTS``.

Every start gets the same settings (unique exchange and queue names, its own SQLite file and storage root);
readiness is the worker's own "consuming" log line, so no ping has to be sent (a ping would itself be a
command that fault hooks count). The output of every run is kept in ``runs`` for the test's report.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from contracts import topology
from tests.support.broker import broker_user

READY_MARK = " consuming "
START_TIMEOUT_S = 60.0
LINE_LIMIT_BYTES = 8 * 1024 * 1024
"""A log line with a long traceback must not stop the reader."""


SpawnWorker = Callable[..., Awaitable["WorkerProcess"]]
"""The ``spawn_worker`` fixture: ``await spawn_worker(faults="after_reply", STORAGE_PREFETCH="1")``."""


class WorkerFailed(RuntimeError):
    """The worker process exited before it consumed, or did not get there in time."""


@dataclass
class Run:
    """One life of the worker process: its pid, its output lines and how it ended."""

    pid: int
    faults: str
    lines: list[str] = field(default_factory=list)
    returncode: int | None = None

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)


def worker_env(amqp_url: str, folder: Path, **overrides: str) -> dict[str, str]:
    """Settings for a worker no other test shares: names, SQLite file and storage root under ``folder``."""
    suffix = uuid.uuid4().hex[:10]
    (folder / "files").mkdir(parents=True, exist_ok=True)
    env = {
        "AMQP_URL": amqp_url,
        "STORAGE_EXCHANGE": f"faults.{suffix}",
        "STORAGE_QUEUE": f"faults.{suffix}.commands",
        "STORAGE_DLQ": f"faults.{suffix}.dlq",
        "DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'storage.db'}",
        "STORAGE_ROOT": (folder / "files").resolve().as_uri(),
        "STORAGE_CLEANUP_INTERVAL": "0",
        "STORAGE_ADMINS": broker_user(amqp_url),  # admin = a command with user_id = the broker's user
        "STORAGE_LOG_LEVEL": "INFO",
    }
    env.update(overrides)
    return env


class WorkerProcess:
    """Start, kill, terminate and restart one worker; ``async with`` guarantees it is gone afterwards."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env = env
        self.folder = folder
        self.amqp_url, self.exchange = env["AMQP_URL"], env["STORAGE_EXCHANGE"]
        self.queue, self.dlq = env["STORAGE_QUEUE"], env["STORAGE_DLQ"]
        self.node_name = env.get("STORAGE_NODE_NAME", topology.NODE_NAME)
        self.runs: list[Run] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def storage_root(self) -> Path:
        return self.folder / "files"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    @property
    def current(self) -> Run:
        return self.runs[-1]

    async def __aenter__(self) -> WorkerProcess:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.kill()

    async def start(self, *, faults: str = "", timeout_s: float = START_TIMEOUT_S, **overrides: str) -> float:
        """Start the worker and wait until it consumes; returns the seconds that took."""
        if self.pid is not None:
            raise WorkerFailed("the worker is already running")
        env = {**os.environ, **self.env, **overrides, "STORAGE_FAULTS": faults, "PYTHONUNBUFFERED": "1"}
        began = time.monotonic()
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service.cli",
            "run",
            env=env,
            cwd=self.folder,  # no stray .env from the repository is read
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            limit=LINE_LIMIT_BYTES,
        )
        run = Run(self._proc.pid, faults)
        self.runs.append(run)
        ready = asyncio.Event()
        self._reader = asyncio.create_task(self._read(self._proc, run, ready))
        waiter = asyncio.create_task(ready.wait())
        exited = asyncio.create_task(self._proc.wait())
        try:
            done, _ = await asyncio.wait({waiter, exited}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            exited.cancel()
        if not ready.is_set():
            await self.kill()
            reason = "exited" if exited in done else f"did not consume within {timeout_s:.0f}s"
            raise WorkerFailed(f"worker {reason}:\n" + "\n".join(run.lines[-30:]))
        return time.monotonic() - began

    @staticmethod
    async def _read(proc: asyncio.subprocess.Process, run: Run, ready: asyncio.Event) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            run.lines.append(line)
            if READY_MARK in line and "service.transport.worker" in line:
                ready.set()

    async def wait_exit(self, timeout_s: float) -> int:
        """Wait for the process to end by itself (a fault hook or a signal); returns its exit code."""
        assert self._proc is not None
        code = await asyncio.wait_for(self._proc.wait(), timeout_s)
        await self._finish(code)
        return code

    async def kill(self) -> int | None:
        """SIGKILL: the process gets no chance to ack, reply or close anything."""
        return await self._signal(signal.SIGKILL, timeout_s=30)

    async def terminate(self, timeout_s: float = 60) -> int | None:
        """SIGTERM, the graceful stop: returns the exit code once the process is gone."""
        return await self._signal(signal.SIGTERM, timeout_s=timeout_s)

    async def _signal(self, sig: signal.Signals, timeout_s: float) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
        try:
            code = await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            code = await proc.wait()
        await self._finish(code)
        return code

    async def _finish(self, code: int) -> None:
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self.runs:
            self.current.returncode = code
            with (self.folder / "worker.log").open("a") as log:  # kept with the test's tmp dir, for post-mortems
                log.write(f"--- pid {self.current.pid}, faults {self.current.faults!r}, exit {code}\n")
                log.write("\n".join(self.current.lines) + "\n")
        self._proc = None

    def output(self) -> str:
        """Every run's output, for a failing test's message."""
        return "\n".join(
            f"--- run {i} (pid {run.pid}, faults {run.faults!r}, exit {run.returncode})\n" + "\n".join(run.lines[-40:])
            for i, run in enumerate(self.runs)
        )
