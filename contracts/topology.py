"""Names on the bus. Defaults only: every one is overridable by the worker's settings."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"
EXCHANGE = "ai_team"
DLX_EXCHANGE = "ai_team.dlx"
COMMAND_QUEUE = "storage.commands"
DLQ = "storage.dlq"
NODE_NAME = "storage-primary"
NODE_TYPE = "storage"
MAX_PRIORITY = 255

ROUTING_KEY_ANY = "cmd.storage.any"

EVT_NODE_REGISTERED = "evt.node.registered"
EVT_NODE_HEARTBEAT = "evt.node.heartbeat"
EVT_NODE_DEREGISTERED = "evt.node.deregistered"
EVT_STORAGE_QUOTA_WARNING = "evt.storage.quota_warning"
"""A trace reached 80% of a quota (``contracts.quotas.QuotaWarning``), published once per trace."""

PRIORITY_REPLY = 20
PRIORITY_NODE_LIFECYCLE = 10
PRIORITY_HEARTBEAT = 5
PRIORITY_STORAGE_EVENT = 10


def node_routing_key(node_name: str) -> str:
    """The routing key that addresses one storage node rather than any of them."""
    return f"cmd.storage.{node_name}"


NODE_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
RESERVED_NODE_NAMES = frozenset({"any", "all", NODE_TYPE})
"""Words that already address more than one node: ``cmd.storage.any``, ``ctl.all.*`` and ``ctl.storage.*``."""


def check_node_name(name: str) -> str:
    """A node name is one routing-key word that addresses this node alone; anything else is a ValueError."""
    if not NODE_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"node name {name!r} must be 1-100 letters, digits, '-' or '_' (one word of a routing key), "
            "starting with a letter or digit"
        )
    if name.lower() in RESERVED_NODE_NAMES:
        raise ValueError(f"node name {name!r} is reserved: it addresses every storage node")
    return name


def node_queue_name(queue: str, node_name: str) -> str:
    """The durable queue of one node's targeted commands (``cmd.storage.<node>``), beside the shared ``queue``."""
    return f"{queue}.{node_name}"


def dlx_name(exchange: str) -> str:
    """The dead-letter exchange that belongs to a main exchange."""
    return f"{exchange}.dlx"


def broker_user(amqp_url: str) -> str:
    """The user an AMQP URL logs in as (aio-pika's default is guest): the one ``user_id`` RabbitMQ accepts on a
    connection made with it, so the broker-validated identity of whoever uses that URL."""
    return unquote(urlsplit(amqp_url).username or "") or "guest"


def admin_names(value: object) -> object:
    """``STORAGE_ADMINS`` as written ("ops, console"): comma-separated broker user names, as a set; anything
    else (a set from code) is passed on for the settings model to check."""
    if isinstance(value, str):
        return frozenset(part.strip() for part in value.split(",") if part.strip())
    return value
