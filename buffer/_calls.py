"""What every group of typed calls shares: dropping unset options and walking keyset pages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar


def drop_none(**values: Any) -> dict[str, Any]:
    """The options that were given: an unset one stays off the wire, so the contract's default applies."""
    return {k: v for k, v in values.items() if v is not None}


class _Page(Protocol):
    @property
    def next_cursor(self) -> str | None: ...


P = TypeVar("P", bound=_Page)
T = TypeVar("T")


async def every_item(fetch: Callable[[str | None], Awaitable[P]], items: Callable[[P], list[T]]) -> AsyncIterator[T]:
    """Every item of a keyset-paged listing: one call per page, until a page has no ``next_cursor``."""
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        for item in items(page):
            yield item
        if not page.next_cursor:
            return
        cursor = page.next_cursor
