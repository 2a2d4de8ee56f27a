"""Build a legacy MindBus storage directory the way the in-process store left it, broken in every known way.

Layout: ``DIR/storage.db`` (table ``artifacts`` with the manifest's columns, upper-case enum names, naive
UTC datetimes, context as JSON text, UNIQUE checksum) and ``DIR/artifacts/<trace_id>/<id>_<name>``, the
URIs absolute ``file://`` ones from the machine that wrote them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

OLD_ROOT = "/home/mindbus/agents/.data"
SCHEMA = """
CREATE TABLE artifacts (
    id TEXT PRIMARY KEY, version INTEGER NOT NULL DEFAULT 1, trace_id TEXT NOT NULL, step_id TEXT,
    created_by TEXT NOT NULL, created_at TEXT NOT NULL, artifact_type TEXT NOT NULL, content_type TEXT,
    uri TEXT NOT NULL, size_bytes INTEGER NOT NULL, checksum TEXT NOT NULL UNIQUE, status TEXT NOT NULL,
    retention TEXT, owner TEXT, visibility TEXT NOT NULL, context TEXT, supersedes TEXT
)
"""
T0 = datetime(2024, 3, 1, 9, 30)


@dataclass(frozen=True)
class Good:
    legacy_id: str
    row: dict[str, Any]
    data: bytes


@dataclass
class Legacy:
    root: Path
    good: list[Good] = field(default_factory=list)
    broken: dict[str, list[str]] = field(default_factory=dict)
    """Skip reason → legacy ids expected to be skipped for it."""

    @property
    def total(self) -> int:
        return len(self.good) + sum(len(ids) for ids in self.broken.values())


class _Builder:
    def __init__(self, root: Path) -> None:
        self.legacy = Legacy(root)
        self.rows: list[dict[str, Any]] = []
        self.n = 0

    def record(self, *, legacy_id: str | None = None, data: bytes | None = None, **overrides: Any) -> dict[str, Any]:
        """A consistent record and its file; overrides then break it on purpose."""
        self.n += 1
        legacy_id = legacy_id or f"art_{uuid.uuid4()}"
        data = data if data is not None else f"artifact {self.n} of the legacy store\n".encode() * (1 + self.n % 5)
        trace = f"trace-{self.n % 7}"
        name = f"{legacy_id}_result-{self.n}.txt"
        row: dict[str, Any] = {
            "id": legacy_id,
            "version": 1,
            "trace_id": trace,
            "step_id": f"step-{self.n % 3}",
            "created_by": f"agent.worker.{self.n % 4}",
            "created_at": (T0 + timedelta(minutes=self.n, microseconds=self.n * 37)).isoformat(
                sep=" " if self.n % 2 else "T"
            ),
            "artifact_type": "report" if self.n % 2 else "dataset",
            "content_type": "text/plain",
            "uri": f"file://{OLD_ROOT}/artifacts/{trace}/{name}",
            "size_bytes": len(data),
            "checksum": "sha256:" + hashlib.sha256(data).hexdigest(),
            "status": "COMPLETED",
            "retention": "infinite" if self.n % 3 else "30d",
            "owner": f"agent.worker.{self.n % 4}" if self.n % 5 else None,
            "visibility": ("TRACE", "PRIVATE", "PUBLIC")[self.n % 3],
            "context": json.dumps(
                {"prompt_version": "v2", "model_name": "gpt-x", "model_params": {"temperature": 0.2, "max_tokens": 512}}
            ),
            "supersedes": None,
        }
        row.update(overrides)
        path = self.legacy.root / "artifacts" / trace / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.rows.append(row)
        return row

    def good(self, **overrides: Any) -> dict[str, Any]:
        row = self.record(**overrides)
        data = self.file_of(row).read_bytes()
        self.legacy.good.append(Good(row["id"], row, data))
        return row

    def broken(self, reason: str, **overrides: Any) -> dict[str, Any]:
        row = self.record(**overrides)
        self.legacy.broken.setdefault(reason, []).append(row["id"])
        return row

    def file_of(self, row: dict[str, Any]) -> Path:
        return self.legacy.root / "artifacts" / row["uri"].split("/artifacts/", 1)[1]

    def write_db(self) -> None:
        conn = sqlite3.connect(self.legacy.root / "storage.db")
        try:
            conn.execute(SCHEMA)
            columns = list(self.rows[0])
            conn.executemany(
                f"INSERT INTO artifacts ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
                [[row[c] for c in columns] for row in self.rows],
            )
            conn.commit()
        finally:
            conn.close()


def build(root: Path, *, good: int = 200, each_broken: int = 8, big_bytes: int | None = None) -> Legacy:
    """A legacy directory of ``good`` importable records plus ``each_broken`` records broken each way."""
    b = _Builder(root)
    for _ in range(good - 30):
        b.good()
    for i in range(10):  # ids the legacy store allowed but our pattern does not
        b.good(legacy_id=f"report-{i}" if i % 2 else f"ART_{uuid.uuid4()}".upper())
    for _ in range(10):  # version chains: v1, then v2 superseding it (a remapped id on some)
        first = b.good(legacy_id=f"chain-{b.n}" if b.n % 2 else None)
        b.good(version=2, supersedes=first["id"])
    fed = b.legacy.good[-1].row
    b.legacy.good.pop()  # rebuild the last good one with an input artifact that has a legacy id
    b.rows.remove(fed)
    b.good(context=json.dumps({"model_name": "gpt-x", "input_artifacts": ["report-1", fed["supersedes"]]}))

    for _ in range(each_broken):
        gone = b.broken("file_missing")
        b.file_of(gone).unlink()
        changed = b.broken("checksum_mismatch")
        path = b.file_of(changed)
        path.write_bytes(bytes(reversed(path.read_bytes())))  # same size, other bytes
        resized = b.broken("size_mismatch")
        b.file_of(resized).write_bytes(b.file_of(resized).read_bytes() + b"appended later")
        b.broken("invalid_record", status="ARCHIVED")
        b.broken("bad_uri", uri=f"s3://old-bucket/x/{uuid.uuid4()}.txt")
        missing_parent = b.broken("file_missing")
        b.file_of(missing_parent).unlink()
        b.broken("broken_chain", version=2, supersedes=missing_parent["id"])
    b.broken("invalid_record", context="{not json")
    b.broken("invalid_record", retention="until the heat death")
    b.broken("bad_uri", uri=f"file://{OLD_ROOT}/artifacts/../../etc/passwd")
    if big_bytes is not None:
        b.broken("too_large", data=b"B" * big_bytes)
    # reversal keeps the size; make sure it changed the bytes too
    for legacy_id in b.legacy.broken["checksum_mismatch"]:
        row = next(r for r in b.rows if r["id"] == legacy_id)
        if "sha256:" + hashlib.sha256(b.file_of(row).read_bytes()).hexdigest() == row["checksum"]:
            b.file_of(row).write_bytes(b"X" * row["size_bytes"])
    b.write_db()
    return b.legacy


def naive_utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
