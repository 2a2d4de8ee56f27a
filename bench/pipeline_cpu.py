"""``python -m bench.pipeline_cpu``: the worker's own CPU per command, without the broker.

Runs the pipeline in this process on a fresh SQLite database and storage folder, with N commands at a
time, and prints CPU microseconds per command (all threads: the event loop, SQLite's thread, fsync) and
the mean size of the write groups. The broker-side figures of ``bench.throughput`` include the AMQP work
as well; this isolates what the pipeline, the database and the files cost. ``--profile`` writes a
cProfile dump of the timed part (open it with ``python -m pstats`` or snakeviz). The figures, with the
host's label, are also written as JSON and text to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.commands import Workload, build
from bench.common import host_label, host_line
from service.core.context import Services
from service.core.pipeline import Delivery, Pipeline
from service.files import FileStore
from service.handlers import ACTIONS as SERVED
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
    return Pipeline(services, SERVED), groups


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


async def _main(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="pipeline-cpu-") as tmp:
        folder = Path(tmp)
        pipeline, groups = await _start(folder)
        temp_dir = str(folder / "root" / "temp")
        seed_ids = tuple(f"art_{uuid.uuid4()}" for _ in range(200))
        seed = Workload("register_artifact", count=len(seed_ids), new_ids=seed_ids, temp_dir=temp_dir)
        codes = await _drive(pipeline, [b for b, _ in build(seed)], 20)
        assert set(codes) == {"OK"}, f"seeding failed: {codes[:5]}"
        profiler = cProfile.Profile() if args.profile else None
        rows: list[dict[str, Any]] = []
        for in_flight in args.in_flight:
            for action in args.actions:
                rates, cpus, sizes = [], [], []
                for _ in range(args.rounds):
                    workload = Workload(action, count=args.count, artifact_ids=seed_ids, temp_dir=temp_dir)
                    bodies = [b for b, _ in build(workload)]
                    groups.clear()
                    cpu0, wall0 = time.process_time(), time.perf_counter()
                    if profiler is not None:
                        profiler.enable()
                    codes = await _drive(pipeline, bodies, in_flight)
                    if profiler is not None:
                        profiler.disable()
                    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                    bad = [c for c in codes if c != "OK"]
                    assert not bad, f"{action}: {len(bad)} failed, first {bad[0]}"
                    rates.append(len(bodies) / wall)
                    cpus.append(cpu / len(bodies) * 1e6)
                    sizes.append(statistics.mean(groups) if groups else 0.0)
                row = {
                    "action": action,
                    "in_flight": in_flight,
                    "cmd_s": statistics.median(rates),
                    "cpu_us_per_cmd": statistics.median(cpus),
                    "write_group": statistics.median(sizes),
                    "rounds": [{"cmd_s": r, "cpu_us_per_cmd": c} for r, c in zip(rates, cpus, strict=True)],
                }
                rows.append(row)
                print(_line(row), flush=True)
        if profiler is not None:
            profiler.dump_stats(args.profile)
            print(f"profile: {args.profile}")
        services: Any = pipeline.services
        await services.writer.stop()
        await services.lookups.close()
        await services.engine.dispose()
        return rows


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['action']:18} {row['in_flight']:>3} in flight: {row['cmd_s']:7.0f} cmd/s  "
        f"cpu {row['cpu_us_per_cmd']:6.0f} us/cmd  write group {row['write_group']:5.1f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline_cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--actions", nargs="+", choices=ACTIONS, default=list(ACTIONS))
    parser.add_argument("--in-flight", type=int, nargs="+", default=[100], help="one or more levels")
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto")
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile dump of the timed part here")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for the JSON and text")
    args = parser.parse_args(argv)
    label = host_label()
    print(f"host: {host_line(label)}", flush=True)
    rows = run_loop(_main(args), choice=args.loop)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"pipeline_cpu-{time.strftime('%Y%m%d-%H%M%S')}"
    meta = {"host_label": label, **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    command = f"python -m bench.pipeline_cpu --in-flight {' '.join(map(str, args.in_flight))} --count {args.count}"
    text = [command, f"host: {host_line(label)}", *(_line(row) for row in rows)]
    stem.with_suffix(".txt").write_text("\n".join(text) + "\n")
    print(f"wrote {stem}.json and {stem}.txt")


if __name__ == "__main__":
    main()
