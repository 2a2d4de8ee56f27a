"""``storage-worker top``: a live terminal view of a running worker, for people.

Commands per second by action, errors, latency, the queue and dead-letter depths, and the spill buffer of
an agent's client directory. Reads the worker's metrics endpoint (``STORAGE_METRICS_PORT``), asks the
broker for queue depths with a passive declare (never creates or changes anything), and counts the files
of the buffer directory. Rates are differences between two samples, so the first screen shows totals only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
from prometheus_client.parser import text_string_to_metric_families

from contracts.spill_layout import FAILED, ITEM_SUFFIX, PENDING, QUARANTINE, count_items
from service.settings import Settings

CLEAR = "\x1b[H\x1b[2J"


@dataclass(frozen=True, slots=True)
class QueueDepth:
    messages: int
    consumers: int


@dataclass(frozen=True, slots=True)
class BufferState:
    pending: int
    pending_bytes: int
    failed: int
    quarantined: int
    oldest_age_s: float | None


@dataclass(slots=True)
class Snapshot:
    """What one refresh saw. ``None`` means that source could not be read (and says why in ``problems``)."""

    at: float
    commands: dict[tuple[str, str], float] = field(default_factory=dict)
    latency_sum: dict[str, float] = field(default_factory=dict)
    latency_count: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    node: str | None = None
    queue: QueueDepth | None = None
    dlq: QueueDepth | None = None
    buffer: BufferState | None = None
    problems: list[str] = field(default_factory=list)


def parse_metrics(text: str, snapshot: Snapshot) -> None:
    """Fill ``snapshot`` from a Prometheus exposition of the worker."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "storage_commands_total":
                snapshot.commands[(labels["action"], labels["code"])] = sample.value
            elif sample.name == "storage_command_duration_seconds_sum":
                snapshot.latency_sum[labels["action"]] = sample.value
            elif sample.name == "storage_command_duration_seconds_count":
                snapshot.latency_count[labels["action"]] = sample.value
            elif sample.name == "storage_node_info":
                snapshot.node = labels.get("node")
            elif sample.name in (
                "storage_in_flight_commands",
                "storage_database_up",
                "storage_broker_up",
                "storage_dlq_publishes_total",
                "storage_inbox_hits_total",
            ):
                snapshot.gauges[sample.name] = snapshot.gauges.get(sample.name, 0.0) + sample.value


def read_buffer(directory: Path, now: float | None = None) -> BufferState:
    """The client's spill buffer: one file per buffered command under ``pending/`` (or flat in the directory).

    Failed and quarantined commands are counted as ``storage-buffer status`` counts them (``count_items``).
    """
    now = time.time() if now is None else now
    if not directory.exists():  # the client creates it on its first spill: nothing buffered yet
        return BufferState(pending=0, pending_bytes=0, failed=0, quarantined=0, oldest_age_s=None)
    pending_dir = directory / PENDING
    flat = not pending_dir.is_dir()
    files = [p for p in (directory if flat else pending_dir).iterdir() if p.is_file() and not p.name.startswith(".")]
    if not flat:
        files = [p for p in files if p.name.endswith(ITEM_SUFFIX)]
    stats = [p.stat() for p in files]

    def count(sub: str) -> int:
        folder = directory / sub
        return 0 if flat or not folder.is_dir() else count_items(folder)

    return BufferState(
        pending=len(files),
        pending_bytes=sum(st.st_size for st in stats),
        failed=count(FAILED),
        quarantined=count(QUARANTINE),
        oldest_age_s=max(0.0, now - min(st.st_mtime for st in stats)) if stats else None,
    )


def _rate(now: float, before: float | None, seconds: float) -> float:
    if before is None or seconds <= 0:
        return 0.0
    return max(0.0, now - before) / seconds


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def render(previous: Snapshot | None, current: Snapshot, *, buffer_dir: Path | None = None, width: int = 100) -> str:
    """The screen for one refresh: plain text, no terminal needed (tests call it directly)."""
    span = current.at - previous.at if previous is not None else 0.0
    lines: list[str] = []
    stamp = time.strftime("%H:%M:%S", time.localtime(current.at))
    title = f"storage-worker top - {current.node or 'node ?'} - {stamp}"
    lines.append(title + ("" if previous else "   (rates from the next refresh on)"))
    g = current.gauges
    if g:

        def up(name: str) -> str:
            return "up" if g.get(name) == 1 else "DOWN"

        lines.append(
            f"database {up('storage_database_up')}   broker {up('storage_broker_up')}   "
            f"in flight {g.get('storage_in_flight_commands', 0):.0f}   "
            f"inbox hits {g.get('storage_inbox_hits_total', 0):.0f}   "
            f"dead-lettered {g.get('storage_dlq_publishes_total', 0):.0f}"
        )
    lines.append("")

    per_action: dict[str, dict[str, float]] = defaultdict(
        lambda: {"total": 0.0, "errors": 0.0, "rate": 0.0, "err": 0.0}
    )
    errors_by_code: dict[str, float] = defaultdict(float)
    for (action, code), value in current.commands.items():
        before = previous.commands.get((action, code)) if previous else None
        row = per_action[action]
        row["total"] += value
        row["rate"] += _rate(value, before, span)
        if code != "OK":
            row["errors"] += value
            row["err"] += _rate(value, before, span)
            errors_by_code[code] += value
    header = f"{'action':<22}{'cmd/s':>9}{'err/s':>9}{'avg ms':>10}{'total':>12}{'errors':>10}"
    lines.append(header)
    lines.append("-" * len(header))
    if not per_action:
        lines.append("(no commands yet)")
    total_rate = 0.0
    for action, row in sorted(per_action.items(), key=lambda item: (-item[1]["rate"], -item[1]["total"], item[0])):
        total_rate += row["rate"]
        avg_ms = _avg_ms(previous, current, action)
        avg = f"{avg_ms:.1f}" if avg_ms is not None else "-"
        lines.append(
            f"{action[:21]:<22}{row['rate']:>9.1f}{row['err']:>9.1f}{avg:>10}{row['total']:>12.0f}{row['errors']:>10.0f}"
        )
    lines.append(f"{'all':<22}{total_rate:>9.1f}")
    if errors_by_code:
        codes = ", ".join(f"{code} {count:.0f}" for code, count in sorted(errors_by_code.items(), key=lambda i: -i[1]))
        lines.append(f"errors by code: {codes}")
    lines.append("")

    lines.append(_queue_line("queue", current.queue, previous.queue if previous else None, span))
    lines.append(_queue_line("dead letters", current.dlq, previous.dlq if previous else None, span))
    if buffer_dir is not None:
        b = current.buffer
        if b is None:
            lines.append(f"buffer {buffer_dir}: not readable")
        else:
            oldest = f", oldest {_age(b.oldest_age_s)} old" if b.oldest_age_s is not None else ""
            lines.append(
                f"buffer {buffer_dir}: {b.pending} pending ({b.pending_bytes / 1024:.1f} KiB{oldest}), "
                f"{b.failed} failed, {b.quarantined} quarantined"
            )
    for problem in current.problems:
        lines.append(f"! {problem}")
    return "\n".join(line[:width] for line in lines) + "\n"


