"""The console as an ASGI application: ``create_app(settings)``, served by uvicorn (``console.cli``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from buffer import BrokerUnavailable, CallTimeout, Unroutable
from console.auth import SameOrigin, TokenGate
from console.bus import ConsoleBus
from console.metrics import RateSampler
from console.pages import artifacts, cleanup, dlq, login, memory, overview, threads
from console.settings import ConsoleSettings
from console.web import STATIC, ServerTiming, error_page
from contracts import StorageError


def _routes() -> list[BaseRoute]:
    pages = (overview, login, artifacts, threads, memory, dlq, cleanup)
    return [*(route for page in pages for route in page.routes), Mount("/static", StaticFiles(directory=STATIC))]


def create_app(settings: ConsoleSettings | None = None) -> Starlette:
    """The app; its lifespan opens the bus (the storage client, the node board, the metrics sampler)."""
    settings = settings or ConsoleSettings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        bus = ConsoleBus(settings)
        rates = RateSampler(settings.metrics_endpoint)
        await bus.start()
        rates.start()
        app.state.bus, app.state.rates = bus, rates
        try:
            yield
        finally:
            await rates.close()
            await bus.close()

    app = Starlette(
        routes=_routes(),
        middleware=[
            Middleware(ServerTiming),
            Middleware(SameOrigin),
            Middleware(TokenGate, token=settings.token.get_secret_value() if settings.token else None),
        ],
        exception_handlers={
            StorageError: error_page,
            CallTimeout: error_page,
            BrokerUnavailable: error_page,
            Unroutable: error_page,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
