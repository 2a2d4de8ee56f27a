"""A worker and a console as real processes (``storage-worker run`` and ``storage-worker console``), and a
headless Chromium to drive the console: what an operator runs, over the real broker.

The stack is synchronous on purpose: Selenium blocks, so nothing of the stack may live on the test's event
loop. Processes write their output to files in the stack's folder (kept for a failing test's report).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buffer import SyncStorageClient
from contracts import topology
from tests.support.worker_process import READY_MARK, worker_env

START_TIMEOUT_S = 60.0
CHROMIUM = os.environ.get("STORAGE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("STORAGE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
CONSOLE_READY = "Uvicorn running on"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Process:
    """One child process with its output in a file; ``stop()`` terminates it (SIGKILL after 20 s)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self, last: int = 60) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-last:])

    def wait_for(self, mark: str, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.log.exists() and mark in self.log.read_text(errors="replace"):
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.output()}")
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready within {timeout_s:.0f}s:\n{self.output()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def spawn(name: str, args: list[str], env: dict[str, str], folder: Path) -> Process:
    log = folder / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "service.cli", *args],
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            cwd=folder,  # no stray .env of the repository is read
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Process(name, popen, log)


@dataclass
class ConsoleStack:
    """One worker (its own exchange, queues, database and files) and the consoles started against it."""

    folder: Path
    env: dict[str, str]
    worker: Process | None = None
    consoles: list[Process] = field(default_factory=list)
    base_url: str = ""
    """The first console: the broker's own user (an admin of the worker), no token."""

    @property
    def amqp_url(self) -> str:
        return self.env["AMQP_URL"]

    @property
    def exchange(self) -> str:
        return self.env["STORAGE_EXCHANGE"]

    @property
    def queue(self) -> str:
        return self.env["STORAGE_QUEUE"]

    @property
    def dlq(self) -> str:
        return self.env["STORAGE_DLQ"]

    @property
    def node_name(self) -> str:
        return self.env.get("STORAGE_NODE_NAME", topology.NODE_NAME)

    @property
    def storage_root(self) -> Path:
        return self.folder / "files"

    def start_worker(self) -> None:
        self.worker = spawn("worker", ["run"], self.env, self.folder)
        self.worker.wait_for(READY_MARK)

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()

    def start_console(self, *, amqp_url: str | None = None, **env: str) -> str:
        """Another ``storage-worker console`` on a free port (e.g. with a token, or as another broker user);
        returns its base URL."""
        port = free_port()
        console_env = {**self.env, "STORAGE_CONSOLE_PORT": str(port), **env}
        if amqp_url is not None:
            console_env["AMQP_URL"] = amqp_url
        process = spawn(f"console-{len(self.consoles)}", ["console"], console_env, self.folder)
        self.consoles.append(process)
        process.wait_for(CONSOLE_READY)
        return f"http://127.0.0.1:{port}"

    def client(self, agent_id: str = "agent.console-test", **overrides: Any) -> SyncStorageClient:
        """An agent's client for this worker, identified by ``agent_id`` (the body's identity, never an admin);
        ``user_id=True`` makes it the broker's own user instead (an admin of the worker)."""
        settings: dict[str, Any] = {
            "amqp_url": self.amqp_url,
            "exchange": self.exchange,
            "agent_id": agent_id,
            "storage_root": self.storage_root.as_uri(),
            "buffer_dir": self.folder / f"buffer-{uuid.uuid4().hex[:8]}",
            "retries": 1,
        }
        return SyncStorageClient(**{**settings, **overrides})

    def stop(self) -> None:
        for console in self.consoles:
            console.stop()
        self.stop_worker()

    def report(self) -> str:
        parts = [f"--- {p.name}\n{p.output()}" for p in [*([self.worker] if self.worker else []), *self.consoles]]
        return "\n".join(parts)


@contextlib.contextmanager
def console_stack(amqp_url: str, folder: Path, database_url: str | None = None, **env: str) -> Iterator[ConsoleStack]:
    """A worker on ``database_url`` (default a SQLite file in ``folder``) and one admin console, both stopped
    on exit. The worker beats every second, so the overview fills at once, and serves its metrics."""
    overrides = {
        "STORAGE_HEARTBEAT_INTERVAL": "1",
        "STORAGE_MIGRATE_ON_START": "true",
        "STORAGE_METRICS_PORT": str(free_port()),  # the worker serves it, the consoles read their rate from it
        **env,
    }
    if database_url is not None:
        overrides["DATABASE_URL"] = database_url
    stack = ConsoleStack(folder, worker_env(amqp_url, folder, **overrides))
    try:
        stack.start_worker()
        stack.base_url = stack.start_console()
        yield stack
    finally:
        stack.stop()


def chromium_paths() -> tuple[str, str] | None:
    """Debian's chromium and its chromedriver, when installed."""
    browser = shutil.which(CHROMIUM) or shutil.which("chromium")
    driver = shutil.which(CHROMEDRIVER) or shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None
