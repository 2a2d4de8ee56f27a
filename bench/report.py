"""The run's figures as a table (each a ratio to the echo), the targets of issue 5, JSON and a PNG chart."""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MiB = 2**20
TARGET_RATIOS = {"get_artifact": 0.85, "register_artifact": 0.75, "save_thread": 0.80}
NAIVE_FACTOR = 5.0
P50_MARGIN_MS = 1.5
RSS_GROWTH_PCT = 10.0
LIST_FLAT_FACTOR = 1.5


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def meta(args: argparse.Namespace, plan: object) -> dict[str, Any]:
    return {
        "started": datetime.now(UTC).isoformat(),
        "host": platform.node(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_before": load(),
        "database": "postgresql" if args.database_url else "sqlite",
        "workers": args.workers,
        "quick": args.quick,
        "plan": {k: v for k, v in vars(plan).items()},
    }


def _echo(rows: list[dict[str, Any]], in_flight: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["system"] == "echo" and r["in_flight"] == in_flight), None)


def _find(rows: list[dict[str, Any]], system: str, action: str, in_flight: int) -> dict[str, Any] | None:
    return next(
        (r for r in rows if r["system"] == system and r["action"] == action and r["in_flight"] == in_flight), None
    )


def table(results: dict[str, Any]) -> str:
    rows = results.get("matrix", [])
    head = (
        f"{'system':7} {'action':18} {'inflight':>8}  {'msgs/s':>8} {'(x1)':>6}  {'p50 ms':>7} {'(x1)':>6}  "
        f"{'p99 ms':>7} {'(x1)':>6}  {'RSS MiB':>7} {'(x1)':>6}"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        echo = _echo(rows, row["in_flight"]) or row
        lines.append(
            f"{row['system']:7} {row['action']:18} {row['in_flight']:>8}  "
            f"{row['msgs_s']:8.0f} {row['msgs_s'] / echo['msgs_s']:6.2f}  "
            f"{row['p50_ms']:7.2f} {row['p50_ms'] / echo['p50_ms']:6.2f}  "
            f"{row['p99_ms']:7.2f} {row['p99_ms'] / echo['p99_ms']:6.2f}  "
            f"{row['rss_bytes'] / MiB:7.0f} {row['rss_bytes'] / echo['rss_bytes']:6.2f}"
            + (f"  ({row['errors']} errors)" if row.get("errors") else "")
        )
    if side := results.get("side_by_side"):
        e, w = side["echo"], side["worker"]
        lines += [
            "",
            f"issue 2: {side['calls']} get_artifact at {side['in_flight']} in flight: worker {w['seconds']:.2f} s "
            f"({w['msgs_s']:.0f}/s, p50 {w['p50_ms']:.1f} ms) vs echo {e['seconds']:.2f} s "
            f"({e['msgs_s']:.0f}/s, p50 {e['p50_ms']:.1f} ms): {w['msgs_s'] / e['msgs_s']:.2f} of the echo",
        ]
    if soak := results.get("soak"):
        lines += [
            "",
            f"soak: {soak['commands']} commands at {soak['msgs_s']:.0f}/s; RSS {soak['rss_start_bytes'] / MiB:.0f} MiB "
            f"at start, {soak['rss_checkpoint_bytes'] / MiB:.1f} MiB after {soak['checkpoint']}, "
            f"{soak['rss_end_bytes'] / MiB:.1f} MiB at the end ({soak['growth_pct']:+.1f}%), {soak['errors']} errors",
        ]
    if scaling := results.get("list_scaling"):
        lines += ["", "list_artifacts (limit 20) with filters over a growing table, p50 over the bus / of the query:"]
        for point in scaling["points"]:
            cells = "  ".join(f"{q} {v['p50_ms']:.2f}/{v['db_p50_ms']:.2f} ms" for q, v in point["queries"].items())
            lines.append(f"  {point['artifacts']:>9} artifacts: {cells}")
    if client := results.get("client_overhead"):
        lines += ["", "client library overhead (the same calls against the worker; agent CPU per call):"]
        if "pending" in client:
            lines.append(f"  pending: {client['pending']}")
        else:
            for row in client["rows"]:
                lines.append(
                    f"  {row['path']:22} {row['action']:13} {row['in_flight']:>3} in flight: "
                    f"{row['msgs_s']:7.0f} msg/s p50 {row['p50_ms']:6.2f} ms  "
                    f"agent cpu {row['cpu_us_per_call']:5.0f} us/call"
                )
    if targets := results.get("targets"):
        lines += ["", "targets:"]
        for t in targets:
            lines.append(f"  [{'met ' if t['met'] else 'MISS'}] {t['name']}: {t['value']} (target {t['target']})")
    meta = results.get("meta", {})
    lines += ["", f"load average before {meta.get('load_before')}, after {meta.get('load_after')}"]
    return "\n".join(lines)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = results.get("matrix", [])
    found: list[dict[str, Any]] = []
    top = max((r["in_flight"] for r in rows), default=100)
    echo_top = _echo(rows, top)
    for action, ratio in TARGET_RATIOS.items():
        ours = _find(rows, "worker", action, top)
        if ours is None or echo_top is None:
            found.append({"name": f"{action} at {top} in flight", "value": "pending", "target": ratio, "met": False})
            continue
        value = ours["msgs_s"] / echo_top["msgs_s"]
        found.append(
            {
                "name": f"{action} at {top} in flight / echo",
                "value": round(value, 3),
                "target": f">= {ratio}",
                "met": value >= ratio,
            }
        )
        naive = _find(rows, "naive", action, top)
        if naive is not None:
            factor = ours["msgs_s"] / naive["msgs_s"]
            found.append(
                {
                    "name": f"{action} at {top} in flight / naive",
                    "value": round(factor, 2),
                    "target": f">= {NAIVE_FACTOR}",
                    "met": factor >= NAIVE_FACTOR,
                }
            )
    echo_one = _echo(rows, 1)
    if echo_one is not None:
        for row in rows:
            if row["system"] == "worker" and row["in_flight"] == 1:
                gap = row["p50_ms"] - echo_one["p50_ms"]
                found.append(
                    {
                        "name": f"{row['action']} p50 at 1 in flight - echo p50 (ms)",
                        "value": round(gap, 3),
                        "target": f"<= {P50_MARGIN_MS}",
                        "met": gap <= P50_MARGIN_MS,
                    }
                )
    if soak := results.get("soak"):
        found.append(
            {
                "name": f"RSS growth from {soak['checkpoint']} to {soak['commands']} commands (%)",
                "value": round(soak["growth_pct"], 2),
                "target": f"<= {RSS_GROWTH_PCT}",
                "met": soak["growth_pct"] <= RSS_GROWTH_PCT,
            }
        )
    if scaling := results.get("list_scaling"):
        points = scaling["points"]
        for query in points[0]["queries"]:
            first, last = points[0]["queries"][query]["db_p50_ms"], points[-1]["queries"][query]["db_p50_ms"]
            span = f"{points[-1]['artifacts']} / {points[0]['artifacts']} rows"
            found.append(
                {
                    "name": f"list_artifacts {query}: query p50, {span}",
                    "value": round(last / first, 2),
                    "target": f"<= {LIST_FLAT_FACTOR} (flat)",
                    "met": last / first <= LIST_FLAT_FACTOR,
                }
            )
    return found


def write_json(results: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


def chart(results: dict[str, Any], path: Path) -> Path:
    """Throughput and p50 by in-flight level for every system and action, plus RSS and list scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results.get("matrix", [])
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        label = "echo (broker limit)" if row["system"] == "echo" else f"{row['system']} {row['action']}"
        if row["system"] == "echo-uvloop":
            label = "echo on uvloop (reference)"
        series.setdefault(label, []).append(row)
    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
    (thr, lat), (mem, lst) = axes
    for label, points in series.items():
        points = sorted(points, key=lambda r: r["in_flight"])
        xs = [p["in_flight"] for p in points]
        style = {"linewidth": 3, "color": "black"} if label.startswith("echo (") else {}
        if label.startswith("echo on"):
            style = {"linewidth": 2, "color": "grey", "linestyle": ":"}
        if label.startswith("naive"):
            style = {"linestyle": "--"}
        thr.plot(xs, [p["msgs_s"] for p in points], marker="o", label=label, **style)
        lat.plot(xs, [p["p50_ms"] for p in points], marker="o", label=label, **style)
    for ax, title, unit in ((thr, "throughput", "round trips / s"), (lat, "p50 latency", "ms")):
        ax.set_xscale("log")
        ax.set_xlabel("commands in flight")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    lat.set_yscale("log")
    thr.legend(fontsize=7)
    if soak := results.get("soak"):
        curve = soak.get("rss_curve") or [[0, soak["rss_start_bytes"]], [soak["commands"], soak["rss_end_bytes"]]]
        mem.plot([n for n, _ in curve], [rss / MiB for _, rss in curve], marker=".", color="#47a")
        mem.axvline(soak["checkpoint"], color="#999", linestyle=":")
        mem.axhline(
            soak["rss_checkpoint_bytes"] / MiB * 1.1, color="#c44", linestyle="--", label="+10% of RSS at the mark"
        )
        mem.set_ylim(bottom=0)
        mem.set_xlabel("commands")
        mem.legend(fontsize=7)
        mem.set_ylabel("worker RSS (MiB)")
        mem.set_title(f"worker RSS over {soak['commands']} commands ({soak['growth_pct']:+.1f}%)")
    if scaling := results.get("list_scaling"):
        points = scaling["points"]
        sizes = [p["artifacts"] for p in points]
        for query in points[0]["queries"]:
            line = lst.plot(sizes, [p["queries"][query]["p50_ms"] for p in points], marker="o", label=f"{query} (bus)")
            db_ms = [p["queries"][query]["db_p50_ms"] for p in points]
            lst.plot(sizes, db_ms, marker="x", linestyle="--", color=line[0].get_color(), label=f"{query} (query)")
        lst.set_xscale("log")
        lst.set_xlabel("artifacts in the table")
        lst.set_ylabel("p50 ms (1 in flight)")
        lst.set_title("list_artifacts limit 20 with filters")
        lst.set_ylim(bottom=0)
        lst.legend(fontsize=7)
        lst.grid(True, alpha=0.3)
    meta = results.get("meta", {})
    fig.suptitle(
        f"MindBus storage worker vs bare aio-pika echo and the naive peer — {meta.get('database')}, "
        f"{meta.get('workers')} worker(s), {meta.get('cpus')} CPUs, load {meta.get('load_before')}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
