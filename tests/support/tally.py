"""The figures every fault test reports: commands, kills, and the lost / duplicated / unexpected counts.

Each test fills a ``Tally`` and calls ``check()``: the figures are printed (and repeated in pytest's
terminal summary, so they are visible without ``-s``), then all three bad counts must be zero. The first
few offending ids go into the assertion message so a failure says which commands went wrong.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

REPORTS: list[Tally] = []
EXAMPLES = 5


@dataclass
class Tally:
    name: str
    commands: int = 0
    kills: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        extra = " ".join(f"{k}={_fmt(v)}" for k, v in self.figures.items())
        return (
            f"{self.name}: commands={self.commands} kills={self.kills} lost={len(self.lost)} "
            f"duplicated={len(self.duplicated)} unexpected={len(self.unexpected)} "
            f"duration={time.monotonic() - self.started:.1f}s {extra}"
        ).rstrip()

    def check(self) -> None:
        """Report the figures, then fail unless nothing was lost, duplicated or unexpected."""
        text = self.line()
        print("\nFAULTS " + text)
        REPORTS.append(self)
        self.figures["_line"] = text
        problems = {
            kind: ids[:EXAMPLES]
            for kind, ids in (("lost", self.lost), ("duplicated", self.duplicated), ("unexpected", self.unexpected))
            if ids
        }
        assert not problems, f"{text}\nexamples: {problems}"


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)
