"""The run's PNG chart: throughput and latency per system and action, and ratios to the lean echo.

A run on both databases gets a panel of each kind per database, SQLite on the left and PostgreSQL on the
right, the one lean echo in both; the worker's issue-19 targets are marked on its ratio bars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import base_kind, host_line
from bench.report import (
    NAMES,
    REFERENCE,
    TARGET_RATIOS,
    WRONG_REFERENCE,
    MiB,
    databases,
    echo_row,
    row_database,
    scalings,
    soaks,
)

LABELS = {
    REFERENCE: "lean echo (the limit)",
    "echo": "plain echo (reference)",
    "echo-uvloop": "plain echo on uvloop (reference)",
}


def _label(row: dict[str, Any]) -> str:
    """The row's name in a panel of its database: ``worker get_artifact`` on either database."""
    return LABELS.get(row["system"]) or f"{base_kind(row['system'])} {row['action']}"


ACTION_COLOURS = {
    "get_artifact": "#1f77b4",
    "register_artifact": "#ff7f0e",
    "list_artifacts": "#2ca02c",
    "save_thread": "#d62728",
}
DATABASE_COLOURS = {"sqlite": "#47a", "postgresql": "#a47"}


def _style(row: dict[str, Any]) -> dict[str, Any]:
    """The echoes in black and grey; each action in its own colour, the worker solid and the naive peer dashed."""
    system = base_kind(row["system"])
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


def _rows_of(rows: list[dict[str, Any]], database: str | None) -> list[dict[str, Any]]:
    """The echoes and the rows on ``database`` (every row when the run has one database or none)."""
    return [r for r in rows if database is None or row_database(r) in (None, database)]


def chart(results: dict[str, Any], path: Path) -> Path:
    """Throughput and p50 by in-flight level, the ratios to the lean echo at the top level, RSS and list scaling.

    One database: throughput and latency side by side, the ratios below. Two: throughput, latency and ratios each
    in a row of two panels, SQLite left and PostgreSQL right, on shared scales. RSS and listing last.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results.get("matrix", [])
    found = databases(results)
    soak_runs, list_runs = soaks(results), scalings(results)
    last = 1 if soak_runs or list_runs else 0  # the RSS and listing row only when the run has them
    panels: list[tuple[str | None, Any, Any, Any]]
    if len(found) > 1:
        fig = plt.figure(figsize=(16, 15 + 5 * last))
        grid = fig.add_gridspec(3 + last, 2)
        panels = [
            (db, fig.add_subplot(grid[0, i]), fig.add_subplot(grid[1, i]), fig.add_subplot(grid[2, i]))
            for i, db in enumerate(found)
        ]
    else:
        fig = plt.figure(figsize=(14, 9 + 5 * last))
        grid = fig.add_gridspec(2 + last, 2)
        one = found[0] if found else None
        panels = [(one, fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, :]))]
    if last:
        _soak_panel(fig.add_subplot(grid[-1, 0]), soak_runs)
        _list_panel(fig.add_subplot(grid[-1, 1]), list_runs)
    for database, thr, lat, ratios in panels:
        on = f" on {NAMES[database]}" if database else ""
        _lines(thr, lat, _rows_of(rows, database), on)
        _ratio_bars(ratios, _rows_of(rows, database), database, on)
    if len(panels) > 1:  # shared scales: the two databases read against each other at a glance
        for axes in ([p[1] for p in panels], [p[2] for p in panels], [p[3] for p in panels]):
            low = min(ax.get_ylim()[0] for ax in axes)
            high = max(ax.get_ylim()[1] for ax in axes)
            for ax in axes:
                ax.set_ylim(low, high)
    meta = results.get("meta", {})
    label = meta.get("host_label")
    host = host_line(label) if label else f"{meta.get('cpus')} CPUs, load {meta.get('load_before')}"
    fig.suptitle(
        f"MindBus storage worker vs the lean aio-pika echo (the limit), the plain echo and the naive peer — "
        f"{meta.get('database')}, {meta.get('workers')} worker(s)\n{host}"
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # room for the two-line title
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _lines(thr: Any, lat: Any, rows: list[dict[str, Any]], on: str) -> None:
    """Throughput and p50 latency of every row by in-flight level."""
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        series.setdefault(_label(row), []).append(row)
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
        ax.set_title(title + on)
        ax.grid(True, alpha=0.3)
    lat.set_yscale("log")
    thr.legend(fontsize=7)


def _soak_panel(mem: Any, runs: list[dict[str, Any]]) -> None:
    """The worker's RSS over the soak, a curve per database, with the +10% line of each."""
    if not runs:
        mem.set_axis_off()
        return
    for soak in runs:
        database = soak.get("database") or "sqlite"
        colour = DATABASE_COLOURS.get(database, "#47a")
        curve = soak.get("rss_curve") or [[0, soak["rss_start_bytes"]], [soak["commands"], soak["rss_end_bytes"]]]
        name = f"{NAMES.get(database, database)} ({soak['growth_pct']:+.1f}%)"
        mem.plot([n for n, _ in curve], [rss / MiB for _, rss in curve], marker=".", color=colour, label=name)
        mem.axhline(
            soak["rss_checkpoint_bytes"] / MiB * 1.1,
            color=colour,
            linestyle="--",
            alpha=0.6,
            label=f"{NAMES.get(database, database)}: +10% of RSS at the mark",
        )
    mem.axvline(runs[0]["checkpoint"], color="#999", linestyle=":")
    mem.set_ylim(bottom=0)
    mem.set_xlabel("commands")
    mem.legend(fontsize=7)
    mem.set_ylabel("worker RSS (MiB)")
    mem.set_title(f"worker RSS over {runs[0]['commands']} commands")


