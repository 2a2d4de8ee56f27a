"""``STORAGE_CONSOLE_TOKEN``: when set, no page without it.

A browser logs in once with a form; the cookie then holds a keyed hash of the token, never the token itself,
``HttpOnly`` and ``SameSite=Strict`` (another site's form cannot post with it). A script sends
``Authorization: Bearer <token>``. Every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "storage_console"
OPEN_PATHS = ("/login", "/static/", "/healthz")
COOKIE_MAX_AGE_S = 12 * 3600


def cookie_value(token: str) -> str:
    """What the cookie holds: useless to anyone who steals it from a disk or a log as a bearer token."""
    return hmac.new(token.encode(), b"storage-console-session", hashlib.sha256).hexdigest()


def token_matches(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def authenticated(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value and token_matches(value.strip(), token):
        return True
    cookie = request.cookies.get(COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), cookie_value(token).encode())


def safe_next(target: str | None) -> str:
    """Only a path on this site after login: ``//evil.example`` or ``https://…`` would be an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class TokenGate:
    """ASGI middleware: pages redirect to the login form, anything else (a script, a POST) gets 401."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None or scope["path"].startswith(OPEN_PATHS):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if authenticated(request, self.token):
            await self.app(scope, receive, send)
            return
        response: Response
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            response = RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        else:
            response = PlainTextResponse(
                "401 the console needs its token", status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        await response(scope, receive, send)


class SameOrigin:
    """ASGI middleware: a POST (requeue, discard, cleanup, login) from another site's page is refused.

    SameSite=Strict keeps the cookie off a cross-site form, but a console without a token has no cookie to
    withhold: any page the operator visits could post to ``127.0.0.1:8088``. Browsers send ``Origin`` on
    every POST; when it is present it must name this console. A script with no ``Origin`` (curl and the
    bearer token) is not a browser being tricked, and passes to the token gate.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            request = Request(scope)
            origin = request.headers.get("origin")
            if origin is not None and urlsplit(origin).netloc != request.headers.get("host", ""):
                refused = PlainTextResponse("403 a form of another site cannot act on this console", status_code=403)
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)
