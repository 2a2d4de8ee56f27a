"""What every benchmarked system shares: the queue settings, the process plumbing, the RSS probe.

Every system under test (the bare echo, the naive peer, our worker) consumes from its own fresh queue
declared exactly like the worker's command queue: durable, ``x-max-priority: 255``, dead-lettered. Each
runs in its own process so the load generator never shares its event loop (or, where the OS allows, its
core) and the RSS we read is the server's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import platform
import signal
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aio_pika
import psutil

from contracts import topology

PREFETCH = 200
ROUTING_KEY = topology.ROUTING_KEY_ANY
SPAWN = multiprocessing.get_context("spawn")

DATABASES = ("sqlite", "postgresql")
SUFFIX = {"sqlite": "", "postgresql": "-pg"}
"""A system's kind says its database: ``worker`` on SQLite, ``worker-pg`` on PostgreSQL (one run can hold both)."""


def kind_on(base: str, database: str | None) -> str:
    """The system kind of ``base`` (``worker``, ``naive``, ...) on ``database``; echoes have no database."""
    return base + SUFFIX[database] if database else base


def base_kind(kind: str) -> str:
    """``worker-pg`` -> ``worker``: what the system is, whichever database it runs on."""
    return kind.removesuffix(SUFFIX["postgresql"])


def host_label() -> dict[str, Any]:
    """What tells one machine's results from another's: the CPU model, the cores and the day (UTC).

    A host name such as ``vm`` says nothing: two runs on different hardware would read alike.
    """
    cpu: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu MHz", "bogomips") and key not in cpu:
                    cpu[key] = value.strip()
    except OSError:  # not Linux: the platform's own words for the processor
        pass
    now = datetime.now(UTC)
    return {
        "cpu_model": cpu.get("model name") or platform.processor() or platform.machine(),
        "cpu_mhz": cpu.get("cpu MHz"),
        "bogomips": cpu.get("bogomips"),
        "cores": os.cpu_count(),
        "date": now.date().isoformat(),
        "time_utc": now.isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def host_line(label: dict[str, Any]) -> str:
    """The label in one line, for text summaries."""
    return f"{label['cpu_model']}, {label['cores']} cores, {label['date']} (load {label.get('load', '?')})"


@dataclass(frozen=True)
class Names:
    """One system's exchange and queue: unique per run so no leftovers skew a measurement."""

    exchange: str
    queue: str
    dlq: str

    @classmethod
    def fresh(cls, label: str) -> Names:
        suffix = f"{label}.{uuid.uuid4().hex[:8]}"
        return cls(f"bench.{suffix}", f"bench.{suffix}.commands", f"bench.{suffix}.dlq")

    @property
    def dlx(self) -> str:
        return topology.dlx_name(self.exchange)


async def declare_command_queue(channel: aio_pika.abc.AbstractChannel, names: Names) -> aio_pika.abc.AbstractQueue:
    """The worker's topology (service/transport/topology.py) declared with plain aio-pika, for the peers."""
    exchange = await channel.declare_exchange(names.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    dlx = await channel.declare_exchange(names.dlx, aio_pika.ExchangeType.FANOUT, durable=True)
    dlq = await channel.declare_queue(names.dlq, durable=True)
    await dlq.bind(dlx, routing_key="")
    queue = await channel.declare_queue(
        names.queue,
        durable=True,
        arguments={"x-max-priority": topology.MAX_PRIORITY, "x-dead-letter-exchange": names.dlx},
    )
    await queue.bind(exchange, routing_key=ROUTING_KEY)
    return queue


async def delete_topology(amqp_url: str, names: Names, nodes: Sequence[str] = ()) -> None:
    """Delete a run's exchanges and queues, the own queue of each worker node named too."""
    conn = await aio_pika.connect(amqp_url)
    try:
        channel = await conn.channel()
        own = [topology.node_queue_name(names.queue, node) for node in nodes]
        for queue in (names.queue, *own, names.dlq):
            with contextlib.suppress(Exception):
                await channel.queue_delete(queue)
        for exchange in (names.exchange, names.dlx):
            with contextlib.suppress(Exception):
                await channel.exchange_delete(exchange)
    finally:
        await conn.close()


def serve_until_terminated(
    start: Callable[[], Awaitable[Callable[[], Awaitable[None]]]],
    ready: Connection,
    runner: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run,
) -> None:
    """Process body of a server: start it, report ready, run until SIGTERM, stop it cleanly.

    ``runner`` runs the event loop: asyncio's own unless the server chooses another (the worker does).
    """

    async def main() -> None:
        stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop_event.set)
        try:
            stop = await start()
        except BaseException as exc:
            ready.send(("error", repr(exc)))
            raise
        ready.send(("ready", os.getpid()))
        await stop_event.wait()
        await stop()

    runner(main())


class ServerProcess:
    """A server in its own process; ``rss()`` reads its resident memory."""

    def __init__(self, target: Callable[..., None], *args: Any, name: str) -> None:
        parent, child = SPAWN.Pipe()
        self._ready = parent
        self.name = name
        self.process = SPAWN.Process(target=target, args=(*args, child), name=name, daemon=True)

    def start(self, timeout_s: float = 60) -> ServerProcess:
        self.process.start()
        if not self._ready.poll(timeout_s):
            self.stop()
            raise RuntimeError(f"{self.name} did not start within {timeout_s:.0f} s")
        state, value = self._ready.recv()
        if state != "ready":
            self.stop()
            raise RuntimeError(f"{self.name} failed to start: {value}")
        return self

    def rss_bytes(self) -> int:
        assert self.process.pid is not None
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def cpu_seconds(self) -> float:
        assert self.process.pid is not None
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def stop(self, timeout_s: float = 30) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


PG_ADMIN_DSN = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
"""Where a PostgreSQL benchmark creates (and afterwards drops) its own database."""


async def fresh_database(backend: str, folder: Path, prefix: str) -> tuple[str, Callable[[], Awaitable[None]]]:
    """A new empty database for one benchmark run, and how to drop it: a SQLite file, or a PostgreSQL database."""
    import asyncpg

    if backend == "sqlite":

        async def nothing() -> None:
            return None

        return f"sqlite+aiosqlite:///{folder / f'{prefix}.db'}", nothing
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    await admin(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}", lambda: admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
