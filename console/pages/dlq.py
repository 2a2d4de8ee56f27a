"""``/dlq``: the dead letters, peeked without consuming them; requeue or discard one or a selection (admins).

Also the two helpers the admin pages share: the 403 page for a console that is no admin, and the flash
message that a POST leaves for the page it redirects to (a short-lived cookie: an address carrying the
message would let any link put words in the console's mouth).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from console import dead_letters
from console.dead_letters import DEFAULT_LIMIT, MAX_LIMIT, Outcome
from console.web import arg, bus_of, link, render, settings_of

FLASH_COOKIE = "storage_console_flash"
FLASH_MAX_CHARS = 800
KEY_MAX_CHARS = 300
SHOWN_KEYS = 5


def refused(request: Request, what: str) -> Response | None:
    """A 403 page unless this console's broker user is an admin of the worker; None when it is."""
    settings = settings_of(request)
    if settings.is_admin:
        return None
    message = (
        f"{what} are for admins only: this console acts as the broker user {settings.broker_user!r}, "
        "who is not in STORAGE_ADMINS."
    )
    return render(request, "error.html", status_code=403, code="PERMISSION_DENIED", message=message)


def redirect_with_flash(target: str, text: str, *, bad: bool = False) -> Response:
    """A 303 to ``target`` that shows ``text`` once there."""
    response = RedirectResponse(target, status_code=303)
    payload = json.dumps({"text": text[:FLASH_MAX_CHARS], "bad": bad}).encode()
    response.set_cookie(
        FLASH_COOKIE, base64.urlsafe_b64encode(payload).decode(), max_age=60, httponly=True, samesite="strict"
    )
    return response


def take_flash(request: Request) -> dict[str, Any] | None:
    """The flash message left by the last POST (anything unreadable is no message)."""
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        return None
    return {"text": value["text"][:FLASH_MAX_CHARS], "bad": bool(value.get("bad"))}


def render_with_flash(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    """``render`` plus the pending flash message, shown once (its cookie is cleared by this response)."""
    flash = take_flash(request)
    response = render(request, template, status_code=status_code, flash=flash, **context)
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, httponly=True, samesite="strict")
    return response


def limit_of(value: object) -> int:
    try:
        return max(1, min(int(str(value)), MAX_LIMIT))
    except ValueError:
        return DEFAULT_LIMIT


async def dead_letter_page(request: Request) -> Response:
    if (denied := refused(request, "Dead letters")) is not None:
        return denied
    bus, settings = bus_of(request), settings_of(request)
    limit = limit_of(arg(request, "limit", max_length=8) or DEFAULT_LIMIT)
    depth = await bus.queue_depth(settings.dlq)  # before the peek: messages it holds unacked are not counted
    peeked = await dead_letters.peek(bus.connection, settings.dlq, limit)
    return render_with_flash(request, "dlq.html", depth=depth, peek=peeked, limit=limit, exchange=settings.exchange)


def _back(limit: int) -> str:
    return link("/dlq", limit=None if limit == DEFAULT_LIMIT else limit)


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")


def _summary(verb: str, outcome: Outcome, *, exchange: str = "") -> tuple[str, bool]:
    """One sentence per kind of result, for the flash."""
    parts: list[str] = []
    if outcome.done:
        where = f" to the exchange {exchange}" if exchange else ""
        parts.append(f"{verb} {len(outcome.done)} dead letter(s){where}: {_names(outcome.done)}.")
    if outcome.anonymous:
        parts.append(
            f"{len(outcome.anonymous)} of them ({_names(outcome.anonymous)}) went without their user_id, which was "
            "another broker user's (the console cannot vouch for it): the worker treats them by their body's identity."
        )
    for key, why in list(outcome.failed.items())[:SHOWN_KEYS]:
        parts.append(f"{key}: not {verb}, {why}; it stays in the dead-letter queue.")
    if outcome.missing:
        parts.append(f"{_names(outcome.missing)}: not found, nothing done (taken by someone else meanwhile?).")
    if outcome.problem:
        parts.append(f"Stopped: {outcome.problem}; what was not reached stays as it was.")
    bad = bool(outcome.failed or outcome.missing or outcome.problem)
    return " ".join(parts) or "Nothing was selected.", bad


async def _chosen(request: Request) -> tuple[list[str], int]:
    """The message keys a form names (one button's, else the checked boxes) and its limit."""
    form = await request.form(max_files=0, max_fields=MAX_LIMIT + 8)
    limit = limit_of(form.get("limit") or DEFAULT_LIMIT)
    one = form.get("one")
    raw = [one] if isinstance(one, str) and one else form.getlist("id")
    keys = [key[:KEY_MAX_CHARS] for key in dict.fromkeys(k for k in raw if isinstance(k, str) and k)]
    return keys[:MAX_LIMIT], limit


async def _act(
    request: Request, verb: str, act: Callable[[list[str], int], Awaitable[Outcome]], *, exchange: str = ""
) -> Response:
    """What requeue and discard share: the admin gate, the chosen keys, and the flash that reports the outcome."""
    if (denied := refused(request, "Dead letters")) is not None:
        return denied
    keys, limit = await _chosen(request)
    if not keys:
        return redirect_with_flash(_back(limit), "Nothing was selected.", bad=True)
    outcome = await act(keys, limit)
    text, bad = _summary(verb, outcome, exchange=exchange)
    return redirect_with_flash(_back(limit), text, bad=bad)


async def requeue(request: Request) -> Response:
    bus, settings = bus_of(request), settings_of(request)

    async def act(keys: list[str], limit: int) -> Outcome:
        return await dead_letters.requeue(
            bus.connection,
            settings.dlq,
            keys,
            exchange=settings.exchange,
            broker_user=settings.broker_user,
            limit=limit,
        )

    return await _act(request, "requeued", act, exchange=settings.exchange)


async def discard(request: Request) -> Response:
    bus, settings = bus_of(request), settings_of(request)

    async def act(keys: list[str], limit: int) -> Outcome:
        return await dead_letters.discard(bus.connection, settings.dlq, keys, limit=limit)

    return await _act(request, "discarded", act)


routes: list[BaseRoute] = [
    Route("/dlq", dead_letter_page, methods=["GET"]),
    Route("/dlq/requeue", requeue, methods=["POST"]),
    Route("/dlq/discard", discard, methods=["POST"]),
]
