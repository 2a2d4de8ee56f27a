"""Worker settings from the environment (names as in CONTRACT.md), an optional ``.env``, embedded defaults."""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from contracts import topology

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./.data/storage.db"
DEFAULT_STORAGE_ROOT = "file://./.data"
MiB = 1024 * 1024


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    amqp_url: str = Field(default=topology.DEFAULT_AMQP_URL, validation_alias=_env("AMQP_URL"))
    exchange: str = Field(default=topology.EXCHANGE, validation_alias=_env("STORAGE_EXCHANGE"))
    queue: str = Field(default=topology.COMMAND_QUEUE, validation_alias=_env("STORAGE_QUEUE"))
    dlq: str = Field(default=topology.DLQ, validation_alias=_env("STORAGE_DLQ"))
    node_name: str = Field(default=topology.NODE_NAME, validation_alias=_env("STORAGE_NODE_NAME"))
    database_url: str = Field(default=DEFAULT_DATABASE_URL, validation_alias=_env("DATABASE_URL"))
    storage_root: str = Field(default=DEFAULT_STORAGE_ROOT, validation_alias=_env("STORAGE_ROOT"))

    max_message_bytes: int = Field(default=MiB, ge=1024, validation_alias=_env("STORAGE_MAX_MESSAGE_BYTES"))
    max_file_bytes: int = Field(default=10 * MiB, ge=0, validation_alias=_env("STORAGE_MAX_FILE_BYTES"))
    max_reply_bytes: int = Field(default=4 * MiB, ge=16 * 1024, validation_alias=_env("STORAGE_MAX_REPLY_BYTES"))
    """No reply is larger: pages are cut short (``next_cursor`` set), anything else too large is an ERROR."""
    read_timeout_ms: int = Field(default=5000, ge=1, validation_alias=_env("STORAGE_READ_TIMEOUT_MS"))
    """How long one read statement may run before it is stopped (DEADLINE_EXCEEDED, not retryable)."""
    trust_body_identity: bool = Field(default=True, validation_alias=_env("STORAGE_TRUST_BODY_IDENTITY"))
    admins: Annotated[frozenset[str], NoDecode] = Field(default=frozenset(), validation_alias=_env("STORAGE_ADMINS"))

    prefetch: int = Field(default=200, ge=1, le=65535, validation_alias=_env("STORAGE_PREFETCH"))
    write_batch_max: int = Field(default=256, ge=1, validation_alias=_env("STORAGE_WRITE_BATCH_MAX"))
    write_gather_ms: float = Field(default=2.0, ge=0, le=1000, validation_alias=_env("STORAGE_WRITE_GATHER_MS"))
    """Under load, how long a group of writes stays open for the writes of other commands in the worker."""
    cleanup_interval_s: float = Field(default=3600, ge=0, validation_alias=_env("STORAGE_CLEANUP_INTERVAL"))
    cleanup_batch: int = Field(default=500, ge=1, validation_alias=_env("STORAGE_CLEANUP_BATCH"))
    purge_after_s: float = Field(default=30 * 86400, ge=0, validation_alias=_env("STORAGE_PURGE_AFTER"))
    inbox_retention_s: float = Field(default=7 * 86400, ge=0, validation_alias=_env("STORAGE_INBOX_RETENTION"))
    shutdown_grace_s: float = Field(default=10, ge=0, validation_alias=_env("STORAGE_SHUTDOWN_GRACE"))
    heartbeat_interval_s: float = Field(default=10, gt=0, validation_alias=_env("STORAGE_HEARTBEAT_INTERVAL"))
    metrics_port: int | None = Field(default=None, ge=0, le=65535, validation_alias=_env("STORAGE_METRICS_PORT"))
    migrate_on_start: bool = Field(default=False, validation_alias=_env("STORAGE_MIGRATE_ON_START"))
    log_format: str = Field(default="text", pattern="^(text|json)$", validation_alias=_env("STORAGE_LOG_FORMAT"))
    log_level: str = Field(default="INFO", validation_alias=_env("STORAGE_LOG_LEVEL"))
    metrics_host: str = Field(default="0.0.0.0", validation_alias=_env("STORAGE_METRICS_HOST"))
    command_log: bool = Field(default=True, validation_alias=_env("STORAGE_COMMAND_LOG"))
    node_registry: bool = Field(default=True, validation_alias=_env("STORAGE_NODE_REGISTRY"))
    otel: bool = Field(default=False, validation_alias=_env("STORAGE_OTEL"))
    event_loop: str = Field(
        default="auto", pattern="^(auto|uvloop|asyncio)$", validation_alias=_env("STORAGE_EVENT_LOOP")
    )

    @field_validator("admins", mode="before")
    @classmethod
    def _split_admins(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def dlx(self) -> str:
        return topology.dlx_name(self.exchange)

    @property
    def routing_keys(self) -> tuple[str, str]:
        return topology.ROUTING_KEY_ANY, topology.node_routing_key(self.node_name)
