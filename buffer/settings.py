"""Client settings: keyword arguments first, then the environment (same names as the worker's where shared)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from buffer import retry, spill
from contracts import topology

DEFAULT_STORAGE_ROOT = "file://./.data"
DEFAULT_CALL_TIMEOUT_S = 10.0
DEFAULT_HEARTBEAT_S = 10.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0


_SWITCH = {
    "": False,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
}


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class ClientSettings(BaseSettings):
    """Everything an agent's storage client needs; ``StorageClient(**overrides)`` builds one."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, use_attribute_docstrings=True
    )

    amqp_url: str = Field(default=topology.DEFAULT_AMQP_URL, validation_alias=_env("AMQP_URL"))
    """The broker the worker consumes from; its user is the one ``user_id=True`` sends."""
    exchange: str = Field(default=topology.EXCHANGE, validation_alias=_env("STORAGE_EXCHANGE"))
    """The worker's topic exchange: commands are published there, node events are heard there."""
    target_node: str | None = Field(default=None, validation_alias=_env("STORAGE_TARGET_NODE"))
    """Send to ``cmd.storage.<node>`` instead of ``cmd.storage.any``."""
    agent_id: str = Field(default="agent", min_length=1, validation_alias=_env("STORAGE_AGENT_ID"))
    """The envelope ``source``: the agent's identity unless the broker's ``user_id`` says otherwise."""
    storage_root: str = Field(default=DEFAULT_STORAGE_ROOT, validation_alias=_env("STORAGE_ROOT"))
    """The worker's fsspec root, as this agent reaches it: uploads are staged under its ``temp/``."""
    user_id: bool | str = Field(default=False, validation_alias=_env("STORAGE_USER_ID"))
    """Send the AMQP ``user_id`` property: true = the user of ``AMQP_URL``, a name = that name (RabbitMQ accepts
    only the connection's own user). The worker then acts for this broker-validated identity, the only one that
    can hold admin rights (``STORAGE_ADMINS``)."""

    buffer_dir: Path = Field(default=Path(spill.DEFAULT_DIR), validation_alias=_env("STORAGE_BUFFER_DIR"))
    """The spill buffer: writes that could not be delivered wait here, one fsynced file per command."""
    buffer_max_items: int = Field(
        default=spill.DEFAULT_MAX_ITEMS, ge=1, validation_alias=_env("STORAGE_BUFFER_MAX_ITEMS")
    )
    """Most commands the buffer keeps; beyond it the oldest is evicted with a warning."""
    buffer_max_bytes: int = Field(
        default=spill.DEFAULT_MAX_BYTES, ge=1, validation_alias=_env("STORAGE_BUFFER_MAX_BYTES")
    )
    """Most bytes the buffer keeps (commands and file copies); beyond it the oldest is evicted with a warning."""
    heartbeat_s: float = Field(default=DEFAULT_HEARTBEAT_S, gt=0, validation_alias=_env("STORAGE_BUFFER_HEARTBEAT"))
    """How often buffered commands are replayed (also on start and when a storage node announces itself)."""
    keep_order: bool = Field(default=True, validation_alias=_env("STORAGE_BUFFER_KEEP_ORDER"))
    """While commands wait in the buffer, new writes queue behind them instead of overtaking."""

    call_timeout_s: float = Field(default=DEFAULT_CALL_TIMEOUT_S, gt=0, validation_alias=_env("STORAGE_CALL_TIMEOUT"))
    """How long one attempt waits for its reply; also the command's AMQP ``expiration``."""
    connect_timeout_s: float = Field(
        default=DEFAULT_CONNECT_TIMEOUT_S, gt=0, validation_alias=_env("STORAGE_CONNECT_TIMEOUT")
    )
    """How long one attempt to connect to the broker may take."""
    retries: int = Field(default=retry.DEFAULT_RETRIES, ge=0, validation_alias=_env("STORAGE_RETRIES"))
    """Attempts after the first for retryable failures; then a write is buffered, anything else raises."""
    retry_initial_s: float = Field(
        default=retry.DEFAULT_INITIAL_DELAY_S, ge=0, validation_alias=_env("STORAGE_RETRY_INITIAL")
    )
    """Wait before the first retry."""
    retry_multiplier: float = Field(
        default=retry.DEFAULT_MULTIPLIER, ge=1, validation_alias=_env("STORAGE_RETRY_MULTIPLIER")
    )
    """Each further wait is the previous one times this (5, 10, 20 s by default)."""
    retry_max_s: float = Field(default=retry.DEFAULT_MAX_DELAY_S, ge=0, validation_alias=_env("STORAGE_RETRY_MAX"))
    """Longest wait between two attempts."""

    @field_validator("user_id", mode="before")
    @classmethod
    def _user_id_switch(cls, value: object) -> object:
        """``STORAGE_USER_ID=true`` arrives as text: the usual switch words are the switch, anything else a name."""
        if isinstance(value, str) and value.strip().lower() in _SWITCH:
            return _SWITCH[value.strip().lower()]
        return value

    def broker_user_id(self) -> str | None:
        """The ``user_id`` every command is published with, or None when the option is off."""
        if self.user_id is False:
            return None
        if self.user_id is True:
            return topology.broker_user(self.amqp_url)
        return self.user_id

    def retry_policy(self) -> retry.RetryPolicy:
        return retry.RetryPolicy(
            retries=self.retries,
            initial_delay_s=self.retry_initial_s,
            multiplier=self.retry_multiplier,
            max_delay_s=self.retry_max_s,
        )

    def routing_key(self, target_node: str | None = None) -> str:
        node = target_node or self.target_node
        return topology.node_routing_key(node) if node else topology.ROUTING_KEY_ANY
