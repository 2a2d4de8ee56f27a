"""The client library's own cost: the same calls through ``buffer.StorageClient`` and as raw publishes.

Both run in one agent process against the same running worker, one after the other, with the same
number of calls in flight. What the client adds (envelope and params models, retry wrapper, reply
parsing into output models, its RPC bookkeeping) shows as extra CPU per call in the agent process and as
extra latency at 1 in flight; the worker's share is the same for both.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.commands import AGENT, READ_TRACE, Workload
from bench.common import SPAWN
from bench.loadgen import Agent, Run
from bench.systems import System

ACTIONS = ("get_artifact", "save_thread")
LEVELS = (1, 50)


async def _through_client(
    client: Any, action: str, count: int, in_flight: int, ids: tuple[str, ...], prefix: str
) -> dict[str, Any]:
    latencies: list[float] = []
    counter = iter(range(count))

    async def one(i: int) -> None:
        sent = time.perf_counter()
        if action == "get_artifact":
            await client.get_artifact(ids[i % len(ids)])
        else:
            await client.save_thread(f"{prefix}-{i % 100}", [{"role": "user", "content": f"message {i}"}])
        latencies.append(time.perf_counter() - sent)

    async def slot() -> None:
        for i in counter:
            await one(i)

    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(slot() for _ in range(in_flight)))
    seconds = time.perf_counter() - started
    latencies.sort()
    return {
        "msgs_s": count / seconds,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000,
        "cpu_us_per_call": (time.process_time() - cpu) / count * 1e6,
    }


async def _measure(amqp_url: str, exchange: str, storage_root: str, ids: tuple[str, ...], count: int) -> list[Any]:
    from buffer import StorageClient

    rows: list[dict[str, Any]] = []
    agent = Agent(amqp_url)
    await agent.open()
    with tempfile.TemporaryDirectory(prefix="mindbus-bench-buffer-") as buffer_dir:
        client = StorageClient(
            amqp_url=amqp_url,
            exchange=exchange,
            agent_id=AGENT,
            storage_root=storage_root,
            buffer_dir=Path(buffer_dir),
            trace_id=READ_TRACE,
        )
        async with client:
            for action in ACTIONS:
                for in_flight in LEVELS:
                    workload = Workload(action, count=count, artifact_ids=ids, thread_prefix=f"raw-{in_flight}")
                    await agent.run(Run(exchange, Workload(action, 50, artifact_ids=ids), in_flight))
                    cpu = time.process_time()
                    raw = await agent.run(Run(exchange, workload, in_flight))
                    raw["cpu_us_per_call"] = (time.process_time() - cpu) / count * 1e6
                    await _through_client(client, action, 50, in_flight, ids, f"warm-{in_flight}")
                    through = await _through_client(client, action, count, in_flight, ids, f"client-{in_flight}")
                    for path, result in (("raw aio-pika publish", raw), ("StorageClient", through)):
                        rows.append({"path": path, "action": action, "in_flight": in_flight, **result})
    await agent.close()
    return rows


def _main(amqp_url: str, exchange: str, storage_root: str, ids: tuple[str, ...], count: int, out: Connection) -> None:
    try:
        out.send(("done", asyncio.run(_measure(amqp_url, exchange, storage_root, ids, count))))
    except Exception as exc:
        out.send(("error", repr(exc)))


def run(worker: System, ids: tuple[str, ...], count: int) -> dict[str, Any]:
    """Both paths against ``worker``, in an agent process of their own."""
    parent, child = SPAWN.Pipe()
    process = SPAWN.Process(
        target=_main, args=(worker.amqp_url, worker.names.exchange, worker.storage_root, ids, count, child)
    )
    process.start()
    state, value = parent.recv()
    process.join(60)
    if state != "done":
        raise RuntimeError(f"client benchmark failed: {value}")
    rows: list[dict[str, Any]] = value
    for row in rows:
        print(
            f"  {row['path']:22} {row['action']:13} {row['in_flight']:>3} in flight: {row['msgs_s']:7.0f}/s  "
            f"p50 {row['p50_ms']:6.2f} ms  agent cpu {row['cpu_us_per_call']:5.0f} us/call",
            flush=True,
        )
    return {"count": count, "rows": rows}
