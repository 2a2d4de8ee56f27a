"""Read a worker's SQLite database from the test, read-only, while the worker may still be writing."""

from __future__ import annotations

import sqlite3
from collections import Counter
from contextlib import closing
from pathlib import Path


class StoreView:
    def __init__(self, db_file: Path) -> None:
        self.db_file = db_file

    def _query(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        uri = f"file:{self.db_file}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=30)) as conn:
            return conn.execute(sql, args).fetchall()

    def artifact_ids(self) -> Counter[str]:
        return Counter(str(row[0]) for row in self._query("SELECT id FROM artifacts"))

    def artifacts(self) -> dict[str, tuple[str, str, str]]:
        """id → (uri, checksum, status)."""
        rows = self._query("SELECT id, uri, checksum, status FROM artifacts")
        return {str(r[0]): (str(r[1]), str(r[2]), str(r[3])) for r in rows}

    def inbox_by_key(self, action: str) -> Counter[str]:
        rows = self._query("SELECT idempotency_key FROM inbox WHERE action = ? AND idempotency_key IS NOT NULL", action)
        return Counter(str(row[0]) for row in rows)

    def inbox_ids(self, action: str) -> Counter[str]:
        return Counter(str(row[0]) for row in self._query("SELECT id FROM inbox WHERE action = ?", action))

    def stored_reply(self, envelope_id: str) -> tuple[str, str] | None:
        """(reply id, reply data JSON) as committed for a command."""
        rows = self._query("SELECT reply_id, reply_data FROM inbox WHERE id = ?", envelope_id)
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    def count(self, table: str) -> int:
        return int(self._query(f"SELECT count(*) FROM {table}")[0][0])  # table names are ours, never input
