"""What every page shares: the templates, the bus of the running app, the page size, errors as pages."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from buffer import BrokerUnavailable, CallTimeout, Unroutable
from console.bus import ConsoleBus
from console.settings import ConsoleSettings
from contracts import StorageError

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

_STATUS_OF_CODE = {
    "NOT_FOUND": 404,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 409,
}


EMPTY = "\u2013"
"""What a missing value shows as (an en dash)."""


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return EMPTY
    seconds = max(0.0, float(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _when(value: datetime | str | None) -> str:
    if value is None:
        return EMPTY
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _size(value: int | None) -> str:
    if value is None:
        return EMPTY
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True))
    env.filters.update(ago=_ago, when=_when, size=_size, pretty=_pretty)
    return env


templates = Jinja2Templates(env=_environment())


def bus_of(request: Request) -> ConsoleBus:
    bus: ConsoleBus = request.app.state.bus
    return bus


def settings_of(request: Request) -> ConsoleSettings:
    settings: ConsoleSettings = request.app.state.settings
    return settings


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page in the common frame; ``context`` is the page's own."""
    settings = settings_of(request)
    frame = {"user": settings.broker_user, "is_admin": settings.is_admin, "login_required": settings.token is not None}
    return templates.TemplateResponse(request, template, {**frame, **context}, status_code=status_code)


def link(path: str, **params: Any) -> str:
    """A URL with only the parameters that are set: the state of a page stays in its address."""
    kept = {key: value for key, value in params.items() if value not in (None, "", False)}
    return f"{path}?{urlencode(kept, doseq=True)}" if kept else path


def arg(request: Request, name: str, *, max_length: int = 256) -> str | None:
    """One query parameter, stripped; empty is absent, longer than ``max_length`` is cut (the worker would
    refuse it anyway with a precise error, the cut keeps a hostile URL from being echoed at length)."""
    value = request.query_params.get(name, "").strip()
    return value[:max_length] or None


async def error_page(request: Request, exc: Exception) -> HTMLResponse:
    """A worker's refusal, a timeout or a broker outage as a page that says which, never a traceback."""
    code: str
    if isinstance(exc, StorageError):
        code, message = str(exc.code), exc.message
        status = _STATUS_OF_CODE.get(code, 502)
    elif isinstance(exc, CallTimeout):
        code, message, status = "TIMEOUT", "the storage worker did not answer in time", 504
    elif isinstance(exc, BrokerUnavailable | Unroutable):
        code, message, status = "UNAVAILABLE", f"the bus is not reachable: {exc}", 503
    else:
        raise exc
    return render(request, "error.html", status_code=status, code=code, message=message)


class ServerTiming:
    """ASGI middleware: ``Server-Timing: app;dur=<ms>`` on every response, the time until its headers left
    (for a page: every bus call and the rendering). The benchmark and the browser's devtools read it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                duration_ms = (time.perf_counter() - began) * 1000
                headers = list(message.get("headers", []))
                headers.append((b"server-timing", f"app;dur={duration_ms:.1f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed)
