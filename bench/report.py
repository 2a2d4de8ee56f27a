"""The run's figures as a table (each a ratio to the lean echo), the targets of issue 19, and JSON.

The lean echo (``echo-lean``) is the broker's limit: a throughput above it means the reference is wrong, not
that a system outruns the broker, and the table says so on the row. The plain echo is a reference row.
A run can hold the naive peer and the worker on both databases: the PostgreSQL systems' kinds end in ``-pg``
and each row's ``database`` says it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import DATABASES, host_label, host_line, kind_on

MiB = 2**20
TARGET_IN_FLIGHT = 100
TARGET_RATIOS = {
    "postgresql": {"get_artifact": 0.90, "register_artifact": 0.65, "save_thread": 0.70, "list_artifacts": 0.60},
    "sqlite": {"get_artifact": 0.95, "register_artifact": 0.75, "save_thread": 0.80, "list_artifacts": 0.70},
}
"""Issue 19: the worker's throughput at 100 in flight over the lean echo's of the same run, per database."""
NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
RSS_GROWTH_PCT = 10.0
LIST_FLAT_FACTOR = 1.5
REFERENCE = "echo-lean"
"""The system every ratio is taken to."""
WRONG_REFERENCE = "reference is wrong"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def meta(args: argparse.Namespace, plan: object) -> dict[str, Any]:
    return {
        "started": datetime.now(UTC).isoformat(),
        "host": platform.node(),
        "host_label": host_label(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_before": load(),
        "database": " and ".join(args.databases),
        "databases": list(args.databases),
        "soak_databases": list(args.soak_databases),
        "workers": args.workers,
        "quick": args.quick,
        "plan": {k: v for k, v in vars(plan).items()},
    }


def echo_row(rows: list[dict[str, Any]], in_flight: int) -> dict[str, Any] | None:
    """The reference row at ``in_flight``: the lean echo's."""
    return next((r for r in rows if r["system"] == REFERENCE and r["in_flight"] == in_flight), None)


def _find(rows: list[dict[str, Any]], system: str, action: str, in_flight: int) -> dict[str, Any] | None:
    return next(
        (r for r in rows if r["system"] == system and r["action"] == action and r["in_flight"] == in_flight), None
    )


def row_database(row: dict[str, Any]) -> str | None:
    """The row's database; a row of a run from before the field existed: ``-pg`` kinds are PostgreSQL's."""
    if "database" in row:
        return row["database"]  # type: ignore[no-any-return]
    if row["system"].startswith("echo"):
        return None
    return "postgresql" if row["system"].endswith("-pg") else "sqlite"


def databases(results: dict[str, Any]) -> list[str]:
    """The databases the run measured systems on, SQLite first."""
    found = {row_database(r) for r in results.get("matrix", [])}
    found |= set(results.get("meta", {}).get("databases", []))
    return [d for d in DATABASES if d in found]


