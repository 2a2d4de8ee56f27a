"""``python -m bench.profile ACTION``: where the worker's time goes under load, by py-spy.

Starts the worker in its own process, seeds it, attaches ``py-spy record`` to it while the load
generator keeps N commands of ACTION in flight, and leaves a flame graph (SVG) or speedscope file in
``bench/results/``. py-spy samples the running process from outside, so the figures are not skewed.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.commands import READ_TRACE, Workload
from bench.loadgen import LoadGenerator, Run
from bench.systems import start_worker
from bench.throughput import ACTIONS, DEFAULT_AMQP_URL, Bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=(*ACTIONS, "mix"))
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--count", type=int, default=6000)
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--format", choices=("flamegraph", "speedscope", "raw"), default="raw")
    parser.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL (Python CPU)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if shutil.which("py-spy") is None:
        parser.error("py-spy is not installed (pip install py-spy)")
    args.out.mkdir(parents=True, exist_ok=True)
    loadgen = LoadGenerator(args.amqp_url).start()
    worker = start_worker(args.amqp_url, args.database_url)
    try:
        bench = Bench.__new__(Bench)
        bench.loadgen = loadgen
        base = bench.seed(worker)
        workload = Workload(
            args.action,
            count=args.count,
            artifact_ids=base.artifact_ids,
            temp_dir=worker.temp_dir,
            trace_id=READ_TRACE,
        )
        suffix = {"flamegraph": "svg", "speedscope": "json", "raw": "txt"}[args.format]
        out = args.out / f"profile-{args.action}-{time.strftime('%Y%m%d-%H%M%S')}.{suffix}"
        pid = worker.processes[0].process.pid
        command = ["py-spy", "record", "-p", str(pid), "-o", str(out), "-f", args.format, "-r", "250", "--nonblocking"]
        spy = subprocess.Popen(command + (["--gil"] if args.gil else []))
        time.sleep(1)
        result = loadgen.run(Run(worker.names.exchange, workload, args.in_flight))
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
        print(
            f"{args.action} at {args.in_flight} in flight: {result['msgs_s']:.0f} msg/s, p50 {result['p50_ms']:.1f} ms"
        )
        print(f"profile: {out}")
    finally:
        worker.close()
        loadgen.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
