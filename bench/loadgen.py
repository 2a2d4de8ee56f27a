"""The load generator: a raw aio-pika agent in its own process keeping N commands in flight.

It is the same for every system under test: persistent messages published with publisher confirms to
the system's exchange, replies on an exclusive queue matched by correlation id. Latency is publish to
reply; throughput is replies per second over the measured window (a warm-up runs first).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import aio_pika

from bench import commands
from bench.commands import Workload
from bench.common import ROUTING_KEY

REPLY_TIMEOUT_S = 60
RESULT_MARK = b'"type":"ai.team.result"'


@dataclass(frozen=True)
class Run:
    """One measurement: ``workload`` sent with ``in_flight`` commands outstanding at any moment."""

    exchange: str
    workload: Workload
    in_flight: int
    expect_result: bool = True
    checkpoints: tuple[int, ...] = ()


class Agent:
    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self._waiting: dict[str, asyncio.Future[bytes]] = {}

    async def open(self) -> None:
        self.conn = await aio_pika.connect(self.amqp_url)
        self.channel = await self.conn.channel(publisher_confirms=True)
        self.replies = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        await self.replies.consume(self._on_reply, no_ack=True)

    async def close(self) -> None:
        await self.conn.close()

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        future = self._waiting.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message.body)

    async def run(self, run: Run, progress: Connection | None = None) -> dict[str, Any]:
        exchange = await self.channel.get_exchange(run.exchange, ensure=False)
        bodies = commands.build(run.workload)
        return await self._drive(exchange, bodies, run.in_flight, run.expect_result, run.checkpoints, progress)

    async def _drive(
        self,
        exchange: aio_pika.abc.AbstractExchange,
        bodies: list[tuple[bytes, str]],
        in_flight: int,
        expect_result: bool,
        checkpoints: tuple[int, ...],
        progress: Connection | None,
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        latencies = [0.0] * len(bodies)
        errors: list[bytes] = []
        counter = itertools.count()
        done = 0
        marks = set(checkpoints)
        reply_to = self.replies.name

        async def slot() -> None:
            nonlocal done
            while (i := next(counter)) < len(bodies):
                body, command_id = bodies[i]
                future: asyncio.Future[bytes] = loop.create_future()
                self._waiting[command_id] = future
                message = aio_pika.Message(
                    body,
                    correlation_id=command_id,
                    message_id=command_id,
                    reply_to=reply_to,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    content_type="application/json",
                )
                sent = time.perf_counter()
                await exchange.publish(message, routing_key=ROUTING_KEY)
                try:
                    reply = await asyncio.wait_for(future, REPLY_TIMEOUT_S)
                except TimeoutError:  # a lost reply is an error of the system under test, not of the run
                    self._waiting.pop(command_id, None)
                    reply = f"no reply within {REPLY_TIMEOUT_S} s".encode()
                latencies[i] = time.perf_counter() - sent
                if expect_result and RESULT_MARK not in reply:
                    errors.append(reply)
                done += 1
                if done in marks and progress is not None:
                    progress.send(("checkpoint", done))

        started, cpu_started = time.perf_counter(), time.process_time()
        await asyncio.gather(*(slot() for _ in range(min(in_flight, len(bodies)))))
        seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
        ordered = sorted(latencies)
        return {
            "count": len(bodies),
            "seconds": seconds,
            "msgs_s": len(bodies) / seconds,
            "loadgen_cpu_s": cpu_s,  # its own CPU while the commands ran (bodies and files were made before)
            "p50_ms": _percentile(ordered, 0.50) * 1000,
            "p99_ms": _percentile(ordered, 0.99) * 1000,
            "mean_ms": statistics.fmean(ordered) * 1000,
            "errors": len(errors),
            "first_error": errors[0].decode(errors="replace")[:500] if errors else None,
        }


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def main(amqp_url: str, conn: Connection) -> None:
    """Process body: answer ``Run`` requests on the pipe until it sends None."""

    async def serve() -> None:
        agent = Agent(amqp_url)
        await agent.open()
        conn.send(("ready", None))
        try:
            while True:
                request = await asyncio.to_thread(conn.recv)
                if request is None:
                    return
                try:
                    result = await agent.run(request, conn)
                except Exception as exc:
                    conn.send(("error", repr(exc)))
                else:
                    conn.send(("done", result))
        finally:
            await agent.close()

    asyncio.run(serve())


class LoadGenerator:
    """The orchestrator's handle on the load generator process."""

    def __init__(self, amqp_url: str) -> None:
        from bench.common import SPAWN

        self._conn, child = SPAWN.Pipe()
        self.process = SPAWN.Process(target=main, args=(amqp_url, child), name="bench-loadgen", daemon=True)

    def start(self) -> LoadGenerator:
        self.process.start()
        state, value = self._conn.recv()
        if state != "ready":
            raise RuntimeError(f"load generator failed to start: {value}")
        return self

    def run(self, run: Run, on_checkpoint: Callable[[int], object] | None = None) -> dict[str, Any]:
        self._conn.send(run)
        while True:
            state, value = self._conn.recv()
            if state == "checkpoint":
                if on_checkpoint is not None:
                    on_checkpoint(value)
            elif state == "done":
                return value  # type: ignore[no-any-return]
            else:
                raise RuntimeError(f"load generator failed: {value}")

    def stop(self) -> None:
        if self.process.is_alive():
            self._conn.send(None)
            self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
