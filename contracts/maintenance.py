"""Params and outputs of the maintenance actions: cleanup, stats, ping."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from contracts._base import Output, Params


class CleanupScope(StrEnum):
    EXPIRED_ARTIFACTS = "expired_artifacts"
    EXPIRED_THREADS = "expired_threads"
    EXPIRED_MEMORY = "expired_memory"
    PURGE_DELETED = "purge_deleted"
    TEMP_ORPHANS = "temp_orphans"
    ORPHAN_FILES = "orphan_files"
    OLD_ORPHANS = "old_orphans"
    MISSING_FILES = "missing_files"
    STALE_UPLOADING = "stale_uploading"
    INBOX = "inbox"
    CHANGES = "changes"
    VERIFY_CHECKSUMS = "verify_checksums"


class CleanupParams(Params):
    dry_run: bool = False
    scopes: list[CleanupScope] | None = Field(default=None, description="all scopes when absent")


class CleanupOutput(Output):
    dry_run: bool
    counts: dict[str, int]


class GetStatsParams(Params):
    pass


class ArtifactStats(Output):
    total: int
    by_status: dict[str, int]
    by_type: dict[str, int]


class GetStatsOutput(Output):
    artifacts: ArtifactStats
    threads: int
    messages: int
    files: int
    inbox: int
    memory: dict[str, int] = Field(default_factory=dict, description="items per top-level namespace")
    node: str | None = Field(default=None, description="the storage node that answered (a pool shares the counts)")


class PingParams(Params):
    pass


class PingOutput(Output):
    node: str
    version: str
    uptime_seconds: float
