"""CONTROL signals of the MindBus protocol: ``ctl.{target}.{scope}``, priority 255, type ``ai.team.control``.

An operator (an admin broker identity: the AMQP ``user_id`` the broker validated) tells every node
(``ctl.all.*``), every storage node (``ctl.storage.*``) or one node (``ctl.<node name>.*``) to pause, resume,
shut down, re-read its live settings or stop a running cleanup. Signals are not commands: nothing answers
them; a node reports its state in its heartbeats. A signal from anyone else is logged and dropped.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal

from pydantic import Field

from contracts.envelope import CloudEvent, _Model
from contracts.topology import NODE_TYPE

CONTROL_TYPE: Final = "ai.team.control"
PRIORITY_CONTROL: Final = 255
CONTROL_PREFIX: Final = "ctl."
TARGET_ALL: Final = "all"


class ControlScope(StrEnum):
    PAUSE = "pause"
    """Stop taking commands (those in flight finish); heartbeats and ``/healthz`` report ``paused``."""
    RESUME = "resume"
    SHUTDOWN = "shutdown"
    """A graceful stop, as on SIGTERM."""
    CONFIG = "config"
    """Re-read the settings that can change live (admins, log level, cleanup interval); log what changed."""
    STOP = "stop"
    """Cancel a running cleanup (batches already committed stay)."""


class ControlData(_Model):
    reason: str | None = Field(default=None, max_length=1000)
    """Why, for the node's log."""


class ControlEnvelope(CloudEvent):
    type: Literal["ai.team.control"] = CONTROL_TYPE
    data: ControlData = Field(default_factory=ControlData)


def control_routing_key(target: str, scope: ControlScope) -> str:
    """``ctl.<target>.<scope>``: target ``all``, ``storage`` or a node name."""
    return f"{CONTROL_PREFIX}{target}.{scope.value}"


def control_bindings(node_name: str) -> tuple[str, str, str]:
    """The patterns a storage node hears: every node, every storage node, this node."""
    return f"{CONTROL_PREFIX}{TARGET_ALL}.*", f"{CONTROL_PREFIX}{NODE_TYPE}.*", f"{CONTROL_PREFIX}{node_name}.*"


def parse_control_key(routing_key: str) -> tuple[str, ControlScope] | None:
    """``(target, scope)`` of a control routing key, or None when it is not one (an unknown scope too)."""
    parts = routing_key.split(".")
    if len(parts) != 3 or parts[0] + "." != CONTROL_PREFIX:
        return None
    try:
        return parts[1], ControlScope(parts[2])
    except ValueError:
        return None
