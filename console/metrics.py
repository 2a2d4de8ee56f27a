"""The command rate, from the worker's Prometheus endpoint (``STORAGE_METRICS_PORT``), sampled in the background.

A rate needs two samples; sampling every few seconds in the background means the overview shows one at
once instead of waiting between two scrapes, and a slow or absent endpoint never slows a page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

SAMPLE_EVERY_S = 5.0
FETCH_TIMEOUT_S = 3.0
KEEP_SAMPLES = 13
"""A minute of samples: the rate shown is over the last interval, the history is for the sparkline-free table."""
COMMANDS_TOTAL = "storage_commands_total"


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    by_action: dict[str, float]
    errors: float

    @property
    def total(self) -> float:
        return sum(self.by_action.values())


@dataclass(slots=True)
class CommandRate:
    """Commands per second over the last interval, overall and by action; ``problem`` when unreadable."""

    per_s: float | None = None
    by_action: dict[str, float] = field(default_factory=dict)
    errors_per_s: float | None = None
    problem: str | None = None


def parse(text: str, at: float) -> Sample:
    by_action: dict[str, float] = {}
    errors = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != COMMANDS_TOTAL:
                continue
            action = sample.labels.get("action", "?")
            by_action[action] = by_action.get(action, 0.0) + sample.value
            if sample.labels.get("code") != "OK":
                errors += sample.value
    return Sample(at, by_action, errors)


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:
        body: bytes = response.read()
    return body.decode()


class RateSampler:
    def __init__(self, url: str | None) -> None:
        self.url = url
        self.samples: deque[Sample] = deque(maxlen=KEEP_SAMPLES)
        self.problem: str | None = None if url else "set STORAGE_METRICS_PORT (or STORAGE_CONSOLE_METRICS_URL)"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.url is not None:
            self._task = asyncio.create_task(self._run(self.url), name="console-metrics")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, url: str) -> None:
        while True:
            try:
                text = await asyncio.to_thread(_fetch, url)
                self.samples.append(parse(text, time.time()))
                self.problem = None
            except (OSError, ValueError) as exc:
                self.problem = f"metrics at {url}: {exc}"
            await asyncio.sleep(SAMPLE_EVERY_S)

    def rate(self) -> CommandRate:
        if len(self.samples) < 2:
            return CommandRate(problem=self.problem or "measuring (a rate needs two samples)")
        old, new = self.samples[-2], self.samples[-1]
        seconds = max(new.at - old.at, 1e-6)
        by_action = {
            action: (count - old.by_action.get(action, 0.0)) / seconds
            for action, count in sorted(new.by_action.items())
            if count > old.by_action.get(action, 0.0)
        }
        return CommandRate(
            per_s=max(0.0, (new.total - old.total) / seconds),
            by_action=by_action,
            errors_per_s=max(0.0, (new.errors - old.errors) / seconds),
            problem=self.problem,
        )
