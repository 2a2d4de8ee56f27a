"""Pages cut to the reply budget: no reply may exceed ``STORAGE_MAX_REPLY_BYTES`` (docs/contract.md §3).

A page asked for by item count can still be far too large in bytes (10,000 messages of 900 KB each):
RabbitMQ refuses such a message and closes the channel, and the command comes back forever. Every paged
handler therefore keeps the leading items whose estimated JSON size fits the budget (always at least one)
and points ``next_cursor`` at the last item kept. An estimate is the free-form parts' JSON size plus a
generous allowance per item for the fixed fields, so a cut page fits; ``replies.bounded_envelope`` is the
last guard should an estimate ever fall short.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TypeVar

from service.settings import Settings

T = TypeVar("T")

REPLY_RESERVE = 8 * 1024
"""Bytes kept for what surrounds the items: the CloudEvent head, the RESULT wrapper, ``count``, ``next_cursor``."""
ITEM_OVERHEAD = 512
"""Bytes allowed per item for its field names, ids, timestamps and separators, on top of its free-form parts."""
MIN_BUDGET = 1024


def page_budget(settings: Settings, *, spent: int = 0) -> int:
    """The bytes a page's items may take: the reply cap less the reply's frame and ``spent`` (a header item)."""
    return max(MIN_BUDGET, settings.max_reply_bytes - REPLY_RESERVE - spent)


def json_size(value: object) -> int:
    """``value``'s size as compact UTF-8 JSON, as the reply will carry it (two C-speed passes, no Python walk)."""
    return text_size(json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":")))


def text_size(text: str) -> int:
    """The UTF-8 size of JSON text already written (a stored manifest), without encoding it when it is ASCII."""
    return len(text) if text.isascii() else len(text.encode())


def fit(items: Sequence[T], budget: int, size_of: Callable[[T], int]) -> int:
    """How many leading ``items`` fit in ``budget`` bytes; at least one when there is any, so paging advances."""
    total = 0
    for index, item in enumerate(items):
        total += size_of(item)
        if total > budget:
            return max(index, 1)
    return len(items)


def cut_page(
    items: list[T],
    next_cursor: str | None,
    *,
    budget: int,
    size_of: Callable[[T], int],
    cursor_of: Callable[[T], str],
) -> tuple[list[T], str | None]:
    """The page cut to ``budget``; when cut, the next page starts after the last item kept."""
    kept = fit(items, budget, size_of)
    if kept == len(items):
        return items, next_cursor
    return items[:kept], cursor_of(items[kept - 1])
