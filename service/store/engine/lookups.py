"""Where point lookups run: on SQLite, one connection held for the worker's life, used on the event loop.

A pooled read costs a checkout, a reset and a checkin around the statement, about twice the cost of the
index lookup itself (the inbox check of every write, ``get_artifact``, the existence check of a
registration). On SQLite a point lookup runs on the event loop and never suspends (see
``sqlite_driver.point_lookup``), so one connection can serve every command in turn: no command can be
in the middle of using it when another starts. The connection refuses any statement that would have to
leave the loop, so a slow query can never slip onto it. On other databases a lookup is a pooled read.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.store.engine.db import read_connection, translate_db_error
from service.store.engine.sqlite_driver import LeanConnection


class PointLookups:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._held: AsyncConnection | None = None

    async def start(self) -> None:
        """Hold the connection when the engine's driver runs lookups on the loop; otherwise use the pool."""
        conn = await self._engine.connect()
        driver = (await conn.get_raw_connection()).driver_connection
        if isinstance(driver, LeanConnection):
            driver.inline_only = True
            self._held = conn
        else:
            await conn.close()

    async def close(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            await held.close()

    def connection(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for point lookups only (statements marked with ``point_lookup``)."""
        held = self._held
        if held is None or held.closed or held.invalidated:
            return read_connection(self._engine)
        return _Held(held)


class _Held:
    """The held connection, lent for one command's lookups.

    Nothing to end afterwards: SQLAlchemy's autobegun transaction on it is bookkeeping only, since pysqlite
    begins no transaction for a SELECT, so every lookup reads the latest commit. Database failures surface
    as UNAVAILABLE, as from a pooled read.
    """

    __slots__ = ("_conn",)

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def __aenter__(self) -> AsyncConnection:
        return self._conn

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        if exc is not None and (unavailable := translate_db_error(exc)) is not None:
            raise unavailable from exc
