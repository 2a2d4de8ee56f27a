"""``python -m bench.cpu_split``: where the machine's cores go while the load runs.

On a 2-core machine the broker, the load generator and the server share the CPU, so a server's throughput
is set by what everything costs per round trip, not by the server alone. This runs the lean echo (the limit),
the plain echo (a reference) and the worker with the same load and prints, per round trip, the CPU of each
party (the server split by thread, user and system time), and how much of the machine they used together:
near 100% means the cores are saturated and every microsecond the server saves goes to the broker and the
load generator. The figures, with the host's label, are also written as JSON and text to ``--out``.

With ``--database-url`` (PostgreSQL) the worker runs on a fresh database there and the PostgreSQL server is one
more party, ``postgres``: the CPU of its processes while the load ran (see ``PostgresServer``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from sqlalchemy.engine import make_url

from bench.commands import Workload
from bench.common import host_label, host_line
from bench.loadgen import LoadGenerator, Run
from bench.systems import System, is_postgres, start_echo, start_lean_echo, start_worker
from bench.throughput import ACTIONS, DEFAULT_AMQP_URL, Bench, warmup, workload_on

Times = dict[str, tuple[float, float]]
"""Party (``server<n>:main`` or ``:other`` threads, ``loadgen``, ``broker``, ``postgres``) → (user, system) CPU s."""

Processes = dict[tuple[int, float], tuple[float, float]]
"""A process, as (pid, start time) so that a reused pid is another process → its (user, system) CPU seconds so far."""


@dataclass(frozen=True)
class Split:
    action: str
    msgs_s: float
    count: int
    seconds: float
    used: Times
    missed: Missed | None = None
    """On PostgreSQL: the server's processes that ended during the run."""


def _broker() -> psutil.Process | None:
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == "beam.smp":
            return process
    return None


def _times(server: System, broker: psutil.Process | None) -> Times:
    times: Times = {}
    for index, handle in enumerate(server.processes):
        assert handle.process.pid is not None
        for thread in psutil.Process(handle.process.pid).threads():
            key = f"server{index}:{'main' if thread.id == handle.process.pid else 'other'}"
            user, system = times.get(key, (0.0, 0.0))
            times[key] = (user + thread.user_time, system + thread.system_time)
    if broker is not None:
        cpu = broker.cpu_times()
        times["broker"] = (cpu.user, cpu.system)
    return times


@dataclass(frozen=True)
class Snapshot:
    """The PostgreSQL server's processes at one moment, as ``PostgresServer.snapshot`` read them."""

    processes: Processes
    backends: dict[int, str]
    """pid → database of every backend then (``pg_stat_activity``): other databases' are not counted."""
    reaped: float
    """CPU seconds of the processes' ended children (the postmaster's: the kernel adds them as it reaps them)."""


@dataclass(frozen=True)
class Missed:
    """What the ``postgres`` row cannot hold: processes that ended during the run."""

    ours: int
    """Backends of the worker's database alive at the start and gone at the end (0: the row lost none of them)."""
    any_cpu: float
    """CPU seconds of every server process that ended meanwhile, of any database (mostly others' tests)."""


