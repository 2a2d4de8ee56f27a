"""Reading the pre-worker MindBus storage layout: ``DIR/storage.db`` and ``DIR/artifacts/<trace>/<id>_<name>``.

The legacy ``artifacts`` table has the manifest's columns with upper-case enum names, naive UTC datetimes
and ``context`` as JSON text. It is opened read-only: an import never changes what it reads.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DB_NAME = "storage.db"
FILES_DIR = "artifacts"
TABLE = "artifacts"
REQUIRED_COLUMNS = frozenset({"id", "uri", "checksum", "size_bytes"})
FETCH_ROWS = 500

LegacyValue = str | int | float | bytes | None
"""What a SQLite column holds."""
LegacyRow = dict[str, LegacyValue]


class NotLegacyLayout(Exception):
    """DIR is not a legacy storage directory; the message says what is missing."""


@contextmanager
def open_legacy(root: Path) -> Iterator[sqlite3.Connection]:
    """The legacy database, read-only, after checking the layout is the one this importer knows."""
    db = root / DB_NAME
    if not db.is_file():
        raise NotLegacyLayout(f"{root} holds no {DB_NAME}: not a legacy MindBus storage directory")
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        columns = {row["name"] for row in conn.execute(f"PRAGMA table_info({TABLE})")}
        if not columns:
            raise NotLegacyLayout(f"{db} has no table {TABLE!r}")
        if missing := REQUIRED_COLUMNS - columns:
            raise NotLegacyLayout(f"{db} table {TABLE!r} lacks the columns {', '.join(sorted(missing))}")
        yield conn
    except sqlite3.DatabaseError as exc:
        raise NotLegacyLayout(f"{db} is not a readable SQLite database: {exc}") from exc
    finally:
        conn.close()


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])


def has_column(conn: sqlite3.Connection, name: str) -> bool:
    return any(row["name"] == name for row in conn.execute(f"PRAGMA table_info({TABLE})"))


def rows(conn: sqlite3.Connection) -> Iterator[list[LegacyRow]]:
    """Every record in chunks, lowest version first: a predecessor is always imported before its successor."""
    order = ["version", "created_at", "id"] if has_column(conn, "created_at") else ["version", "id"]
    if not has_column(conn, "version"):
        order.remove("version")
    cursor = conn.execute(f"SELECT * FROM {TABLE} ORDER BY {', '.join(order)}")
    while chunk := cursor.fetchmany(FETCH_ROWS):
        yield [dict(row) for row in chunk]