def scalings(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's list scalings: one (SQLite, as ``bench.scaling`` gives it) or one per database in a list."""
    scaling = results.get("list_scaling") or []
    return [scaling] if isinstance(scaling, dict) else list(scaling)


def soaks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's soaks, one per database (a run from before held one, as a dict)."""
    soak = results.get("soak") or []
    return [soak] if isinstance(soak, dict) else list(soak)


def _rounds_won(row: dict[str, Any], echo: dict[str, Any]) -> tuple[int, int]:
    """In how many of the rounds (each system measured once per round, in turn) the row beat the lean echo."""
    pairs = list(zip(row.get("rounds", []), echo.get("rounds", []), strict=False))
    return sum(mine["msgs_s"] > its["msgs_s"] for mine, its in pairs), len(pairs)


def wrong_reference(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row whose throughput is above the lean echo's at its in-flight level: each says the limit is not one.

    Each tells in how many rounds it was above: one round in several is the machine's noise, every round is not.
    """
    rows = results.get("matrix", [])
    found = []
    for row in rows:
        echo = echo_row(rows, row["in_flight"])
        if echo is None or row is echo or row["system"] == REFERENCE:
            continue
        ratio = row["msgs_s"] / echo["msgs_s"]
        if ratio > 1.0:
            won, rounds = _rounds_won(row, echo)
            found.append(
                {
                    "system": row["system"],
                    "action": row["action"],
                    "in_flight": row["in_flight"],
                    "ratio": ratio,
                    "rounds_above": won,
                    "rounds": rounds,
                }
            )
    return found


def list_factor(results: dict[str, Any]) -> str | None:
    """The list factor and where it comes from, a sentence per database (None without the three list rows)."""
    found = databases(results)
    sentences = [_list_factor(results, database, len(found) > 1) for database in found]
    return "\n".join(s for s in sentences if s) or None


def _list_factor(results: dict[str, Any], database: str, name_it: bool) -> str | None:
    rows = results.get("matrix", [])
    trace = results.get("list_trace", {}).get("artifacts")
    levels = sorted({r["in_flight"] for r in rows})
    if not levels or trace is None:
        return None
    parts = []
    for in_flight in (levels[-1], levels[0]):
        ours = _find(rows, kind_on("worker", database), "list_artifacts", in_flight)
        naive = _find(rows, kind_on("naive", database), "list_artifacts", in_flight)
        indexed = _find(rows, kind_on("naive-indexed", database), "list_artifacts", in_flight)
        if ours is None or naive is None or indexed is None:
            return None
        parts.append((in_flight, ours["msgs_s"] / naive["msgs_s"], ours["msgs_s"] / indexed["msgs_s"]))
        if len(levels) == 1:
            break
    (top, as_written, with_index), *low = parts
    at_low = f" ({low[0][1]:.1f}x and {low[0][2]:.1f}x at {low[0][0]} in flight)" if low else ""
    return (
        (f"On {NAMES[database]}: listing" if name_it else "Listing")
        + f" a trace of {trace:,} artifacts at {top} in flight, the worker answers {as_written:.1f}x as many "
        f"calls as the naive peer as written, whose single-column indexes make it read and sort the whole trace on "
        f"every call, and {with_index:.1f}x as many as the same peer with the composite index (trace_id, created_at, "
        f"id){at_low}: the index is worth {as_written / with_index:.1f}x of the factor, the rest is the peer's "
        f"per-call cost (FastStream, an ORM session, twenty ORM objects, aio-pika's default publish)."
    )


def _ratio(value: float, reference: float, *, flag: bool = False) -> str:
    ratio = value / reference
    return f"{ratio:6.2f}" + (" !" if flag and ratio > 1.0 else "  ")


def table(results: dict[str, Any]) -> str:
    rows = results.get("matrix", [])
    head = (
        f"{'system':16} {'action':18} {'inflight':>8}  {'msgs/s':>8} {'(x lean)':>8}  {'p50 ms':>7} {'(x lean)':>8}  "
        f"{'p99 ms':>7} {'(x lean)':>8}  {'RSS MiB':>7} {'(x lean)':>8}"
    )
    lines = ["every ratio is to the lean echo (echo-lean), the broker's limit; ! marks a throughput above it"]
    if databases(results) == ["sqlite", "postgresql"]:
        lines.append("systems ending in -pg run on PostgreSQL, the others with a database on SQLite")
    elif databases(results) == ["postgresql"]:
        lines.append("every system with a database runs on PostgreSQL (its kind ends in -pg)")
    lines += [head, "-" * len(head)]
    for row in rows:
        echo = echo_row(rows, row["in_flight"]) or row
        wrong = row["system"] != REFERENCE and row["msgs_s"] > echo["msgs_s"]
        won, rounds = _rounds_won(row, echo)
        lines.append(
            f"{row['system']:16} {row['action']:18} {row['in_flight']:>8}  "
            f"{row['msgs_s']:8.0f} {_ratio(row['msgs_s'], echo['msgs_s'], flag=True):>8}  "
            f"{row['p50_ms']:7.2f} {_ratio(row['p50_ms'], echo['p50_ms']):>8}  "
            f"{row['p99_ms']:7.2f} {_ratio(row['p99_ms'], echo['p99_ms']):>8}  "
            f"{row['rss_bytes'] / MiB:7.0f} {_ratio(row['rss_bytes'], echo['rss_bytes']):>8}"
            + (f"  ({row['errors']} errors)" if row.get("errors") else "")
            + (f"  << {WRONG_REFERENCE}: above the lean echo (in {won} of {rounds} rounds)" if wrong else "")
        )
    if rows:
        wrong_rows = wrong_reference(results)
        lines += [
            "",
            f"reference check: {len(wrong_rows)} row(s) above the lean echo"
            + (f" — {WRONG_REFERENCE}" if wrong_rows else " (the lean echo holds as the limit)"),
        ]
    if sentence := list_factor(results):
        lines += ["", sentence]
    if side := results.get("side_by_side"):
        e, w = side["echo"], side["worker"]
        lines += [
            "",
            f"issue 2 ({w['system']}): {side['calls']} get_artifact at {side['in_flight']} in flight: "
            f"worker {w['seconds']:.2f} s "
            f"({w['msgs_s']:.0f}/s, p50 {w['p50_ms']:.1f} ms) vs lean echo {e['seconds']:.2f} s "
            f"({e['msgs_s']:.0f}/s, p50 {e['p50_ms']:.1f} ms): {w['msgs_s'] / e['msgs_s']:.2f} of the lean echo"
            + (f" << {WRONG_REFERENCE}" if w["msgs_s"] > e["msgs_s"] else ""),
        ]
    for soak in soaks(results):
        lines += [
            "",
            f"soak on {soak.get('database', 'sqlite')}: {soak['commands']} commands at {soak['msgs_s']:.0f}/s; "
            f"RSS {soak['rss_start_bytes'] / MiB:.0f} MiB "
            f"at start, {soak['rss_checkpoint_bytes'] / MiB:.1f} MiB after {soak['checkpoint']}, "
            f"{soak['rss_end_bytes'] / MiB:.1f} MiB at the end ({soak['growth_pct']:+.1f}%), {soak['errors']} errors",
        ]
    for scaling in scalings(results):
        database = NAMES.get(scaling.get("database") or "sqlite", "SQLite")
        lines += [
            "",
            f"list_artifacts (limit 20) with filters over a growing table on {database}, "
            "p50 over the bus / of the query:",
        ]
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
            lines.append(f"  [{'OK' if t['met'] else 'MISS'}] {t['name']}: {t['value']} (target {t['target']})")
    meta = results.get("meta", {})
    if label := meta.get("host_label"):
        lines += ["", f"host: {host_line(label)}"]
    lines += [f"load average before {meta.get('load_before')}, after {meta.get('load_after')}"]
    return "\n".join(lines)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 19's targets: the worker at 100 in flight over the lean echo per database, RSS flat, listing flat.

    Without a 100-in-flight level the ratios are taken at the run's top level, and their names say which.
    """
    rows = results.get("matrix", [])
    found: list[dict[str, Any]] = []
    levels = {r["in_flight"] for r in rows}
    level = TARGET_IN_FLIGHT if TARGET_IN_FLIGHT in levels or not levels else max(levels)
    echo = echo_row(rows, level)
    for database in databases(results):
        for action, ratio in TARGET_RATIOS[database].items():
            name = f"{NAMES[database]} {action} at {level} in flight / lean echo"
            ours = _find(rows, kind_on("worker", database), action, level)
            if ours is None or echo is None:
                found.append({"name": name, "value": "pending", "target": f">= {ratio}", "met": False})
                continue
            value = ours["msgs_s"] / echo["msgs_s"]
            found.append({"name": name, "value": round(value, 3), "target": f">= {ratio}", "met": value >= ratio})
    for soak in soaks(results):
        database = NAMES.get(soak.get("database") or "sqlite", "SQLite")
        found.append(
            {
                "name": f"{database} RSS growth from {soak['checkpoint']} to {soak['commands']} commands (%)",
                "value": round(soak["growth_pct"], 2),
                "target": f"<= {RSS_GROWTH_PCT}",
                "met": soak["growth_pct"] <= RSS_GROWTH_PCT,
            }
        )
    for scaling in scalings(results):
        points = scaling["points"]
        database = NAMES.get(scaling.get("database") or "sqlite", "SQLite")
        for query in points[0]["queries"]:
            first, last = points[0]["queries"][query]["db_p50_ms"], points[-1]["queries"][query]["db_p50_ms"]
            span = f"{points[-1]['artifacts']} / {points[0]['artifacts']} rows"
            found.append(
                {
                    "name": f"{database} list_artifacts {query}: query p50, {span}",
                    "value": round(last / first, 2),
                    "target": f"<= {LIST_FLAT_FACTOR} (flat)",
                    "met": last / first <= LIST_FLAT_FACTOR,
                }
            )
    return found


def write_json(results: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path
