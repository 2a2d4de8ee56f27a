"""``python -m bench.profile ACTION``: where the worker's time goes under load, by py-spy (or its syscalls, by strace).

Starts the worker in its own process, seeds it, attaches ``py-spy record`` to it while the load
generator keeps N commands of ACTION in flight, and leaves a flame graph (SVG), speedscope file or raw
stacks in ``bench/results/``. py-spy samples the running process from outside, so the figures are not
skewed. With the raw format (the default) it also writes a summary: the share of samples each function
and each package takes (inclusive and self), with the host's label, as text and JSON.

``--tool strace`` counts the worker's system calls instead (``strace -f -c``, every thread), per command:
strace slows the worker many times over, so only the counts mean anything, not its throughput.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.commands import READ_TRACE, Workload
from bench.common import host_label, host_line
from bench.loadgen import LoadGenerator, Run
from bench.systems import start_worker
from bench.throughput import ACTIONS, DEFAULT_AMQP_URL, Bench

TOP = 30


def _tool(name: str) -> str | None:
    """The tool on PATH, or beside this interpreter (a virtualenv's ``bin/`` need not be on PATH)."""
    found = shutil.which(name)
    if found is None and (beside := Path(sys.executable).parent / name).exists():
        found = str(beside)
    return found


REPOSITORY = Path(__file__).resolve().parents[1]
STDLIB = Path(sysconfig.get_paths()["stdlib"])


def _frame_key(frame: str) -> tuple[str, str]:
    """``func (/full/path.py:line)`` → (``func (path from its root)``, package): one function counts once.

    The package is the top folder under site-packages or the standard library (``asyncio``, ``aiormq``), or
    the subpackage of this repository (``service.core``, ``service.store``).
    """
    name, _, where = frame.partition(" (")
    full = where.rstrip(")").rsplit(":", 1)[0]
    path = Path(full)
    parts = path.parts
    if "site-packages" in parts:
        relative = Path(*parts[parts.index("site-packages") + 1 :])
    elif path.is_relative_to(REPOSITORY):
        relative = path.relative_to(REPOSITORY)
    elif path.is_relative_to(STDLIB):
        relative = path.relative_to(STDLIB)
    else:
        relative = path
    top = relative.parts
    if len(top) > 2 and top[0] == "service":
        package = f"service.{top[1]}"
    elif top:
        package = top[0].removesuffix(".py")
    else:
        package = "?"
    return f"{name} ({relative.as_posix()})", package


def summarise(raw: Path) -> dict[str, Any]:
    """Shares of py-spy's raw stacks (``frame;frame;... count`` per line): per function and per package."""
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    packages_inclusive: Counter[str] = Counter()
    packages_own: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        keys = [_frame_key(frame) for frame in stack.split(";") if " (" in frame]
        if not keys:
            continue
        total += count
        for function in {key for key, _ in keys}:
            inclusive[function] += count
        for package in {package for _, package in keys}:
            packages_inclusive[package] += count
        own[keys[-1][0]] += count
        packages_own[keys[-1][1]] += count

    def shares(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"name": k, "pct": 100 * v / total} for k, v in counter.most_common(TOP)] if total else []

    return {
        "samples": total,
        "functions_inclusive": shares(inclusive),
        "functions_self": shares(own),
        "packages_inclusive": shares(packages_inclusive),
        "packages_self": shares(packages_own),
    }


def _summary_text(header: list[str], summary: dict[str, Any]) -> str:
    lines = [*header, f"samples: {summary['samples']}"]
    for key, title in (
        ("packages_self", "self time by package (% of samples)"),
        ("packages_inclusive", "inclusive by package"),
        ("functions_self", "self time by function"),
        ("functions_inclusive", "inclusive by function"),
    ):
        lines += ["", title + ":"]
        lines += [f"  {row['pct']:5.1f}%  {row['name']}" for row in summary[key]]
    return "\n".join(lines) + "\n"


