"""``python -m bench.pipeline_cpu``: the worker's own CPU per command, without the broker.

Runs the pipeline in this process on a fresh SQLite database and storage folder, with N commands at a
time, and prints CPU microseconds per command (all threads: the event loop, SQLite's thread, fsync) and
the mean size of the write groups. The broker-side figures of ``bench.throughput`` include the AMQP work
as well; this isolates what the pipeline, the database and the files cost. ``--profile`` writes a
cProfile dump of the timed part (open it with ``python -m pstats`` or snakeviz).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.commands import Workload, build
from service.core.context import Services
from service.core.pipeline import Delivery, Pipeline
from service.files import FileStore
from service.settings import Settings
from service.store.engine.db import create_engine
from service.store.engine.lookups import PointLookups
from service.store.engine.schema import prepare
from service.store.engine.writer import SingleWriter
from service.transport.loop import run as run_loop

ACTIONS = ("get_artifact", "register_artifact", "list_artifacts", "save_thread")


async def _start(folder: Path) -> tuple[Pipeline, list[int]]:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{folder / 'storage.db'}",
        storage_root=(folder / "root").as_uri(),
        cleanup_interval_s=0,
    )  # type: ignore[call-arg]
    engine = create_engine(settings.database_url)
    await prepare(engine, migrate_on_start=True, create_if_empty=True)
    files = FileStore(settings.storage_root)
    files.ensure_layout()
    groups: list[int] = []
    writer = SingleWriter(engine, batch_max=settings.write_batch_max, on_batch=groups.append)
    await writer.start()
    lookups = PointLookups(engine)
    await lookups.start()
    services = Services(settings=settings, engine=engine, writer=writer, files=files, lookups=lookups)
    return Pipeline(services), groups


async def _drive(pipeline: Pipeline, bodies: list[bytes], in_flight: int) -> list[str]:
    """Every body through the pipeline, ``in_flight`` at a time; the outcome codes."""
    codes: list[str] = []
    queue = iter(bodies)

    async def lane() -> None:
        for body in queue:
            outcome = await pipeline.process(Delivery(body=body, reply_to="bench.replies"))
            codes.append(outcome.code)

    await asyncio.gather(*(lane() for _ in range(in_flight)))
    return codes


async def _main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="pipeline-cpu-") as tmp:
        folder = Path(tmp)
        pipeline, groups = await _start(folder)
        temp_dir = str(folder / "root" / "temp")
        seed_ids = tuple(f"art_{uuid.uuid4()}" for _ in range(200))
        seed = Workload("register_artifact", count=len(seed_ids), new_ids=seed_ids, temp_dir=temp_dir)
        codes = await _drive(pipeline, [b for b, _ in build(seed)], 20)
        assert set(codes) == {"OK"}, f"seeding failed: {codes[:5]}"
        profiler = cProfile.Profile() if args.profile else None
        for action in args.actions:
            rates, cpus, sizes = [], [], []
            for _ in range(args.rounds):
                workload = Workload(action, count=args.count, artifact_ids=seed_ids, temp_dir=temp_dir)
                bodies = [b for b, _ in build(workload)]
                groups.clear()
                cpu0, wall0 = time.process_time(), time.perf_counter()
                if profiler is not None:
                    profiler.enable()
                codes = await _drive(pipeline, bodies, args.in_flight)
                if profiler is not None:
                    profiler.disable()
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                bad = [c for c in codes if c != "OK"]
                assert not bad, f"{action}: {len(bad)} failed, first {bad[0]}"
                rates.append(len(bodies) / wall)
                cpus.append(cpu / len(bodies) * 1e6)
                sizes.append(statistics.mean(groups) if groups else 0.0)
            print(
                f"{action:18} {args.in_flight:>3} in flight: {statistics.median(rates):7.0f} cmd/s  "
                f"cpu {statistics.median(cpus):6.0f} us/cmd  write group {statistics.median(sizes):5.1f}",
                flush=True,
            )
        if profiler is not None:
            profiler.dump_stats(args.profile)
            print(f"profile: {args.profile}")
        services: Any = pipeline.services
        await services.writer.stop()
        await services.lookups.close()
        await services.engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline_cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--actions", nargs="+", choices=ACTIONS, default=list(ACTIONS))
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto")
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile dump of the timed part here")
    args = parser.parse_args(argv)
    run_loop(_main(args), choice=args.loop)


if __name__ == "__main__":
    main()
