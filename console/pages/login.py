"""``/login`` and ``/logout``: the token form of ``STORAGE_CONSOLE_TOKEN``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from console.auth import COOKIE, COOKIE_MAX_AGE_S, cookie_value, safe_next, token_matches
from console.web import render, settings_of


async def login_form(request: Request) -> Response:
    return render(request, "login.html", next=safe_next(request.query_params.get("next")), failed=False)


async def login(request: Request) -> Response:
    token = settings_of(request).token
    form = await request.form()
    target = safe_next(str(form.get("next") or "/"))
    if token is None:
        return RedirectResponse(target, status_code=303)
    given = str(form.get("token") or "")
    if not token_matches(given, token.get_secret_value()):
        return render(request, "login.html", status_code=401, next=target, failed=True)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        cookie_value(token.get_secret_value()),
        max_age=COOKIE_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


routes: list[BaseRoute] = [
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
