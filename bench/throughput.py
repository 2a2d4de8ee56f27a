"""``python -m bench.throughput``: the worker against the broker's own limit and the naive peer, in one run.

Measures (1) the lean aio-pika echo (the limit: the worker's own transport with no command behind it) and
the plain echo (aio-pika's default path, a reference row), (2) the naive FastStream + ORM peer, as written
and, for ``list_artifacts``, with the composite index a careful developer adds, and (3) our worker, on the
same queue settings with the same load generator at 1, 10 and 100 commands in flight; then 100,000
commands through the worker (RSS after the first 10,000 and at the end), ``list_artifacts`` over tables
of 1,000 to 1,000,000 artifacts, and the client library's own overhead. Prints a table with each figure
as a ratio to the lean echo (a throughput above it is flagged: the reference is wrong), writes JSON and a
PNG chart to ``bench/results/``.

``--databases sqlite postgresql`` measures the naive peer and the worker on both databases in the same run,
all systems taking turns round by round with one shared echo; the PostgreSQL systems' kinds end in ``-pg``
(``worker-pg``) and every row has a ``database`` field. The soak runs on each database asked
(``--soak-databases`` to choose), the listing over a growing table on each database of the run.

``list_artifacts`` lists a trace of fixed size (``Plan.list_trace``), seeded before the matrix; the
matrix's registrations go to another trace, so the listed trace does not grow while it is measured.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import chart, report
from bench.commands import MIX, READ_TRACE, WRITE_TRACE, Workload
from bench.common import DATABASES, base_kind
from bench.loadgen import LoadGenerator, Run
from bench.systems import (
    DEFAULT_POSTGRES_URL,
    System,
    is_postgres,
    start_echo,
    start_lean_echo,
    start_naive,
    start_worker,
)

ACTIONS = ("get_artifact", "register_artifact", "list_artifacts", "save_thread")
SEED_ARTIFACTS = 200
DEFAULT_AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")


@dataclass(frozen=True)
class Plan:
    """How much to send: counts per in-flight level, the soak length, the table sizes to list over."""

    in_flight: tuple[int, ...] = (1, 10, 100)
    counts: dict[int, int] = field(default_factory=lambda: {1: 1500, 10: 4000, 100: 8000})
    """Commands per measurement, split over ``rounds``."""
    rounds: int = 3
    """Every system is measured once per round, in turn, so load from elsewhere hits all of them alike."""
    soak: int = 100_000
    soak_checkpoint: int = 10_000
    list_sizes: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
    list_count: int = 1000
    list_trace: int = 1000
    """Artifacts in the trace the matrix lists (and reads from), registered before the matrix starts."""
    side_by_side: int = 1000
    side_by_side_in_flight: int = 50
    client_count: int = 2000

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            counts={1: 300, 10: 800, 100: 2000},
            rounds=2,
            soak=10_000,
            soak_checkpoint=1_000,
            list_sizes=(1_000, 10_000, 100_000),
            list_count=300,
            client_count=500,
        )

    def count(self, in_flight: int) -> int:
        return self.counts.get(in_flight, max(20 * in_flight, 1000))


def warmup(workload: Workload, in_flight: int) -> Workload:
    """A short run of the same commands before the measured one: connections, statements and caches warm up."""
    return replace(workload, count=2 * in_flight + 50)


def workload_on(system: System, action: str, count: int, base: Workload) -> Workload:
    """``count`` commands of ``action`` for ``system``: the base's artifacts, trace and threads, its temp folder.

    Registrations go to their own trace: the trace the reads and lists use keeps its seeded size.
    """
    return Workload(
        action,
        count=count,
        artifact_ids=base.artifact_ids,
        temp_dir=system.temp_dir,
        trace_id=WRITE_TRACE if action == "register_artifact" else base.trace_id,
        thread_prefix=base.thread_prefix,
    )


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.plan = Plan.quick() if args.quick else Plan()
        if args.in_flight:
            self.plan = Plan(**{**self.plan.__dict__, "in_flight": tuple(args.in_flight)})
        if args.rounds:  # more rounds of the same size: the medians hold better on a noisy machine
            counts = {k: v * args.rounds // self.plan.rounds for k, v in self.plan.counts.items()}
            self.plan = Plan(**{**self.plan.__dict__, "rounds": args.rounds, "counts": counts})
        if args.soak_commands:  # e.g. a --quick matrix with the full 100,000-command soak; RSS marked at a tenth
            soak = {"soak": args.soak_commands, "soak_checkpoint": max(1, args.soak_commands // 10)}
            self.plan = Plan(**{**self.plan.__dict__, **soak})
        self.loadgen = LoadGenerator(args.amqp_url)
        self.rows: list[dict[str, Any]] = []

    # -- one measurement ----------------------------------------------------------------------------

    def measure(
        self, system: System, action: str, in_flight: int, base: Workload, count: int, *, say: bool = True
    ) -> dict[str, Any]:
        workload = workload_on(system, action, count, base)
        expect = not system.kind.startswith("echo")
        self.loadgen.run(Run(system.names.exchange, warmup(workload, in_flight), in_flight, expect_result=expect))
        cpu_before = system.cpu_seconds()
        result = self.loadgen.run(Run(system.names.exchange, workload, in_flight, expect_result=expect))
        cpu_us = (system.cpu_seconds() - cpu_before) / count * 1e6
        result.update(
            system=system.kind,
            database=system.backend,
            action=action,
            in_flight=in_flight,
            rss_bytes=system.rss_bytes(),
            cpu_us_per_msg=cpu_us,
        )
        if say:
            _say_row(result)
        return result

    def seed(self, system: System, count: int = SEED_ARTIFACTS) -> Workload:
        """``count`` artifacts in the read trace for the reads to find, registered through the system itself."""
        ids = tuple(f"art_{uuid.uuid4()}" for _ in range(count))
        workload = Workload(
            "register_artifact", count=len(ids), new_ids=ids, temp_dir=system.temp_dir, trace_id=READ_TRACE
        )
        expect = not system.kind.startswith("echo")
        # The naive peer's SQLite sessions lock each other out under concurrent writes ("database is locked"
        # after its 5 s timeout on a busy machine): it is seeded one command at a time, untimed.
        in_flight = 1 if base_kind(system.kind).startswith("naive") else 20
        result = self.loadgen.run(Run(system.names.exchange, workload, in_flight, expect_result=expect))
        if result["errors"]:
            raise RuntimeError(f"seeding {system.kind} failed: {result['first_error']}")
        return Workload("get_artifact", count=0, artifact_ids=ids, trace_id=READ_TRACE)

    # -- the parts of the run ----------------------------------------------------------------------------

    def matrix(self, systems: list[tuple[System, tuple[str, ...], Workload]]) -> None:
        """Every system's actions at every in-flight level, the systems taking turns round by round.

        Each round starts one system further along, so none is always measured right after the same other.
        """
        plan = self.plan
        for in_flight in plan.in_flight:
            per_round = max(in_flight * 10, plan.count(in_flight) // plan.rounds)
            rounds: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for index in range(plan.rounds):
                shift = index % len(systems)
                for system, actions, base in systems[shift:] + systems[:shift]:
                    for action in actions:
                        result = self.measure(system, action, in_flight, base, per_round, say=False)
                        rounds.setdefault((system.kind, action), []).append(result)
            for system, actions, _ in systems:  # the rows in the systems' order, whatever order they ran in
                for action in actions:
                    row = _combine(rounds[(system.kind, action)])
                    self.rows.append(row)
                    _say_row(row)

    def _echo_base(self) -> Workload:
        return Workload("echo", count=0, artifact_ids=tuple(f"art_{uuid.uuid4()}" for _ in range(SEED_ARTIFACTS)))

    def side_by_side(self, echo_system: System, worker: System, worker_base: Workload) -> dict[str, Any]:
        """For issue 2's note: 1,000 get_artifact calls at 50 in flight, beside the lean echo (taking turns)."""
        n, k = self.plan.side_by_side, self.plan.side_by_side_in_flight
        echo_runs, worker_runs = [], []
        for _ in range(self.plan.rounds):
            echo_runs.append(self.measure(echo_system, "echo", k, self._echo_base(), n, say=False))
            worker_runs.append(self.measure(worker, "get_artifact", k, worker_base, n, say=False))
        echo_result, worker_result = _combine(echo_runs), _combine(worker_runs)
        for row in (echo_result, worker_result):
            row["seconds"] = n / row["msgs_s"]
            _say_row(row)
        return {"calls": n, "in_flight": k, "echo": echo_result, "worker": worker_result}

    def soak(self, worker: System, base: Workload) -> dict[str, Any]:
        plan = self.plan
        workload = Workload(
            "mix", count=plan.soak, artifact_ids=base.artifact_ids, temp_dir=worker.temp_dir, trace_id=READ_TRACE
        )
        marks: dict[int, int] = {}
        started_rss = worker.rss_bytes()
        _say(f"soak on {worker.backend}: {plan.soak} commands ({', '.join(MIX)} in turn) at 100 in flight")
        every = plan.soak // 20
        checkpoints = tuple(sorted({plan.soak_checkpoint, *range(every, plan.soak, every)}))
        result = self.loadgen.run(
            Run(worker.names.exchange, workload, 100, checkpoints=checkpoints),
            on_checkpoint=lambda n: marks.setdefault(n, worker.rss_bytes()),
        )
        end_rss = worker.rss_bytes()
        early = marks.get(plan.soak_checkpoint, started_rss)
        growth = (end_rss - early) / early * 100
        _say(
            f"  RSS at start {started_rss / 2**20:.0f} MiB, after {plan.soak_checkpoint} {early / 2**20:.1f} MiB, "
            f"after {plan.soak} {end_rss / 2**20:.1f} MiB ({growth:+.1f}%), {result['msgs_s']:.0f} msg/s, "
            f"{result['errors']} errors"
        )
        return {
            "database": worker.backend,
            "commands": plan.soak,
            "checkpoint": plan.soak_checkpoint,
            "rss_start_bytes": started_rss,
            "rss_checkpoint_bytes": early,
            "rss_end_bytes": end_rss,
            "growth_pct": growth,
            "rss_curve": [[0, started_rss], *([n, marks[n]] for n in sorted(marks)), [plan.soak, end_rss]],
            **{k: result[k] for k in ("msgs_s", "p50_ms", "p99_ms", "errors", "first_error", "seconds")},
        }

    # -- everything ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        args = self.args
        meta = report.meta(args, self.plan)
        _say(f"load before: {meta['load_before']}  (2 cores shared with the broker and the load generator)")
        self.loadgen.start()
        results: dict[str, Any] = {"meta": meta}
        try:
            self._main_matrix(results)
            if "soak" in args.parts:  # a fresh worker per database: its RSS curve starts from a cold process
                results["soak"] = []
                for database in args.soak_databases:
                    soak_worker = start_worker(args.amqp_url, args.urls[database], 1)
                    try:
                        results["soak"].append(self.soak(soak_worker, self.seed(soak_worker)))
                    finally:
                        soak_worker.close()
            if "list" in args.parts:
                from bench import scaling

                sizes, count = self.plan.list_sizes, self.plan.list_count
                results["list_scaling"] = []  # one growing table per database of the run
                for database in args.databases:
                    _say(f"list_artifacts with filters over a growing table ({database})")
                    scaled = scaling.run(self.loadgen, args.amqp_url, sizes, count, args.urls[database])
                    results["list_scaling"].append(scaled)
        finally:
            self.loadgen.stop()
        meta["load_after"] = report.load()
        meta["finished"] = datetime.now(UTC).isoformat()
        results["targets"] = report.targets(results)
        results["reference_wrong"] = report.wrong_reference(results)
        results["list_factor"] = report.list_factor(results)
        return results

    def _main_matrix(self, results: dict[str, Any]) -> None:
        """(1), (2) and (3) side by side on fresh queues; the issue-2 comparison and the client's cost after.

        (2) and (3) run once per database asked, all in one matrix with the one echo; the side-by-side and the
        client's cost use the worker of the first database.
        """
        args = self.args
        started: list[System] = []
        try:
            lean_echo = start_lean_echo(args.amqp_url)
            started.append(lean_echo)
            systems: list[tuple[System, tuple[str, ...], Workload]] = [(lean_echo, ("echo",), self._echo_base())]
            plain_echo = start_echo(args.amqp_url)
            started.append(plain_echo)
            systems.append((plain_echo, ("echo",), self._echo_base()))
            if "echo-uvloop" in args.parts:  # the plain echo on the worker's loop: what uvloop alone is worth
                uvloop_echo = start_echo(args.amqp_url, loop="uvloop")
                started.append(uvloop_echo)
                systems.append((uvloop_echo, ("echo",), self._echo_base()))
            size = self.plan.list_trace
            _say(f"seeding the read trace with {size} artifacts in every system with a database")
            workers: list[tuple[System, Workload]] = []
            for database in args.databases:
                url = args.urls[database]
                if "naive" in args.parts:
                    naive_system = start_naive(args.amqp_url, url)
                    started.append(naive_system)
                    systems.append((naive_system, tuple(args.actions), self.seed(naive_system, size)))
                    if "list_artifacts" in args.actions:  # the listing with the index a careful developer adds
                        indexed = start_naive(args.amqp_url, url, indexed=True)
                        started.append(indexed)
                        systems.append((indexed, ("list_artifacts",), self.seed(indexed, size)))
                ours = start_worker(args.amqp_url, url, args.workers)
                started.append(ours)
                workers.append((ours, self.seed(ours, size)))
                systems.append((ours, tuple(args.actions), workers[-1][1]))
            worker, base = workers[0]
            results["list_trace"] = {"artifacts": size, "trace_id": READ_TRACE, "registrations_to": WRITE_TRACE}
            plural = "es" if args.workers > 1 else ""
            _say(
                f"(1) lean aio-pika echo (the limit) and plain echo (reference), (2) naive FastStream + ORM peer "
                f"(and with a composite index, for list_artifacts), (3) our worker ({args.workers} process{plural}); "
                f"{self.plan.rounds} rounds each, taking turns; list_artifacts lists a trace of {size} artifacts; "
                f"on {' and '.join(args.databases)}"
            )
            self.matrix(systems)
            results["matrix"] = self.rows
            if "side" in args.parts:
                _say(f"issue 2: 1,000 get_artifact at 50 in flight beside the lean echo ({worker.kind})")
                results["side_by_side"] = {"database": worker.backend, **self.side_by_side(lean_echo, worker, base)}
            if "client" in args.parts:
                _say(f"client library overhead: StorageClient vs raw publishing, against {worker.kind}")
                results["client_overhead"] = self._client(worker, base)
        finally:
            for system in started:
                system.close()

    def _client(self, worker: System, base: Workload) -> dict[str, Any]:
        try:
            from bench import client
        except ImportError as exc:  # the client library is part of this repository; say so if it is absent
            return {"pending": f"buffer.StorageClient not importable: {exc}"}
        return client.run(worker, base.artifact_ids, self.plan.client_count)


