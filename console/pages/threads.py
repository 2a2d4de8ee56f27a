"""``/threads``: find conversations by their metadata or a name in it; ``/threads/<id>``: read one back to its start.

Both pages only ask the worker (``list_threads``, ``get_thread``): what the console's broker user may not read is
never listed, and opening it answers as an unknown id would, so its title or metadata never shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from console.web import EMPTY, arg, bus_of, link, render, settings_of
from contracts import InvalidArgument, ListThreadsOutput, ThreadInfo
from contracts.threads import MAX_METADATA_FILTERS

MAX_PAIR_KEY = 128
"""A metadata key (the contract's bound); label keys are shorter (64) and checked by the worker."""
MAX_PAIR_VALUE = 256
"""A filter's value: metadata filters are matched against values of at most this many characters (longer ones
are kept as a digest), and label values are at most this long."""
MAX_CURSOR = 1024
MAX_SEARCH = 128
TITLE_KEYS = ("title", "name", "subject")
"""Metadata keys whose string value names a thread in the listing."""
SUMMARY_PAIRS = 6
SUMMARY_VALUE = 40
MAX_SHOWN_CONTENT = 20_000
"""Characters of one message shown; the rest is counted, not rendered (a page stays readable)."""


class BadFilter(Exception):
    """A filter the page cannot send: its message says exactly what is wrong, for a 400 page."""


def pairs(request: Request, name: str, *, what: str, max_count: int = MAX_METADATA_FILTERS) -> dict[str, str]:
    """The repeated ``name=key=value`` parameters as a dict (empty fields skipped); each must be ``key=value``
    with a non-empty key, within the contract's bounds, or ``BadFilter`` names the field and the problem."""
    found: dict[str, str] = {}
    raw = [value.strip() for value in request.query_params.getlist(name)]
    given = [value for value in raw if value]
    if len(given) > max_count:
        raise BadFilter(f"at most {max_count} {what} filters, got {len(given)}")
    for text in given:
        key, sep, value = text.partition("=")
        key, value = key.strip(), value.strip()
        shown = text if len(text) <= 60 else text[:60] + "…"
        if not sep or not key:
            raise BadFilter(f"{what} filter {shown!r} is not key=value (e.g. inn=7707083893)")
        if len(key) > MAX_PAIR_KEY:
            raise BadFilter(f"{what} filter key {key[:60]!r}… is {len(key)} characters, at most {MAX_PAIR_KEY}")
        if len(value) > MAX_PAIR_VALUE:
            raise BadFilter(f"{what} filter {key!r} has a value of {len(value)} characters, at most {MAX_PAIR_VALUE}")
        if key in found and found[key] != value:
            raise BadFilter(f"{what} filter {key!r} is given twice with different values")
        found[key] = value
    return found


def as_pairs(values: dict[str, str]) -> list[str]:
    """The filters back as the form's and the links' ``key=value`` strings."""
    return [f"{key}={value}" for key, value in values.items()]


def thread_href(thread_id: str) -> str:
    """The thread's page: its id quoted whole (an id may hold ``/``, ``?`` or ``#``)."""
    return "/threads/" + quote(thread_id, safe="")


def _title(thread: ThreadInfo) -> str:
    for key in TITLE_KEYS:
        value = thread.metadata.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return EMPTY


def _summary(metadata: dict[str, Any]) -> str:
    """A few ``key=value`` of the metadata, short: the listing's hint at what a thread is about."""
    shown = []
    for key in sorted(metadata)[:SUMMARY_PAIRS]:
        value = metadata[key]
        text = value if isinstance(value, str) else repr(value) if not isinstance(value, dict | list) else "{…}"
        text = text if len(text) <= SUMMARY_VALUE else text[:SUMMARY_VALUE] + "…"
        shown.append(f"{key}={text}")
    more = len(metadata) - SUMMARY_PAIRS
    return ", ".join(shown) + (f" (+{more} more)" if more > 0 else "")


async def threads_page(request: Request) -> Response:
    settings = settings_of(request)
    search, cursor = arg(request, "q", max_length=MAX_SEARCH + 1), arg(request, "cursor", max_length=MAX_CURSOR)
    problem: str | None = None
    metadata: dict[str, str] = {}
    listing: ListThreadsOutput | None = None
    try:
        metadata = pairs(request, "meta", what="metadata")
        listing = await bus_of(request).storage.list_threads(
            metadata=dict(metadata), search=search, limit=settings.page_size, cursor=cursor
        )
    except BadFilter as exc:
        problem = str(exc)
    except InvalidArgument as exc:  # a search too short, a damaged cursor: the worker's (or client's) words
        problem = exc.message
    rows = [
        {"info": t, "href": thread_href(t.thread_id), "title": _title(t), "summary": _summary(t.metadata)}
        for t in (listing.threads if listing else [])
    ]
    filters = {"q": search, "meta": as_pairs(metadata)}
    return render(
        request,
        "threads.html",
        status_code=400 if problem else 200,
        problem=problem,
        search=search or "",
        metadata=as_pairs(metadata),
        rows=rows,
        first_page=link("/threads", **filters) if cursor else None,
        next_page=link("/threads", **filters, cursor=listing.next_cursor) if listing and listing.next_cursor else None,
    )


@dataclass(frozen=True, slots=True)
class Shown:
    """A message's content as the page shows it: text as it is, anything else as JSON, cut when very long."""

    text: str
    structured: bool
    cut: int


def _shown(content: Any) -> Shown:
    structured = not isinstance(content, str)
    text = json.dumps(content, indent=2, ensure_ascii=False, default=str) if structured else str(content)
    cut = max(0, len(text) - MAX_SHOWN_CONTENT)
    return Shown(text[:MAX_SHOWN_CONTENT], structured, cut)


async def thread_page(request: Request) -> Response:
    """One page of a thread's messages, newest page first; ``#older`` carries the worker's cursor back."""
    settings = settings_of(request)
    thread_id = request.path_params["thread_id"]
    cursor = arg(request, "cursor", max_length=MAX_CURSOR)
    result = await bus_of(request).storage.get_thread(thread_id, limit=settings.page_size, cursor=cursor)
    here = thread_href(thread_id)
    messages = [{"message": m, "shown": _shown(m.content)} for m in result.messages]
    return render(
        request,
        "thread.html",
        thread=result.thread,
        title=_title(result.thread),
        messages=messages,
        paged_back=cursor is not None,
        newest=here if cursor else None,
        older=link(here, cursor=result.next_cursor) if result.next_cursor else None,
    )


routes: list[BaseRoute] = [Route("/threads", threads_page), Route("/threads/{thread_id:path}", thread_page)]
