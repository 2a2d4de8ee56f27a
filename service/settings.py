"""Worker settings: the environment (names as in docs/contract.md §1), an optional ``.env``, embedded defaults."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from contracts import topology
from service.retention_defaults import DefaultRetention

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./.data/storage.db"
DEFAULT_STORAGE_ROOT = "file://./.data"
MiB = 1024 * 1024


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, use_attribute_docstrings=True
    )

    amqp_url: str = Field(default=topology.DEFAULT_AMQP_URL, validation_alias=_env("AMQP_URL"))
    """The broker the worker consumes commands from and publishes replies and node events to."""
    exchange: str = Field(default=topology.EXCHANGE, validation_alias=_env("STORAGE_EXCHANGE"))
    """The topic exchange of commands and node events; its dead-letter exchange is ``<exchange>.dlx``."""
    queue: str = Field(default=topology.COMMAND_QUEUE, validation_alias=_env("STORAGE_QUEUE"))
    """The durable command queue bound to ``cmd.storage.any`` (priorities 0-255, dead-lettered); every worker of a
    pool consumes the same one. Each node also consumes its own ``<queue>.<node name>`` for ``cmd.storage.<node>``."""
    dlq: str = Field(default=topology.DLQ, validation_alias=_env("STORAGE_DLQ"))
    """Where refused messages end (oversize, not a command), bound to ``<exchange>.dlx``."""
    queue_type: str = Field(
        default="classic", pattern="^(classic|quorum)$", validation_alias=_env("STORAGE_QUEUE_TYPE")
    )
    """``classic``: the command queues keep priorities 0-255 and live on one broker node. ``quorum``: they (and
    the dead-letter queue) are replicated over a RabbitMQ cluster and survive the loss of a node, without
    priorities (RabbitMQ 3.10). A worker refuses to start against queues of the other type."""
    delivery_limit: int = Field(default=20, ge=1, validation_alias=_env("STORAGE_DELIVERY_LIMIT"))
    """Quorum queues only (``x-delivery-limit``): a command handed back to the queue this many times (a worker
    died or lost its connection holding it) is dead-lettered at the next return instead of delivered again."""
    node_name: str = Field(default=topology.NODE_NAME, validation_alias=_env("STORAGE_NODE_NAME"))
    """This worker's name, unique in a pool: its routing key ``cmd.storage.<name>`` and queue ``<queue>.<name>``,
    the target it answers, its registry events and CONTROL signals (``ctl.<name>.*``)."""
    database_url: str = Field(default=DEFAULT_DATABASE_URL, validation_alias=_env("DATABASE_URL"))
    """SQLAlchemy async URL: SQLite for one worker, ``postgresql+asyncpg://...`` for production and pools."""
    storage_root: str = Field(default=DEFAULT_STORAGE_ROOT, validation_alias=_env("STORAGE_ROOT"))
    """fsspec root holding ``artifacts/``, ``temp/`` and ``orphans/``; ``s3://bucket/prefix`` for S3 or MinIO."""

    max_message_bytes: int = Field(default=MiB, ge=1024, validation_alias=_env("STORAGE_MAX_MESSAGE_BYTES"))
    """Larger command bodies are answered INVALID_ARGUMENT and dead-lettered."""
    max_file_bytes: int = Field(default=10 * MiB, ge=0, validation_alias=_env("STORAGE_MAX_FILE_BYTES"))
    """Larger artifact files are refused (OUT_OF_RANGE, the limit in the details)."""
    trace_max_artifacts: int | None = Field(default=None, ge=1, validation_alias=_env("STORAGE_TRACE_MAX_ARTIFACTS"))
    """Live artifacts one trace may hold; a registration beyond it is RESOURCE_EXHAUSTED (``trace_quota``,
    final). Unset: unlimited."""
    trace_max_bytes: int | None = Field(default=None, ge=1, validation_alias=_env("STORAGE_TRACE_MAX_BYTES"))
    """Bytes (sum of ``size_bytes``) the live artifacts of one trace may hold, as ``STORAGE_TRACE_MAX_ARTIFACTS``.
    Unset: unlimited."""
    max_reply_bytes: int = Field(default=4 * MiB, ge=16 * 1024, validation_alias=_env("STORAGE_MAX_REPLY_BYTES"))
    """No reply is larger: pages are cut short (``next_cursor`` set), anything else too large is an ERROR."""
    read_timeout_ms: int = Field(default=5000, ge=1, validation_alias=_env("STORAGE_READ_TIMEOUT_MS"))
    """How long one read statement may run before it is stopped (DEADLINE_EXCEEDED, not retryable)."""
    trust_body_identity: bool = Field(default=True, validation_alias=_env("STORAGE_TRUST_BODY_IDENTITY"))
    """Without an AMQP ``user_id``, take the requester from ``context.requester_id`` or ``source``; false: such a
    command is anonymous (public data only)."""
    admins: Annotated[frozenset[str], NoDecode] = Field(default=frozenset(), validation_alias=_env("STORAGE_ADMINS"))
    """Comma list of broker users (AMQP ``user_id``) with admin rights: ``delete_artifact``, ``cleanup``, every
    agent's data."""

    prefetch: int = Field(default=200, ge=1, le=65535, validation_alias=_env("STORAGE_PREFETCH"))
    """Unacked commands a worker holds at once."""
    write_batch_max: int = Field(default=256, ge=1, validation_alias=_env("STORAGE_WRITE_BATCH_MAX"))
    """Most writes one group commit takes."""
    write_gather_ms: float = Field(default=2.0, ge=0, le=1000, validation_alias=_env("STORAGE_WRITE_GATHER_MS"))
    """Under load, how long a group of writes stays open for the writes of other commands in the worker."""
    cleanup_interval_s: float = Field(default=3600, ge=0, validation_alias=_env("STORAGE_CLEANUP_INTERVAL"))
    """Seconds between the worker's periodic cleanups; 0 turns them off."""
    cleanup_batch: int = Field(default=500, ge=1, validation_alias=_env("STORAGE_CLEANUP_BATCH"))
    """Rows a cleanup scope handles per short transaction, so commands keep flowing."""
    verify_batch: int = Field(default=200, ge=1, validation_alias=_env("STORAGE_VERIFY_BATCH"))
    """Most artifact files the ``verify_checksums`` cleanup scope re-hashes per run (oldest-verified first)."""
    verify_max_bytes: int = Field(default=1024 * MiB, ge=1, validation_alias=_env("STORAGE_VERIFY_MAX_BYTES"))
    """Most bytes ``verify_checksums`` reads per run (a larger file is still read, alone in its run)."""
    default_retention: str = Field(
        default="*=infinite",
        examples=["report=30d,cache=1h,*=infinite"],
        validation_alias=_env("STORAGE_DEFAULT_RETENTION"),
    )
    """Retention for a manifest that names none, by artifact type: ``report=30d,cache=1h,*=infinite`` (``*``: every
    other type). The stored and returned manifest shows the retention applied."""
    purge_after_s: float = Field(default=30 * 86400, ge=0, validation_alias=_env("STORAGE_PURGE_AFTER"))
    """Soft-deleted threads, trimmed or cleared messages and deleted artifacts older than this are purged; until
    then ``restore_artifact`` brings a deleted artifact back."""
    inbox_retention_s: float = Field(default=7 * 86400, ge=0, validation_alias=_env("STORAGE_INBOX_RETENTION"))
    """Inbox records (the stored replies that answer duplicates and retries) older than this are removed."""
    changes_retention_s: float = Field(default=7 * 86400, ge=0, validation_alias=_env("STORAGE_CHANGES_RETENTION"))
    """Published change events older than this leave the change log (cleanup scope ``changes``): a
    ``changes_since`` cursor from before them is OUT_OF_RANGE, and its agent resyncs with the listings."""
    shutdown_grace_s: float = Field(default=10, ge=0, validation_alias=_env("STORAGE_SHUTDOWN_GRACE"))
    """Seconds in-flight commands get to finish on SIGTERM."""
    heartbeat_interval_s: float = Field(default=10, gt=0, validation_alias=_env("STORAGE_HEARTBEAT_INTERVAL"))
    """Seconds between ``evt.node.heartbeat`` events."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535, validation_alias=_env("STORAGE_METRICS_PORT"))
    """Port of Prometheus ``/metrics`` and ``/healthz``; unset: no metrics server."""
    migrate_on_start: bool = Field(default=False, validation_alias=_env("STORAGE_MIGRATE_ON_START"))
    """Upgrade the schema before consuming (an empty SQLite database is always created)."""
    log_format: str = Field(default="text", pattern="^(text|json)$", validation_alias=_env("STORAGE_LOG_FORMAT"))
    """``json`` for one JSON object per line."""
    log_level: str = Field(default="INFO", validation_alias=_env("STORAGE_LOG_LEVEL"))
    """Level of the worker's logs; WARNING also silences the per-command line."""
    metrics_host: str = Field(default="0.0.0.0", validation_alias=_env("STORAGE_METRICS_HOST"))
    """Address the metrics server listens on."""
    command_log: bool = Field(default=True, validation_alias=_env("STORAGE_COMMAND_LOG"))
    """One log line per command (logger ``service.commands``)."""
    node_registry: bool = Field(default=True, validation_alias=_env("STORAGE_NODE_REGISTRY"))
    """Publish the ``evt.node.*`` registry events."""
    otel: bool = Field(default=False, validation_alias=_env("STORAGE_OTEL"))
    """OpenTelemetry tracing (needs the ``telemetry`` extra); also on when a standard ``OTEL_*`` exporter variable
    is set."""
    event_loop: str = Field(
        default="auto", pattern="^(auto|uvloop|asyncio)$", validation_alias=_env("STORAGE_EVENT_LOOP")
    )
    """``auto``: uvloop when installed, else asyncio."""

    @field_validator("node_name")
    @classmethod
    def _check_node_name(cls, value: str) -> str:
        return topology.check_node_name(value)

    @field_validator("admins", mode="before")
    @classmethod
    def _split_admins(cls, value: object) -> object:
        return topology.admin_names(value)

    @field_validator("default_retention")
    @classmethod
    def _check_default_retention(cls, value: str) -> str:
        return str(DefaultRetention.parse(value))

    @cached_property
    def retention_defaults(self) -> DefaultRetention:
        """``default_retention`` parsed once (the validator has already refused what does not parse)."""
        return DefaultRetention.parse(self.default_retention)

    @property
    def dlx(self) -> str:
        return topology.dlx_name(self.exchange)

    @property
    def node_queue(self) -> str:
        """This node's own command queue: only ``cmd.storage.<node>`` reaches it, so only this node answers it."""
        return topology.node_queue_name(self.queue, self.node_name)

    @property
    def routing_keys(self) -> tuple[str, str]:
        return topology.ROUTING_KEY_ANY, topology.node_routing_key(self.node_name)