def _say(text: str) -> None:
    print(text, flush=True)


def _say_row(result: dict[str, Any]) -> None:
    _say(
        f"  {result['system']:16} {result['action']:17} {result['in_flight']:>3} in flight: "
        f"{result['msgs_s']:8.0f} msg/s  p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:7.2f} ms  "
        f"rss {result['rss_bytes'] / 2**20:5.0f} MiB  cpu {result['cpu_us_per_msg']:5.0f} us/msg"
        + (f"  ERRORS {result['errors']}: {result['first_error']}" if result["errors"] else "")
    )


def _combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from a system's rounds: medians of the rates and percentiles, the last RSS, all errors."""
    row = dict(results[-1])
    for key in ("msgs_s", "p50_ms", "p99_ms", "mean_ms", "cpu_us_per_msg"):
        row[key] = statistics.median(r[key] for r in results)
    row["rounds"] = [{k: r[k] for k in ("msgs_s", "p50_ms", "p99_ms", "cpu_us_per_msg")} for r in results]
    row["count"] = sum(r["count"] for r in results)
    row["errors"] = sum(r["errors"] for r in results)
    row["first_error"] = next((r["first_error"] for r in results if r["first_error"]), None)
    return row


PARTS = ("echo-uvloop", "naive", "side", "soak", "list", "client")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL URL (postgresql+asyncpg://...): each system gets a fresh database there; alone, the run "
        "is PostgreSQL only (as --databases postgresql); default: a fresh SQLite file per system",
    )
    parser.add_argument(
        "--databases",
        nargs="+",
        choices=DATABASES,
        help="the databases the naive peer and the worker run on, all in one matrix with one echo (default: "
        "postgresql with --database-url, else sqlite); PostgreSQL at --database-url, else " + DEFAULT_POSTGRES_URL,
    )
    parser.add_argument(
        "--soak-databases",
        nargs="+",
        choices=DATABASES,
        help="the databases the soak (RSS over many commands) runs on (default: every database of --databases)",
    )
    parser.add_argument("--soak-commands", type=int, help="commands in the soak (default 100,000, 10,000 with --quick)")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes on one queue (PostgreSQL only: --databases postgresql)"
    )
    parser.add_argument("--quick", action="store_true", help="a short run: fewer commands, a 10,000-command soak")
    parser.add_argument("--in-flight", type=int, nargs="+", help="in-flight levels (default 1 10 100)")
    parser.add_argument(
        "--rounds", type=int, help="rounds per measurement (default 3, 2 with --quick), each as large as the plan's"
    )
    parser.add_argument("--actions", nargs="+", choices=ACTIONS, default=list(ACTIONS), help="actions to measure")
    parser.add_argument(
        "--parts", nargs="*", choices=PARTS, default=list(PARTS), help="which parts beside echo and worker to run"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for the JSON and PNG")
    args = parser.parse_args(argv)
    if args.database_url is not None and not is_postgres(args.database_url):
        parser.error("--database-url must be a PostgreSQL URL (postgresql+asyncpg://...); SQLite needs none")
    if args.databases is None:
        args.databases = ["postgresql" if args.database_url else "sqlite"]
    args.databases = list(dict.fromkeys(args.databases))  # each once, in the order asked
    args.soak_databases = list(dict.fromkeys(args.soak_databases or args.databases))
    args.urls = {"sqlite": None, "postgresql": args.database_url or DEFAULT_POSTGRES_URL}
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.soak_commands is not None and args.soak_commands < 20:
        parser.error("--soak-commands must be at least 20")
    if args.workers > 1 and "sqlite" in args.databases:
        parser.error("--workers > 1 needs PostgreSQL alone (--database-url ... or --databases postgresql)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.strftime("%Y%m%d-%H%M%S")
    results = Bench(args).run()
    summary = report.table(results)
    print()
    print(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = report.write_json(results, args.out / f"throughput-{started}.json")
    png_path = chart.chart(results, args.out / f"throughput-{started}.png")
    command = "python -m bench.throughput " + " ".join(argv if argv is not None else sys.argv[1:])
    (args.out / f"throughput-{started}.txt").write_text(f"{command}\n\n{summary}\n")
    print(f"\nwrote {json_path}, {png_path} and the table as .txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
