"""(2) The naive peer: the straightforward FastStream handler with an SQLAlchemy ORM session per message.

This is how the service is usually first written, and it is written here in good faith: a typed
FastStream subscriber validates the envelope, the handler opens an ``AsyncSession``, does its work with
the ORM and commits once per message; the return value is the reply FastStream publishes (persistent,
like ours). The engine is SQLAlchemy's default for the URL (on SQLite: the rollback journal with
``synchronous=FULL``, as durable as our WAL with ``synchronous=FULL``), with an index on what it queries.
It is spared FastStream's default per-message log lines (logger off, as ours). What it lacks is what our
worker is built around: group commit, Core statements, a lean decode/reply path.

Its indexes are one per queried column, as written first. ``indexed=True`` adds the one composite index a
careful developer adds once listing a large trace shows up in a profile, ``(trace_id, created_at, id)``:
the listing then reads its page from the index instead of sorting the whole trace on every call.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from faststream.rabbit import Channel, ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue, RabbitResponse
from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bench.common import PREFETCH, ROUTING_KEY, Names, serve_until_terminated
from contracts import (
    CommandEnvelope,
    GetArtifactParams,
    ListArtifactsParams,
    RegisterArtifactParams,
    SaveThreadParams,
    topology,
)


class Base(DeclarativeBase):
    pass


class NaiveArtifact(Base):
    __tablename__ = "naive_artifacts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    trace_id: Mapped[str] = mapped_column(String(255), index=True)
    owner: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    uri: Mapped[str] = mapped_column(String(2048))
    checksum: Mapped[str] = mapped_column(String(71))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)


LISTING_INDEX = text(
    "CREATE INDEX IF NOT EXISTS ix_naive_artifacts_trace_created_id ON naive_artifacts (trace_id, created_at, id)"
)
"""Not part of the models: created only for the ``naive-indexed`` form."""


class NaiveThread(Base):
    __tablename__ = "naive_threads"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class NaiveMessage(Base):
    __tablename__ = "naive_messages"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    thread_id: Mapped[str] = mapped_column(ForeignKey("naive_threads.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class NotFoundError(LookupError):
    pass


async def register_artifact(session: AsyncSession, params: dict[str, Any], root: Path) -> dict[str, Any]:
    manifest = RegisterArtifactParams.model_validate(params).manifest
    existing = await session.get(NaiveArtifact, manifest.id)
    if existing is not None:
        return {"artifact_id": existing.id, "registered": False, "already_exists": True, "manifest": existing.manifest}
    source = Path(unquote(urlsplit(manifest.uri).path))
    dest = root / "artifacts" / manifest.trace_id / f"{manifest.id}.bin"
    await asyncio.to_thread(_verify_and_move, source, dest, manifest.size_bytes, manifest.checksum)
    wire = manifest.model_dump(mode="json") | {"status": "completed", "uri": dest.as_uri()}
    session.add(
        NaiveArtifact(
            id=manifest.id,
            trace_id=manifest.trace_id,
            owner=manifest.owner,
            created_at=manifest.created_at,
            uri=wire["uri"],
            checksum=manifest.checksum,
            manifest=wire,
        )
    )
    return {"artifact_id": manifest.id, "registered": True, "already_exists": False, "manifest": wire}


def _verify_and_move(source: Path, dest: Path, size: int, checksum: str) -> None:
    data = source.read_bytes()
    if len(data) != size or "sha256:" + hashlib.sha256(data).hexdigest() != checksum:
        raise ValueError("file does not match the manifest")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, dest)


async def get_artifact(session: AsyncSession, params: dict[str, Any], root: Path) -> dict[str, Any]:
    artifact_id = GetArtifactParams.model_validate(params).artifact_id
    row = await session.get(NaiveArtifact, artifact_id)
    if row is None:
        raise NotFoundError(artifact_id)
    return {"artifact_id": row.id, "manifest": row.manifest}


async def list_artifacts(session: AsyncSession, params: dict[str, Any], root: Path) -> dict[str, Any]:
    p = ListArtifactsParams.model_validate(params)
    query = select(NaiveArtifact).order_by(NaiveArtifact.created_at.desc()).limit(p.limit)
    if p.trace_id is not None:
        query = query.where(NaiveArtifact.trace_id == p.trace_id)
    rows = (await session.scalars(query)).all()
    return {"count": len(rows), "artifacts": [row.manifest for row in rows], "next_cursor": None}


async def save_thread(session: AsyncSession, params: dict[str, Any], root: Path) -> dict[str, Any]:
    p = SaveThreadParams.model_validate(params)
    now = datetime.now(UTC)
    thread = await session.get(NaiveThread, p.thread_id)
    if thread is None:
        thread = NaiveThread(id=p.thread_id, version=1, updated_at=now)
        session.add(thread)
        # Without a relationship() the unit of work may insert the messages first: PostgreSQL enforces the
        # foreign key (SQLite, without PRAGMA foreign_keys, does not), so the new thread goes in first.
        await session.flush()
    else:
        thread.version += 1
        thread.updated_at = now
    ids = []
    for message in p.messages:
        message_id = str(message.id or uuid.uuid4())
        ids.append(message_id)
        session.add(
            NaiveMessage(
                id=message_id,
                thread_id=p.thread_id,
                role=message.role.value,
                content=message.content,
                created_at=message.created_at or now,
            )
        )
    return {"thread_id": p.thread_id, "version": thread.version, "message_ids": ids, "inserted": len(ids)}


ACTIONS: dict[str, Callable[[AsyncSession, dict[str, Any], Path], Awaitable[dict[str, Any]]]] = {
    "register_artifact": register_artifact,
    "get_artifact": get_artifact,
    "list_artifacts": list_artifacts,
    "save_thread": save_thread,
}


async def start(
    amqp_url: str, names: Names, database_url: str, storage_root: str, indexed: bool = False
) -> Callable[[], Awaitable[None]]:
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        if indexed:
            await conn.execute(LISTING_INDEX)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    root = Path(unquote(urlsplit(storage_root).path))

    broker = RabbitBroker(amqp_url, default_channel=Channel(prefetch_count=PREFETCH), logger=None)
    queue = RabbitQueue(
        names.queue,
        durable=True,
        arguments={"x-max-priority": topology.MAX_PRIORITY, "x-dead-letter-exchange": names.dlx},
        routing_key=ROUTING_KEY,
    )
    exchange = RabbitExchange(names.exchange, type=ExchangeType.TOPIC, durable=True)

    @broker.subscriber(queue, exchange)
    async def handle(command: CommandEnvelope) -> RabbitResponse:
        started = time.monotonic()
        try:
            async with sessions() as session, session.begin():
                output = await ACTIONS[command.data.action](session, command.data.params, root)
            data: dict[str, Any] = {"status": "SUCCESS", "output": output}
            reply_type = "ai.team.result"
        except (NotFoundError, ValueError, IntegrityError, KeyError) as exc:
            data = {"error": {"code": "INVALID_ARGUMENT", "message": repr(exc), "retryable": False, "details": {}}}
            reply_type = "ai.team.error"
        except SQLAlchemyError as exc:  # "database is locked" and the like: the sender may retry
            data = {"error": {"code": "UNAVAILABLE", "message": repr(exc)[:200], "retryable": True, "details": {}}}
            reply_type = "ai.team.error"
        data["execution_time_ms"] = int((time.monotonic() - started) * 1000)
        reply = {
            "specversion": "1.0",
            "type": reply_type,
            "source": "naive-storage",
            "id": str(uuid.uuid4()),
            "time": datetime.now(UTC).isoformat(),
            "correlationid": command.id,
            "data": data,
        }
        return RabbitResponse(reply, persist=True, priority=topology.PRIORITY_REPLY)

    await broker.start()

    async def stop() -> None:
        await broker.stop()
        await engine.dispose()

    return stop


def main(amqp_url: str, names: Names, database_url: str, storage_root: str, indexed: bool, ready: Connection) -> None:
    serve_until_terminated(lambda: start(amqp_url, names, database_url, storage_root, indexed), ready)
