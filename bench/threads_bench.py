"""Thread latency against table size: save one new message and read the last 50 of a 10,000-message thread.

    python -m bench.threads_bench [--backend sqlite|postgres|both] [--totals 100,10000,1000000] [--samples 200]

For each total number of messages in the database a fresh database is seeded directly (Core inserts):
the measured thread holds min(total, 10,000) messages, the rest sit in other threads of 1,000. Then a
real worker serves the commands and the timings are taken two ways: through the broker (an agent's
round trip: publish, the worker's pipeline and inbox, the reply) and by calling the handlers directly
(the database work alone). The point is the shape: the figures should not grow with the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aio_pika
from sqlalchemy import insert

from bench.common import fresh_database
from contracts import GetThreadParams, SaveThreadParams, make_command, utc_now
from contracts import topology as names
from service.bootstrap import build_worker
from service.core.context import HandlerContext
from service.handlers.threads import get_thread, save_thread
from service.identity import SYSTEM
from service.settings import Settings
from service.store.engine.db import create_engine
from service.store.engine.schema import migrate
from service.store.models import Thread, ThreadMessageRow

THREAD = "bench-thread"
THREAD_MESSAGES = 10_000
OTHER_THREAD_MESSAGES = 1_000
SEED_CHUNK = 10_000
READ_LIMIT = 50
AMQP_URL = os.environ.get("AMQP_URL", names.DEFAULT_AMQP_URL)


@dataclass(frozen=True)
class Row:
    backend: str
    total: int
    thread: int
    seed_s: float
    wire_save: list[float]
    wire_read: list[float]
    direct_save: list[float]
    direct_read: list[float]


# -- databases ---------------------------------------------------------------------------------


async def seed(database_url: str, total: int) -> int:
    """Create the schema and ``total`` messages; returns the size of the measured thread."""
    engine = create_engine(database_url)
    threads, messages = Thread.__table__, ThreadMessageRow.__table__
    in_thread = min(total, THREAD_MESSAGES)
    plan = [(THREAD, in_thread)]
    rest = total - in_thread
    for n in range(0, rest, OTHER_THREAD_MESSAGES):
        plan.append((f"other-{n // OTHER_THREAD_MESSAGES}", min(OTHER_THREAD_MESSAGES, rest - n)))
    start = utc_now() - timedelta(days=1)
    try:
        await migrate(engine)
        async with engine.begin() as conn:
            await conn.execute(
                insert(threads),
                [
                    {
                        "id": thread_id,
                        "metadata": {"customer": thread_id},
                        "version": 1,
                        "message_count": size,
                        "next_seq": size,
                        "created_at": start,
                        "updated_at": start,
                        "owner": "bench-agent",  # the requester of the wire calls below
                        "visibility": "private",
                    }
                    for thread_id, size in plan
                ],
            )
        batch: list[dict[str, Any]] = []
        for thread_id, size in plan:
            for seq in range(size):
                batch.append(
                    {
                        "id": uuid.uuid4(),
                        "thread_id": thread_id,
                        "seq": seq,
                        "role": "user" if seq % 2 else "assistant",
                        "content": f"message {seq} of {thread_id}: " + "lorem ipsum " * 8,
                        "metadata": {},
                        "created_at": start + timedelta(milliseconds=seq),
                    }
                )
                if len(batch) >= SEED_CHUNK:
                    await _insert(engine, messages, batch)
                    batch = []
        await _insert(engine, messages, batch)
        if engine.dialect.name == "postgresql":
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql("ANALYZE")
    finally:
        await engine.dispose()
    return in_thread


async def _insert(engine: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    if rows:
        async with engine.begin() as conn:
            await conn.execute(insert(table), rows)


# -- measuring ---------------------------------------------------------------------------------


class Agent:
    """A raw AMQP agent: one reply queue, replies matched by correlation id."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def __aenter__(self) -> Agent:
        self.conn = await aio_pika.connect(self.settings.amqp_url)
        channel = await self.conn.channel()
        self.exchange = await channel.get_exchange(self.settings.exchange)
        self.replies = await channel.declare_queue(exclusive=True, auto_delete=True)
        await self.replies.consume(self._on_reply, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        future = self.waiting.pop(message.correlation_id or "", None)
        if future is not None:
            future.set_result(json.loads(message.body))

    async def call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        envelope = make_command(action, params, source="bench-agent")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[envelope.id] = future
        await self.exchange.publish(
            aio_pika.Message(envelope.to_json_bytes(), correlation_id=envelope.id, reply_to=self.replies.name),
            routing_key=names.ROUTING_KEY_ANY,
        )
        reply = await asyncio.wait_for(future, 30)
        if reply["type"] != "ai.team.result":
            raise RuntimeError(f"{action} failed: {reply['data']}")
        return reply


async def _timed(samples: int, fn: Callable[[], Awaitable[Any]]) -> list[float]:
    for _ in range(5):  # warm the pools and caches
        await fn()
    took = []
    for _ in range(samples):
        began = time.perf_counter()
        await fn()
        took.append((time.perf_counter() - began) * 1000)
    return took


async def measure(backend: str, total: int, samples: int) -> Row:
    with tempfile.TemporaryDirectory(prefix="threads-bench-") as tmp:
        folder = Path(tmp)
        database_url, drop = await fresh_database(backend, folder, "bench_threads")
        try:
            began = time.monotonic()
            in_thread = await seed(database_url, total)
            seed_s = time.monotonic() - began
            suffix = uuid.uuid4().hex[:8]
            settings = Settings(  # type: ignore[call-arg]
                amqp_url=AMQP_URL,
                exchange=f"bench.{suffix}",
                queue=f"bench.{suffix}.commands",
                dlq=f"bench.{suffix}.dlq",
                database_url=database_url,
                storage_root=(folder / "files").as_uri(),
                cleanup_interval_s=0,
                command_log=False,
                node_registry=False,
            )
            (folder / "files").mkdir()
            worker = build_worker(settings)
            await worker.start()
            try:
                async with Agent(settings) as agent:
                    wire_save = await _timed(samples, lambda: agent.call("save_thread", _one_new(in_thread)))
                    wire_read = await _timed(samples, lambda: agent.call("get_thread", _last_50()))
                assert worker.services is not None
                ctx = HandlerContext(worker.services, SYSTEM)
                direct_save = await _timed(
                    samples, lambda: save_thread(SaveThreadParams.model_validate(_one_new(in_thread)), _fresh(ctx))
                )
                direct_read = await _timed(samples, lambda: get_thread(GetThreadParams.model_validate(_last_50()), ctx))
            finally:
                await worker.stop()
                await _delete_topology(settings)
        finally:
            await drop()
    return Row(backend, total, in_thread, seed_s, wire_save, wire_read, direct_save, direct_read)


def _one_new(size: int) -> dict[str, Any]:
    return {"thread_id": THREAD, "messages": [{"role": "user", "content": f"new turn after {size} messages"}]}


def _last_50() -> dict[str, Any]:
    return {"thread_id": THREAD, "limit": READ_LIMIT}


def _fresh(ctx: HandlerContext) -> HandlerContext:
    return HandlerContext(ctx.services, ctx.requester)


async def _delete_topology(settings: Settings) -> None:
    conn = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await conn.channel()
        for queue in (settings.queue, settings.node_queue, settings.dlq):
            await channel.queue_delete(queue)
        for exchange in (settings.exchange, settings.dlx):
            await channel.exchange_delete(exchange)
    finally:
        await conn.close()


# -- report ------------------------------------------------------------------------------------


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def table(rows: list[Row]) -> str:
    head = (
        f"{'backend':<9}{'messages in db':>15}{'thread':>8}{'seed s':>8}  "
        f"{'save p50/p95 ms (wire)':>23}{'read50 p50/p95 (wire)':>23}"
        f"{'save p50/p95 (direct)':>23}{'read50 p50/p95 (direct)':>25}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = [
            f"{_p(v, 50):6.2f} / {_p(v, 95):6.2f}" for v in (r.wire_save, r.wire_read, r.direct_save, r.direct_read)
        ]
        lines.append(
            f"{r.backend:<9}{r.total:>15,}{r.thread:>8,}{r.seed_s:>8.1f}  "
            f"{cells[0]:>23}{cells[1]:>23}{cells[2]:>23}{cells[3]:>25}"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--totals", default="100,10000,1000000", help="comma list of messages in the database")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the raw timings here")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    rows = []
    for backend in backends:
        for total in (int(t) for t in args.totals.split(",")):
            rows.append(await measure(backend, total, args.samples))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=1))


if __name__ == "__main__":
    asyncio.run(main())