def _avg_ms(previous: Snapshot | None, current: Snapshot, action: str) -> float | None:
    """Mean latency over the last interval when there was traffic, else over the worker's lifetime."""
    count = current.latency_count.get(action, 0.0)
    total = current.latency_sum.get(action, 0.0)
    if previous is not None:
        d_count = count - previous.latency_count.get(action, 0.0)
        if d_count > 0:
            return (total - previous.latency_sum.get(action, 0.0)) / d_count * 1000
    return total / count * 1000 if count else None


def _queue_line(label: str, depth: QueueDepth | None, before: QueueDepth | None, span: float) -> str:
    if depth is None:
        return f"{label}: unknown"
    trend = ""
    if before is not None and span > 0:
        trend = f" ({(depth.messages - before.messages) / span:+.1f}/s)"
    return f"{label}: {depth.messages} messages{trend}, {depth.consumers} consumers"


class Sampler:
    """Reads every source once per refresh; keeps one broker connection open between refreshes."""

    def __init__(self, settings: Settings, metrics_url: str | None, buffer_dir: Path | None) -> None:
        self.settings = settings
        self.metrics_url = metrics_url
        self.buffer_dir = buffer_dir
        self._conn: aio_pika.abc.AbstractRobustConnection | None = None

    async def sample(self) -> Snapshot:
        snapshot = Snapshot(at=time.time())
        if self.metrics_url is not None:
            try:
                text = await asyncio.to_thread(_fetch, self.metrics_url)
                parse_metrics(text, snapshot)
            except OSError as exc:
                snapshot.problems.append(f"metrics at {self.metrics_url}: {exc}")
        else:
            snapshot.problems.append("no metrics: set STORAGE_METRICS_PORT or pass --metrics-url")
        try:
            snapshot.queue, snapshot.dlq = await self._depths()
        except Exception as exc:
            snapshot.problems.append(f"queue depth: {exc or type(exc).__name__}")
            await self.close()
        if self.buffer_dir is not None:
            try:
                snapshot.buffer = await asyncio.to_thread(read_buffer, self.buffer_dir)
            except OSError as exc:
                snapshot.problems.append(f"buffer: {exc}")
        return snapshot

    async def _depths(self) -> tuple[QueueDepth | None, QueueDepth | None]:
        if self._conn is None:
            async with asyncio.timeout(5):
                self._conn = await aio_pika.connect_robust(self.settings.amqp_url)
        found: list[QueueDepth | None] = []
        for name in (self.settings.queue, self.settings.dlq):
            channel = await self._conn.channel()  # a failed passive declare closes its channel
            try:
                queue = await channel.declare_queue(name, passive=True)
                result = queue.declaration_result
                found.append(QueueDepth(result.message_count or 0, result.consumer_count or 0))
            except aio_pika.exceptions.ChannelClosed:
                found.append(None)
            finally:
                if not channel.is_closed:
                    await channel.close()
        return found[0], found[1]

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def top_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-url", help="the worker's metrics (default: http://127.0.0.1:$STORAGE_METRICS_PORT)")
    parser.add_argument("--buffer-dir", type=Path, help="an agent's client buffer directory to watch")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    parser.add_argument("--once", action="store_true", help="print one screen and exit (for scripts)")


async def top(args: argparse.Namespace, settings: Settings) -> int:
    metrics_url = args.metrics_url
    if metrics_url is None and settings.metrics_port:
        metrics_url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    sampler = Sampler(settings, metrics_url, args.buffer_dir)
    in_place = sys.stdout.isatty() and not args.once
    previous: Snapshot | None = None
    try:
        if args.once:  # two samples one interval apart, so even a single screen shows rates
            previous = await sampler.sample()
            await asyncio.sleep(args.interval)
        while True:
            current = await sampler.sample()
            width = max(60, shutil.get_terminal_size((200, 50)).columns) if in_place else 200
            screen = render(previous, current, buffer_dir=args.buffer_dir, width=width)
            sys.stdout.write((CLEAR if in_place else "") + screen)
            sys.stdout.flush()
            if args.once:
                return 0
            previous = current
            await asyncio.sleep(args.interval)
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 0
    finally:
        await sampler.close()
