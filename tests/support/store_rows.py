"""What a worker's database holds, read over SQLAlchemy on either database: the two questions ``StoreView``
answers for a SQLite file (artifact rows, inbox records per idempotency key), for a worker on PostgreSQL too."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select

from service.store.engine.db import create_engine
from service.store.models import Artifact, InboxRecord


@dataclass(frozen=True)
class StoreRows:
    action: str
    rows: dict[str, tuple[str, str, str]]
    keys: Counter[str]

    def artifacts(self) -> dict[str, tuple[str, str, str]]:
        """id → (uri, checksum, status)."""
        return self.rows

    def inbox_by_key(self, action: str) -> Counter[str]:
        """Inbox records per idempotency key of ``action`` (the one read)."""
        assert action == self.action, f"read the inbox of {self.action}, not {action}"
        return self.keys


async def read_store(database_url: str, action: str = "register_artifact") -> StoreRows:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            artifacts = await conn.execute(select(Artifact.id, Artifact.uri, Artifact.checksum, Artifact.status))
            keys = await conn.execute(
                select(InboxRecord.idempotency_key).where(
                    InboxRecord.action == action, InboxRecord.idempotency_key.is_not(None)
                )
            )
            return StoreRows(
                action,
                {str(r.id): (str(r.uri), str(r.checksum), str(r.status)) for r in artifacts},
                Counter(str(key) for (key,) in keys),
            )
    finally:
        await engine.dispose()
