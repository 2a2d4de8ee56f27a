"""The console's settings: the environment names the worker and the client already use where they are shared."""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from contracts import topology

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8088
DEFAULT_PAGE_SIZE = 50
DEFAULT_CALL_TIMEOUT_S = 10.0
DEFAULT_STALE_AFTER_S = 30.0


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class ConsoleSettings(BaseSettings):
    """Everything ``storage-worker console`` reads; ``ConsoleSettings(**overrides)`` for tests and embedding."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, use_attribute_docstrings=True
    )

    host: str = Field(default=DEFAULT_HOST, validation_alias=_env("STORAGE_CONSOLE_HOST"))
    """Address the web page listens on; loopback by default (put a TLS proxy in front to share it)."""
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535, validation_alias=_env("STORAGE_CONSOLE_PORT"))
    """Port of the web page (0: any free port, printed at start)."""
    token: SecretStr | None = Field(default=None, validation_alias=_env("STORAGE_CONSOLE_TOKEN"))
    """When set, every page asks for it: a login form that sets a cookie, or ``Authorization: Bearer <token>``."""

    amqp_url: str = Field(default=topology.DEFAULT_AMQP_URL, validation_alias=_env("AMQP_URL"))
    """The broker; its user is the identity the console acts as (sent as the AMQP ``user_id``)."""
    exchange: str = Field(default=topology.EXCHANGE, validation_alias=_env("STORAGE_EXCHANGE"))
    """The worker's topic exchange: commands, requeued dead letters and node events."""
    queue: str = Field(default=topology.COMMAND_QUEUE, validation_alias=_env("STORAGE_QUEUE"))
    """The shared command queue, for its depth and consumers."""
    dlq: str = Field(default=topology.DLQ, validation_alias=_env("STORAGE_DLQ"))
    """The dead-letter queue the ``/dlq`` page reads."""
    admins: Annotated[frozenset[str], NoDecode] = Field(default=frozenset(), validation_alias=_env("STORAGE_ADMINS"))
    """The worker's admin list: the console offers admin pages (dead letters, cleanup) when its broker user is on
    it. The worker checks every command itself; this only decides what the page shows."""
    metrics_url: str | None = Field(default=None, validation_alias=_env("STORAGE_CONSOLE_METRICS_URL"))
    """Where to read the command rate; default ``http://127.0.0.1:$STORAGE_METRICS_PORT/metrics`` when that is set."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535, validation_alias=_env("STORAGE_METRICS_PORT"))
    """The worker's metrics port, when it runs on this host."""
    call_timeout_s: float = Field(
        default=DEFAULT_CALL_TIMEOUT_S, gt=0, validation_alias=_env("STORAGE_CONSOLE_CALL_TIMEOUT")
    )
    """How long a page waits for the worker's reply before it shows an error."""
    page_size: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=500, validation_alias=_env("STORAGE_CONSOLE_PAGE_SIZE"))
    """Rows per page of every listing."""
    stale_after_s: float = Field(default=DEFAULT_STALE_AFTER_S, gt=0, validation_alias=_env("STORAGE_CONSOLE_STALE"))
    """A node whose last heartbeat is older than this (or three of its own intervals, if longer) is marked stale."""

    @field_validator("admins", mode="before")
    @classmethod
    def _split_admins(cls, value: object) -> object:
        return topology.admin_names(value)

    @property
    def broker_user(self) -> str:
        """The user of ``AMQP_URL`` (aio-pika's default is guest): the console's identity on the bus."""
        return topology.broker_user(self.amqp_url)

    @property
    def is_admin(self) -> bool:
        return self.broker_user in self.admins

    @property
    def metrics_endpoint(self) -> str | None:
        if self.metrics_url:
            return self.metrics_url
        return f"http://127.0.0.1:{self.metrics_port}/metrics" if self.metrics_port else None
