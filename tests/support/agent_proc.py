"""A throwaway agent process for the crash tests: spills uploads or replays its buffer until it is killed.

    python -m tests.support.agent_proc spill  --amqp-url URL --exchange X --storage-root R --buffer-dir D --ack-log F
    python -m tests.support.agent_proc replay --amqp-url URL --exchange X --storage-root R --buffer-dir D

``spill`` uploads artifacts forever and, for each call that returned Buffered, appends the artifact id to
the ack log (fsynced) only after the call returned: the ack log is what the agent was promised. It prints
``ready`` once its client is started, so the test can kill it at a random moment after that.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from buffer import Buffered, StorageClient


def _client(args: argparse.Namespace) -> StorageClient:
    return StorageClient(
        amqp_url=args.amqp_url,
        exchange=args.exchange,
        storage_root=args.storage_root,
        buffer_dir=args.buffer_dir,
        agent_id="agent-crash",
        trace_id=args.trace,
        call_timeout_s=5.0,
        connect_timeout_s=2.0,
        retries=1,
        retry_initial_s=0.001,
        heartbeat_s=3600,
    )


async def spill(args: argparse.Namespace) -> None:
    ack = os.open(args.ack_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    async with _client(args) as storage:
        print("ready", flush=True)
        n = 0
        while True:
            n += 1
            out = await storage.upload_artifact(f"crash test {os.getpid()} {n}".encode(), artifact_type="report")
            if not isinstance(out, Buffered):
                raise SystemExit(f"expected Buffered with the broker unreachable, got {out!r}")
            os.write(ack, (out.params["manifest"]["id"] + "\n").encode())
            os.fsync(ack)


async def replay(args: argparse.Namespace) -> None:
    async with _client(args) as storage:
        print("ready", flush=True)
        while (report := await storage.replay()).remaining:
            if report.stopped is not None:
                raise SystemExit(f"replay stopped: {report.stopped!r}")
        print("done", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["spill", "replay"])
    for option in ("--amqp-url", "--exchange", "--storage-root", "--buffer-dir"):
        parser.add_argument(option, required=True)
    parser.add_argument("--ack-log")
    parser.add_argument("--trace", default="trace-crash")
    args = parser.parse_args()
    asyncio.run(spill(args) if args.mode == "spill" else replay(args))


if __name__ == "__main__":
    sys.exit(main())
