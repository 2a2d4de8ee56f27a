"""``python -m bench.ops_overhead``: what metrics, the node registry, the command log and tracing cost per command.

One process, one event loop, the machine's RabbitMQ and a SQLite file: the same worker is started with
the operating parts off and on, alternately (off, on, off, on, ...), and each run sends ``get_artifact``
of a missing id with 50 in flight. Prints commands/s per configuration and the on/off ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika

from contracts import make_command, topology
from service.bootstrap import build_worker
from service.settings import Settings

CONFIGS: dict[str, dict[str, Any]] = {
    "off": {"command_log": False, "node_registry": False, "metrics_port": None, "otel": False},
    "metrics+registry": {"command_log": False, "node_registry": True, "metrics_port": 0, "otel": False},
    "all, log to /dev/null": {"command_log": True, "node_registry": True, "metrics_port": 0, "otel": False},
}


async def _run(amqp_url: str, folder: Path, overrides: dict[str, Any], count: int, in_flight: int) -> float:
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        amqp_url=amqp_url,
        exchange=f"bench.ops.{suffix}",
        queue=f"bench.ops.{suffix}.commands",
        dlq=f"bench.ops.{suffix}.dlq",
        database_url=f"sqlite+aiosqlite:///{folder / (suffix + '.db')}",
        storage_root=(folder / suffix).as_uri(),
        cleanup_interval_s=0,
        metrics_host="127.0.0.1",
        **overrides,
    )  # type: ignore[arg-type]
    worker = build_worker(settings)
    await worker.start()
    conn = await aio_pika.connect(amqp_url)
    try:
        channel = await conn.channel()
        exchange = await channel.get_exchange(settings.exchange)
        replies = await channel.declare_queue(exclusive=True, auto_delete=True)
        waiting: dict[str, asyncio.Future[None]] = {}

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            future = waiting.pop(message.correlation_id or "", None)
            if future is not None:
                future.set_result(None)

        await replies.consume(on_reply, no_ack=True)
        params = {"artifact_id": "art_00000000-0000-0000-0000-000000000000"}

        async def one() -> None:
            envelope = make_command("get_artifact", params, source="bench")
            future = asyncio.get_running_loop().create_future()
            waiting[envelope.id] = future
            await exchange.publish(
                aio_pika.Message(envelope.to_json_bytes(), reply_to=replies.name, correlation_id=envelope.id),
                routing_key=topology.ROUTING_KEY_ANY,
            )
            await future

        async def slot(n: int) -> None:
            for _ in range(n):
                await one()

        await asyncio.gather(*(slot(10) for _ in range(in_flight)))  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(slot(count // in_flight) for _ in range(in_flight)))
        return (count // in_flight * in_flight) / (time.perf_counter() - started)
    finally:
        await conn.close()
        await worker.stop()
        cleanup = await aio_pika.connect(amqp_url)
        channel = await cleanup.channel()
        for queue in (settings.queue, settings.dlq):
            await channel.queue_delete(queue)
        for name in (settings.exchange, settings.dlx):
            await channel.exchange_delete(name)
        await cleanup.close()


async def main_async(args: argparse.Namespace) -> None:
    commands_log = logging.getLogger("service.commands")
    commands_log.setLevel(logging.INFO)
    commands_log.propagate = False
    commands_log.addHandler(logging.NullHandler() if args.no_format else logging.FileHandler(os.devnull))
    rates: dict[str, list[float]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name, overrides in CONFIGS.items():
                rates[name].append(await _run(args.amqp_url, Path(tmp), overrides, args.count, args.in_flight))
    base = statistics.median(rates["off"])
    print(f"get_artifact (missing id), {args.count} commands x {args.rounds} rounds, {args.in_flight} in flight")
    for name, values in rates.items():
        median = statistics.median(values)
        print(
            f"  {name:<24} {median:8.0f} commands/s  ({median / base:.2f} of off)  runs: {[round(v) for v in values]}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ops_overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/"))
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-format", action="store_true", help="log lines are built but not formatted or written")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
