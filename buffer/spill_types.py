"""What the spill buffer hands out: listed entries, checked items, its counters and an operator's status."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from buffer._format import BlobInfo
from contracts import CommandEnvelope

DEFAULT_DIR = ".data/buffer"
DEFAULT_MAX_ITEMS = 1000
DEFAULT_MAX_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Entry:
    """A pending file as listed, not yet read."""

    path: Path
    seq: int
    size: int
    """Bytes on disk: the command file plus its file copy, if any."""
    blob: Path | None = None
    """The file copy beside the command, when one was listed."""

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True, slots=True)
class Item:
    """A pending command, read and checked."""

    entry: Entry
    envelope: CommandEnvelope
    spilled_at: datetime
    reason: str | None
    blob: Path | None = None
    """The copy of the artifact's bytes kept with a ``register_artifact`` (None: the command alone)."""
    blob_info: BlobInfo | None = None
    user_id: str | None = None
    """The AMQP ``user_id`` it was sent with (None: none): only a client connected as that user replays it."""

    @property
    def action(self) -> str:
        return self.envelope.data.action


@dataclass(slots=True)
class Counters:
    """What happened in this process; ``status()`` reports what is on disk."""

    spilled: int = 0
    evicted: int = 0
    quarantined: int = 0
    replayed: int = 0
    failed: int = 0
    copies_kept: int = 0
    """Registrations spilled with a copy of their file's bytes."""
    restaged: int = 0
    """Files put back from a copy before a replay because the staged one was gone."""


@dataclass(frozen=True, slots=True)
class FailedItem:
    name: str
    action: str | None
    error: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BufferStatus:
    directory: Path
    pending: int
    pending_bytes: int
    by_action: dict[str, int]
    oldest: datetime | None
    newest: datetime | None
    quarantined: int
    failed: list[FailedItem] = field(default_factory=list)
    max_items: int = DEFAULT_MAX_ITEMS
    max_bytes: int = DEFAULT_MAX_BYTES

    def as_dict(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "pending": self.pending,
            "pending_bytes": self.pending_bytes,
            "by_action": self.by_action,
            "oldest": self.oldest.isoformat() if self.oldest else None,
            "newest": self.newest.isoformat() if self.newest else None,
            "quarantined": self.quarantined,
            "failed": [{"name": f.name, "action": f.action, "error": f.error} for f in self.failed],
            "max_items": self.max_items,
            "max_bytes": self.max_bytes,
        }