@dataclass(frozen=True)
class PostgresServer:
    """The ``postgres`` party: the server's processes that serve the worker's database, or no database.

    What counts: every process named ``postgres`` (the postmaster, the WAL writer, the checkpointer, the
    background writer, ...: shared by every database, so other clients' writes show there too) except the
    backends of other databases, as ``pg_stat_activity`` lists them at the start and at the end (on a shared
    machine other people's tests run there). Each counted process adds what it used between the two readings;
    a process born in between adds all it used. What is missed: a process that ended before the end, for what
    it used since the start, and one born and ended in between (a backend the pool closed, a parallel or an
    autovacuum worker). ``Missed`` says how many of the database's backends ended, and the ended processes'
    CPU, which the kernel adds to the postmaster's children times without telling databases apart.
    """

    dsn: str
    database: str

    @classmethod
    def of(cls, worker: System) -> PostgresServer:
        assert worker.database is not None and worker.database.pg_name is not None
        assert worker.database.admin_url is not None
        url = make_url(worker.database.admin_url).set(drivername="postgresql")
        return cls(url.render_as_string(hide_password=False), worker.database.pg_name)

    def _backends(self) -> dict[int, str]:
        async def query() -> dict[int, str]:
            conn = await asyncpg.connect(self.dsn)
            try:
                rows = await conn.fetch("SELECT pid, datname FROM pg_stat_activity WHERE datname IS NOT NULL")
            finally:
                await conn.close()
            return {row["pid"]: row["datname"] for row in rows}

        return asyncio.run(query())

    def snapshot(self, *, end: bool = False) -> Snapshot:
        """The processes' CPU; the backends asked before it at the start, after it at the end.

        So the postmaster's fork of the asking backend falls outside the readings (the backend is of another
        database: never counted).
        """
        backends = {} if end else self._backends()
        processes: Processes = {}
        reaped = 0.0
        for process in psutil.process_iter(["name", "create_time"]):
            if process.info["name"] != "postgres":
                continue
            try:
                cpu = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            processes[(process.pid, process.info["create_time"])] = (cpu.user, cpu.system)
            reaped += cpu.children_user + cpu.children_system
        return Snapshot(processes, self._backends() if end else backends, reaped)

    def used(self, before: Snapshot, after: Snapshot) -> tuple[tuple[float, float], Missed]:
        """(user, system) CPU seconds of the counted processes between the two readings, and what was missed."""
        user = system = 0.0
        for key, (end_user, end_system) in after.processes.items():
            database = before.backends.get(key[0]) or after.backends.get(key[0])
            if database is not None and database != self.database:
                continue
            start_user, start_system = before.processes.get(key, (0.0, 0.0))
            user += end_user - start_user
            system += end_system - start_system
        alive = {pid for pid, _ in after.processes}
        ours = sum(1 for pid, db in before.backends.items() if db == self.database and pid not in alive)
        return (user, system), Missed(ours, after.reaped - before.reaped)


def measure(
    server: System,
    loadgen: LoadGenerator,
    action: str,
    workload: Workload,
    in_flight: int,
    count: int,
    postgres: PostgresServer | None = None,
) -> Split:
    broker = _broker()
    work = workload_on(server, action, count, workload)
    expect = not server.kind.startswith("echo")
    loadgen.run(Run(server.names.exchange, warmup(work, in_flight), in_flight, expect_result=expect))
    pg_before = postgres.snapshot() if postgres else None
    before = _times(server, broker)
    result = loadgen.run(Run(server.names.exchange, work, in_flight, expect_result=expect))
    after = _times(server, broker)
    pg_after = postgres.snapshot(end=True) if postgres else None
    if result["errors"]:
        raise RuntimeError(f"{action} on {server.kind} failed: {result['first_error']}")
    used = {key: (after[key][0] - before[key][0], after[key][1] - before[key][1]) for key in after if key in before}
    # The load generator builds the bodies (and writes a registration's files) before its clock starts: only
    # what it spent while the commands ran counts, as its total CPU, not split into user and system.
    used["loadgen"] = (result["loadgen_cpu_s"], 0.0)
    missed = None
    if postgres is not None and pg_before is not None and pg_after is not None:
        used["postgres"], missed = postgres.used(pg_before, pg_after)
    return Split(action if expect else server.kind, result["msgs_s"], count, result["seconds"], used, missed)