def _strace_counts(path: Path, commands: int) -> list[dict[str, Any]]:
    """``strace -c``'s table as calls per command, largest first."""
    rows = []
    for line in path.read_text().splitlines():
        cells = line.split()
        if len(cells) < 5 or not cells[3].isdigit() or cells[-1] == "total":
            continue
        calls, name = int(cells[3]), cells[-1]
        rows.append({"syscall": name, "calls": calls, "per_command": calls / commands})
    return sorted(rows, key=lambda r: -r["calls"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=(*ACTIONS, "mix"))
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--count", type=int, default=6000)
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--tool", choices=("py-spy", "strace"), default="py-spy")
    parser.add_argument("--format", choices=("flamegraph", "speedscope", "raw"), default="raw")
    parser.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL (Python CPU)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    tool = _tool(args.tool)
    if tool is None:
        parser.error(f"{args.tool} is not installed" + (" (pip install py-spy)" if args.tool == "py-spy" else ""))
    args.out.mkdir(parents=True, exist_ok=True)
    label = host_label()
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
        kind = "strace" if args.tool == "strace" else "profile"
        stem = args.out / f"{kind}-{args.action}-{time.strftime('%Y%m%d-%H%M%S')}"
        pid = worker.processes[0].process.pid
        if args.tool == "strace":
            out = stem.with_suffix(".strace")
            command = [tool, "-f", "-c", "-o", str(out), "-p", str(pid)]
        else:
            out = stem.with_suffix("." + {"flamegraph": "svg", "speedscope": "json", "raw": "txt"}[args.format])
            command = [tool, "record", "-p", str(pid), "-o", str(out), "-f", args.format, "-r", "250", "--nonblocking"]
            command += ["--gil"] if args.gil else []
            command += ["--nolineno", "--full-filenames"] if args.format == "raw" else []
        spy = subprocess.Popen(command)
        time.sleep(1)
        result = loadgen.run(Run(worker.names.exchange, workload, args.in_flight))
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
        said = (
            f"{args.action} at {args.in_flight} in flight: {result['msgs_s']:.0f} msg/s, p50 {result['p50_ms']:.1f} ms"
            + (f", {result['errors']} errors" if result["errors"] else "")
        )
        print(said)
        print(f"{args.tool}: {out}")
        flags = f"{' --gil' if args.gil else ''}{' --tool strace' if args.tool == 'strace' else ''}"
        header = [
            f"python -m bench.profile {args.action} --in-flight {args.in_flight} --count {args.count}{flags}",
            f"host: {host_line(label)}",
            said + (" (under strace: slowed, only the counts count)" if args.tool == "strace" else ""),
        ]
        meta = {"host_label": label, "action": args.action, "in_flight": args.in_flight, "count": args.count}
        meta |= {"gil": args.gil, "tool": args.tool, "msgs_s": result["msgs_s"], "p50_ms": result["p50_ms"]}
        if args.tool == "strace":
            counts = _strace_counts(out, args.count)
            total = sum(row["per_command"] for row in counts)
            text = [*header, f"system calls per command (every thread of the worker): {total:.1f}", ""]
            text += [f"  {row['per_command']:7.2f}  {row['syscall']}" for row in counts]
            summary_json: dict[str, Any] = {"meta": meta, "per_command_total": total, "syscalls": counts}
            summary_text = "\n".join(text) + "\n"
        elif args.format == "raw":
            summary = summarise(out)
            summary_json = {"meta": meta, **summary}
            summary_text = _summary_text(header, summary)
        else:
            return 0
        stem.with_suffix(".summary.txt").write_text(summary_text)
        stem.with_suffix(".summary.json").write_text(json.dumps(summary_json, indent=2) + "\n")
        print(summary_text)
        print(f"summary: {stem}.summary.txt and .json")
    finally:
        worker.close()
        loadgen.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
