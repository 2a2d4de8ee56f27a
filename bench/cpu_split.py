"""``python -m bench.cpu_split``: where the machine's cores go while the load runs.

On a 2-core machine the broker, the load generator and the server share the CPU, so a server's throughput
is set by what everything costs per round trip, not by the server alone. This runs the lean echo (the limit),
the plain echo (a reference) and the worker with the same load and prints, per round trip, the CPU of each
party (the server split by thread, user and system time), and how much of the machine they used together:
near 100% means the cores are saturated and every microsecond the server saves goes to the broker and the
load generator. The figures, with the host's label, are also written as JSON and text to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.commands import Workload
from bench.common import host_label, host_line
from bench.loadgen import LoadGenerator, Run
from bench.systems import System, start_echo, start_lean_echo, start_worker
from bench.throughput import ACTIONS, DEFAULT_AMQP_URL, Bench, warmup, workload_on

Times = dict[str, tuple[float, float]]
"""Party (``server<n>:main`` or ``:other`` threads, ``loadgen``, ``broker``) → (user, system) CPU seconds so far."""


@dataclass(frozen=True)
class Split:
    action: str
    msgs_s: float
    count: int
    seconds: float
    used: Times


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


def measure(
    server: System, loadgen: LoadGenerator, action: str, workload: Workload, in_flight: int, count: int
) -> Split:
    broker = _broker()
    work = workload_on(server, action, count, workload)
    expect = not server.kind.startswith("echo")
    loadgen.run(Run(server.names.exchange, warmup(work, in_flight), in_flight, expect_result=expect))
    before = _times(server, broker)
    result = loadgen.run(Run(server.names.exchange, work, in_flight, expect_result=expect))
    after = _times(server, broker)
    if result["errors"]:
        raise RuntimeError(f"{action} on {server.kind} failed: {result['first_error']}")
    used = {key: (after[key][0] - before[key][0], after[key][1] - before[key][1]) for key in after if key in before}
    # The load generator builds the bodies (and writes a registration's files) before its clock starts: only
    # what it spent while the commands ran counts, as its total CPU, not split into user and system.
    used["loadgen"] = (result["loadgen_cpu_s"], 0.0)
    return Split(action if expect else server.kind, result["msgs_s"], count, result["seconds"], used)


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
    print("\n".join(lines), flush=True)
    return lines


def as_json(split: Split) -> dict[str, Any]:
    """One split in µs per round trip, the machine share beside it."""
    total = sum(user + system for user, system in split.used.values())
    per = 1e6 / split.count
    return {
        **{k: v for k, v in asdict(split).items() if k != "used"},
        "machine_share_pct": total / split.seconds / (psutil.cpu_count() or 1) * 100,
        "us_per_trip": {key: {"user": u * per, "system": s * per} for key, (u, s) in split.used.items()},
        "all_us_per_trip": total * per,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_split", description=__doc__.splitlines()[0])
    parser.add_argument("actions", nargs="*", choices=ACTIONS, default=["register_artifact", "save_thread"])
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for the JSON and text")
    args = parser.parse_args(argv)
    label = host_label()
    lines = [f"python -m bench.cpu_split {' '.join(args.actions)} --in-flight {args.in_flight} --count {args.count}"]
    lines.append(f"host: {host_line(label)}")
    print("\n".join(lines), flush=True)
    splits: list[dict[str, Any]] = []
    loadgen = LoadGenerator(args.amqp_url).start()
    try:
        bench = Bench.__new__(Bench)
        bench.loadgen = loadgen
        started: list[System] = []
        try:
            lean = start_lean_echo(args.amqp_url)
            started.append(lean)
            plain = start_echo(args.amqp_url)
            started.append(plain)
            worker = start_worker(args.amqp_url, None)
            started.append(worker)
            base = bench.seed(worker)
            for action in args.actions:  # the echoes again beside each action: the machine's load drifts
                for server, what in ((lean, "echo"), (plain, "echo"), (worker, action)):
                    split = measure(server, loadgen, what, base, args.in_flight, args.count)
                    lines += report(split)
                    splits.append({"beside": action, **as_json(split)})
        finally:
            for system in started:
                system.close()
    finally:
        loadgen.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"cpu_split-{time.strftime('%Y%m%d-%H%M%S')}"
    meta = {"host_label": label, "in_flight": args.in_flight, "count": args.count, "actions": args.actions}
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "splits": splits}, indent=2) + "\n")
    stem.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print(f"\nwrote {stem}.json and {stem}.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
