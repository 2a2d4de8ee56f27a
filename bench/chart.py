"""The run's PNG chart: throughput and latency per system and action, and ratios to the lean echo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import host_line
from bench.report import REFERENCE, WRONG_REFERENCE, MiB, echo_row

LABELS = {
    REFERENCE: "lean echo (the limit)",
    "echo": "plain echo (reference)",
    "echo-uvloop": "plain echo on uvloop (reference)",
}


def _label(row: dict[str, Any]) -> str:
    return LABELS.get(row["system"]) or f"{row['system']} {row['action']}"


ACTION_COLOURS = {
    "get_artifact": "#1f77b4",
    "register_artifact": "#ff7f0e",
    "list_artifacts": "#2ca02c",
    "save_thread": "#d62728",
}


def _style(row: dict[str, Any]) -> dict[str, Any]:
    """The echoes in black and grey; each action in its own colour, the worker solid and the naive peer dashed."""
    system = row["system"]
    if system == REFERENCE:
        return {"linewidth": 3, "color": "black"}
    if system == "echo":
        return {"linewidth": 2, "color": "grey", "linestyle": "--"}
    if system == "echo-uvloop":
        return {"linewidth": 2, "color": "grey", "linestyle": ":"}
    colour = ACTION_COLOURS.get(row["action"])
    if system == "naive":
        return {"linestyle": "--", "color": colour, "alpha": 0.7}
    if system == "naive-indexed":
        return {"linestyle": "-.", "color": colour, "alpha": 0.7, "marker": "s"}
    return {"color": colour}


def chart(results: dict[str, Any], path: Path) -> Path:
    """Throughput and p50 by in-flight level, the ratios to the lean echo at the top level, RSS and list scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results.get("matrix", [])
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        series.setdefault(_label(row), []).append(row)
    fig = plt.figure(figsize=(14, 14))
    grid = fig.add_gridspec(3, 2)
    thr, lat = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    ratios = fig.add_subplot(grid[1, :])
    mem, lst = fig.add_subplot(grid[2, 0]), fig.add_subplot(grid[2, 1])
    for label, points in series.items():
        points = sorted(points, key=lambda r: r["in_flight"])
        xs = [p["in_flight"] for p in points]
        style = {"marker": "o", **_style(points[0])}
        thr.plot(xs, [p["msgs_s"] for p in points], label=label, **style)
        lat.plot(xs, [p["p50_ms"] for p in points], label=label, **style)
    for ax, title, unit in ((thr, "throughput", "round trips / s"), (lat, "p50 latency", "ms")):
        ax.set_xscale("log")
        ax.set_xlabel("commands in flight")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    lat.set_yscale("log")
    thr.legend(fontsize=7)
    _ratio_bars(ratios, rows)
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
    else:
        mem.set_axis_off()
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
    else:
        lst.set_axis_off()
    meta = results.get("meta", {})
    label = meta.get("host_label")
    host = host_line(label) if label else f"{meta.get('cpus')} CPUs, load {meta.get('load_before')}"
    fig.suptitle(
        f"MindBus storage worker vs the lean aio-pika echo (the limit), the plain echo and the naive peer — "
        f"{meta.get('database')}, {meta.get('workers')} worker(s)\n{host}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _ratio_bars(ax: Any, rows: list[dict[str, Any]]) -> None:
    """Every row's throughput over the lean echo's at the top in-flight level; above 1.0 the reference is wrong."""
    top = max((r["in_flight"] for r in rows), default=None)
    echo = echo_row(rows, top) if top is not None else None
    if echo is None:
        ax.set_axis_off()
        return
    shown = [r for r in rows if r["in_flight"] == top and r["system"] != REFERENCE]
    values = [r["msgs_s"] / echo["msgs_s"] for r in shown]
    names = [_label(r).replace(" (reference)", "") for r in shown]
    bars = ax.bar(
        range(len(shown)),
        values,
        color=[_style(r).get("color", "#47a") for r in shown],
        hatch=["//" if r["system"].startswith("naive") else "" for r in shown],
        edgecolor=["red" if v > 1.0 else "white" for v in values],
        linewidth=[3 if v > 1.0 else 1 for v in values],
    )
    labels = [f"{v:.2f}" + (f"\n{WRONG_REFERENCE}" if v > 1.0 else "") for v in values]
    ax.bar_label(bars, labels=labels, fontsize=8)
    ax.axhline(1.0, color="black", linewidth=2)
    ax.text(
        len(shown) - 0.5,
        1.02,
        f"lean echo {echo['msgs_s']:.0f}/s = 1.0 (above: {WRONG_REFERENCE})",
        ha="right",
        va="bottom",
        fontsize=8,
    )
    ax.set_xticks(range(len(shown)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("throughput / lean echo")
    ax.set_ylim(0, max(1.15, max(values, default=0) * 1.1))
    ax.set_title(f"ratio to the lean echo at {top} in flight")
    ax.grid(True, axis="y", alpha=0.3)