def _list_panel(lst: Any, runs: list[dict[str, Any]]) -> None:
    """``list_artifacts`` p50 over a growing table, over the bus and of the query alone."""
    if not runs:
        lst.set_axis_off()
        return
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for order, scaling in enumerate(runs):  # a colour per query; each database its own markers
        points = scaling["points"]
        sizes = [p["artifacts"] for p in points]
        on = f", {NAMES[scaling['database']]}" if len(runs) > 1 and scaling.get("database") in NAMES else ""
        bus, alone = (("o", "-"), ("x", "--")) if order == 0 else (("s", "-."), ("+", ":"))
        for index, query in enumerate(points[0]["queries"]):
            colour = colours[index % len(colours)]
            bus_ms = [p["queries"][query]["p50_ms"] for p in points]
            db_ms = [p["queries"][query]["db_p50_ms"] for p in points]
            lst.plot(sizes, bus_ms, marker=bus[0], linestyle=bus[1], color=colour, label=f"{query} (bus{on})")
            lst.plot(sizes, db_ms, marker=alone[0], linestyle=alone[1], color=colour, label=f"{query} (query{on})")
    lst.set_xscale("log")
    lst.set_xlabel("artifacts in the table")
    lst.set_ylabel("p50 ms (1 in flight)")
    on = ", ".join(NAMES.get(s.get("database") or "sqlite", "SQLite") for s in runs)
    lst.set_title(f"list_artifacts limit 20 with filters ({on})")
    lst.set_ylim(bottom=0)
    lst.legend(fontsize=6 if len(runs) > 1 else 7, ncol=len(runs))
    lst.grid(True, alpha=0.3)


def _ratio_bars(ax: Any, rows: list[dict[str, Any]], database: str | None, on: str) -> None:
    """Every row's throughput over the lean echo's at the top in-flight level; above 1.0 the reference is wrong.

    The worker's bars carry a dotted mark at their issue-19 target on ``database``.
    """
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
        hatch=["//" if base_kind(r["system"]).startswith("naive") else "" for r in shown],
        edgecolor=["red" if v > 1.0 else "white" for v in values],
        linewidth=[3 if v > 1.0 else 1 for v in values],
    )
    labels = [f"{v:.2f}" + (f"\n{WRONG_REFERENCE}" if v > 1.0 else "") for v in values]
    ax.bar_label(bars, labels=labels, fontsize=8)
    targets = TARGET_RATIOS.get(database or "sqlite", {})
    marked = False
    for index, row in enumerate(shown):
        target = targets.get(row["action"])
        if base_kind(row["system"]) == "worker" and target is not None:
            ax.hlines(
                target,
                index - 0.4,
                index + 0.4,
                colors="black",
                linestyles=":",
                linewidth=2,
                label=None if marked else "target (issue 19)",
            )
            marked = True
    if marked:
        ax.legend(fontsize=7, loc="upper left")
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
    ax.set_title(f"ratio to the lean echo at {top} in flight{on}")
    ax.grid(True, axis="y", alpha=0.3)