def report(split: Split) -> list[str]:
    """The split as text lines (printed as they come, and kept for the summary file)."""
    total = sum(user + system for user, system in split.used.values())
    share = total / split.seconds / (psutil.cpu_count() or 1) * 100
    per = 1e6 / split.count
    lines = [
        "",
        f"{split.action}: {split.msgs_s:,.0f} round trips/s, the parties used {share:.0f}% of the machine",
        f"  {'party':16s} {'µs/trip':>8s} {'user':>7s} {'system':>7s}",
    ]
    for key, (user, system) in sorted(split.used.items()):
        lines.append(f"  {key:16s} {(user + system) * per:8.0f} {user * per:7.0f} {system * per:7.0f}")
    lines.append(f"  {'all':16s} {total * per:8.0f}")
    if split.missed is not None:
        lines.append(
            f"  (not in the rows: {split.missed.ours} backends of this database ended; the postgres processes "
            f"that ended, any database: {split.missed.any_cpu * per:.0f} µs/trip)"
        )
    print("\n".join(lines), flush=True)
    return lines


def as_json(split: Split) -> dict[str, Any]:
    """One split in µs per round trip, the machine share beside it."""
    total = sum(user + system for user, system in split.used.values())
    per = 1e6 / split.count
    return {
        **{k: v for k, v in asdict(split).items() if k not in ("used", "missed")},
        "machine_share_pct": total / split.seconds / (psutil.cpu_count() or 1) * 100,
        "us_per_trip": {key: {"user": u * per, "system": s * per} for key, (u, s) in split.used.items()},
        "all_us_per_trip": total * per,
        **(
            {}
            if split.missed is None
            else {
                "postgres_backends_ended": split.missed.ours,
                "postgres_ended_any_database_us_per_trip": split.missed.any_cpu * per,
            }
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_split", description=__doc__.splitlines()[0])
    # Checked below, not with choices=: Python 3.11's argparse rejects an empty positional list against choices.
    parser.add_argument("actions", nargs="*", help=f"of {', '.join(ACTIONS)}; default: register_artifact save_thread")
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL URL (postgresql+asyncpg://...): the worker runs on a fresh database there and the "
        "server's CPU is the party 'postgres'; default: a fresh SQLite file",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for the JSON and text")
    args = parser.parse_args(argv)
    args.actions = args.actions or ["register_artifact", "save_thread"]
    if unknown := [action for action in args.actions if action not in ACTIONS]:
        parser.error(f"unknown actions {unknown}: choose from {', '.join(ACTIONS)}")
    if args.database_url is not None and not is_postgres(args.database_url):
        parser.error("--database-url must be a PostgreSQL URL (postgresql+asyncpg://...); SQLite needs none")
    label = host_label()
    command = f"python -m bench.cpu_split {' '.join(args.actions)} --in-flight {args.in_flight} --count {args.count}"
    lines = [command + (f" --database-url {args.database_url}" if args.database_url else "")]
    lines.append(f"host: {host_line(label)}")
    print("\n".join(lines), flush=True)
    splits: list[dict[str, Any]] = []
    loadgen = LoadGenerator(args.amqp_url).start()
    try:
        bench = Bench.__new__(Bench)
        bench.loadgen = loadgen
        started: list[System] = []
        database: str | None = None
        try:
            lean = start_lean_echo(args.amqp_url)
            started.append(lean)
            plain = start_echo(args.amqp_url)
            started.append(plain)
            worker = start_worker(args.amqp_url, args.database_url)
            started.append(worker)
            database = worker.backend
            postgres = PostgresServer.of(worker) if database == "postgresql" else None
            base = bench.seed(worker)
            for action in args.actions:  # the echoes again beside each action: the machine's load drifts
                for server, what in ((lean, "echo"), (plain, "echo"), (worker, action)):
                    split = measure(server, loadgen, what, base, args.in_flight, args.count, postgres)
                    lines += report(split)
                    splits.append({"beside": action, **as_json(split)})
        finally:
            for system in started:
                system.close()
    finally:
        loadgen.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"cpu_split-{time.strftime('%Y%m%d-%H%M%S')}"
    meta = {
        "host_label": label,
        "in_flight": args.in_flight,
        "count": args.count,
        "actions": args.actions,
        "database": database,
    }
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "splits": splits}, indent=2) + "\n")
    stem.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print(f"\nwrote {stem}.json and {stem}.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
