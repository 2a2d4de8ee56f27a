"""The AsyncAPI 3.0 document of the worker, generated from the app and the contract models.

FastStream describes what the app declares: the server, the command queue with its binding, and the
publishers of replies and node events. Its subscriber sees only raw messages, so the per-action messages
come from ``contracts.ACTIONS``: one message per action (the envelope with ``data.action`` fixed and
``data.params`` the action's params schema), the RESULT reply of each action, and the ERROR reply.

    python -m service.ops.asyncapi            # rewrite docs/asyncapi.json
    python -m service.ops.asyncapi --check    # exit 1 when the committed document is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from faststream.rabbit import RabbitBroker, RabbitQueue
from faststream.specification import AsyncAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from contracts import (
    ACTIONS,
    Change,
    ChangeKind,
    CommandEnvelope,
    ControlEnvelope,
    ErrorCode,
    ErrorEnvelope,
    EventEnvelope,
    ResultEnvelope,
    control_bindings,
    topology,
)
from service import __version__
from service.ops.registry import NodeDeregistration, NodeLoad, NodePassport
from service.settings import Settings
from service.transport import topology as declared

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"
COMMANDS = "storage commands"
NODE_COMMANDS = "node commands"
CONTROL = "control signals"
REPLIES = "replies"
_REGISTRY = "MindBus node registry: "
_CHANGE = (
    "change event from the outbox, after the commit, with publisher confirms (at least once: drop an envelope id "
    "seen before; id = event_data.change_id, in commit order per node): "
)
_CHANGES = {
    ChangeKind.ARTIFACT_REGISTERED: "an artifact was registered, or restored by an admin; subject is its id",
    ChangeKind.ARTIFACT_DELETED: "an admin deleted an artifact (a tombstone); subject is its id",
    ChangeKind.THREAD_SAVED: "a save or restore changed a thread (version after it); subject is its id",
    ChangeKind.THREAD_DELETED: "a thread was deleted; subject is its id",
    ChangeKind.MEMORY_PUT: "a memory item was put (version after it); subject is <namespace parts>/<key>",
    ChangeKind.MEMORY_DELETED: "a live memory item was deleted; subject is <namespace parts>/<key>",
    ChangeKind.QUOTA_WARNING: (
        "a registration took its trace to 80% of STORAGE_TRACE_MAX_ARTIFACTS or STORAGE_TRACE_MAX_BYTES: once "
        "per trace, in the registration's commit; subject is the trace id, severity WARNING"
    ),
}
EVENTS: dict[str, tuple[type[BaseModel], int, str]] = {
    topology.EVT_NODE_REGISTERED: (
        NodePassport,
        topology.PRIORITY_NODE_LIFECYCLE,
        _REGISTRY + "the node started consuming",
    ),
    topology.EVT_NODE_HEARTBEAT: (
        NodeLoad,
        topology.PRIORITY_HEARTBEAT,
        _REGISTRY + "every STORAGE_HEARTBEAT_INTERVAL (10 s)",
    ),
    topology.EVT_NODE_DEREGISTERED: (
        NodeDeregistration,
        topology.PRIORITY_NODE_LIFECYCLE,
        _REGISTRY + "graceful stop (SIGTERM)",
    ),
    **{kind.routing_key: (Change, topology.PRIORITY_STORAGE_EVENT, _CHANGE + when) for kind, when in _CHANGES.items()},
}
_REF = "#/components/schemas/{model}"


def _defaults() -> Settings:
    """Documented defaults, never this machine's environment."""
    return Settings.model_construct(command_log=False, node_registry=False, metrics_port=None, otel=False)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(part.replace("~", "~0").replace("/", "~1").replace(" ", "%20") for part in parts)


def _with_data(envelope: str, data: dict[str, Any]) -> dict[str, Any]:
    """An envelope schema narrowed on its ``data`` member."""
    return {"allOf": [_ref(envelope), {"type": "object", "properties": {"data": {"type": "object", **data}}}]}


def _schemas() -> dict[str, Any]:
    models: list[type[BaseModel]] = [CommandEnvelope, ResultEnvelope, ErrorEnvelope, EventEnvelope, ControlEnvelope]
    for spec in ACTIONS.values():
        models += [spec.params, spec.output]
    models += [model for model, _, _ in EVENTS.values()]
    unique = list(dict.fromkeys(models))
    _, top = models_json_schema([(m, "validation") for m in unique], ref_template=_REF)
    schemas: dict[str, Any] = dict(sorted(top.get("$defs", {}).items()))
    schemas["StorageAction"] = {"type": "string", "enum": sorted(ACTIONS), "description": "Actions this worker serves"}
    schemas["ErrorCode"] = {"type": "string", "enum": [code.value for code in ErrorCode]}
    return schemas


def _action_messages() -> tuple[dict[str, Any], dict[str, Any]]:
    """(command messages, reply messages), keyed by message name."""
    commands: dict[str, Any] = {}
    replies: dict[str, Any] = {}
    for name, spec in sorted(ACTIONS.items()):
        traits = [t for t, on in (("writes", spec.writes), ("admin", spec.admin), ("spillable", spec.spillable)) if on]
        commands[name] = {
            "name": name,
            "title": f"{name} command",
            "summary": (spec.params.__doc__ or name).strip().splitlines()[0],
            "contentType": "application/json",
            "correlationId": {"location": "$message.header#/correlation_id"},
            "payload": _with_data(
                "CommandEnvelope",
                {
                    "required": ["action"],
                    "properties": {"action": {"const": name}, "params": _ref(spec.params.__name__)},
                },
            ),
            "x-mindbus-action": {"writes": spec.writes, "admin": spec.admin, "spillable": spec.spillable},
            "tags": [{"name": trait} for trait in traits],
        }
        replies[f"{name}.result"] = {
            "name": f"{name}.result",
            "title": f"{name} RESULT",
            "contentType": "application/json",
            "correlationId": {"location": "$message.header#/correlation_id"},
            "payload": _with_data("ResultEnvelope", {"properties": {"output": _ref(spec.output.__name__)}}),
        }
    replies["error"] = {
        "name": "error",
        "title": "ERROR reply (any action)",
        "contentType": "application/json",
        "correlationId": {"location": "$message.header#/correlation_id"},
        "payload": _ref("ErrorEnvelope"),
    }
    return commands, replies


def _event_message(event_type: str, model: type[BaseModel]) -> dict[str, Any]:
    return {
        "name": event_type,
        "title": event_type,
        "contentType": "application/json",
        "payload": _with_data(
            "EventEnvelope",
            {"properties": {"event_type": {"const": event_type}, "event_data": _ref(model.__name__)}},
        ),
    }


def _app_document(settings: Settings) -> dict[str, Any]:
    """What FastStream generates from the worker's broker, with the publishers the worker uses declared."""
    broker = RabbitBroker(settings.amqp_url, app_id=f"mindbus-storage/{settings.node_name}", logger=None)
    broker.subscriber(declared.command_queue(settings), declared.exchange(settings), no_reply=True, title=COMMANDS)
    broker.subscriber(
        declared.node_queue(settings),
        declared.exchange(settings),
        no_reply=True,
        title=NODE_COMMANDS,
        description="Commands addressed to this node alone (cmd.storage.<node name>): the same messages and replies",
    )
    bindings = ", ".join(control_bindings(settings.node_name))
    broker.subscriber(
        RabbitQueue(f"{settings.node_queue}.control.<random>", exclusive=True, auto_delete=True, routing_key="ctl.#"),
        declared.exchange(settings),
        no_reply=True,
        title=CONTROL,
        description=f"CONTROL signals ctl.<target>.<pause|resume|shutdown|config|stop>, type ai.team.control, "
        f"priority 255, bound as {bindings}: obeyed only from an admin broker user_id, never answered",
    )
    broker.publisher(
        routing_key="{reply_to}",
        title=REPLIES,
        description="RESULT or ERROR, to the command's reply_to on the default exchange; correlation_id as sent "
        "(else the command's envelope id); subject and traceparent copied from the command",
        schema=ResultEnvelope,
        persist=True,
        priority=topology.PRIORITY_REPLY,
        mandatory=False,
    )
    for event_type, (_, priority, when) in EVENTS.items():
        broker.publisher(
            exchange=declared.exchange(settings),
            routing_key=event_type,
            title=event_type,
            description=when,
            schema=EventEnvelope,
            persist=True,
            priority=priority,
            mandatory=False,
        )
    spec = AsyncAPI(
        broker,
        title="MindBus storage worker",
        version=__version__,
        description=(
            "COMMAND CloudEvents in, RESULT/ERROR CloudEvents out, node registry and storage events on the main "
            "exchange. "
            f"The shared command queue `{settings.queue}` is bound to `{settings.routing_keys[0]}`; each node's own "
            f"queue `<queue>.<node name>` (default `{settings.node_queue}`) to `cmd.storage.<node name>` (default "
            f"`{settings.routing_keys[1]}`); priority 0-{topology.MAX_PRIORITY} (classic queues; quorum: none), "
            f"dead-lettered to `{settings.dlx}` -> `{settings.dlq}`. CONTROL signals `ctl.{{all,storage,<node>}}.*`."
        ),
        schema_version="3.0.0",
    )
    document: dict[str, Any] = spec.to_specification().to_jsonable()
    return document


def build(settings: Settings | None = None) -> dict[str, Any]:
    """The whole document, deterministic for a given code base."""
    document = _app_document(settings or _defaults())
    commands, replies = _action_messages()
    components = document.setdefault("components", {})
    messages: dict[str, Any] = {}
    for name, message in commands.items():
        messages[f"command.{name}"] = message
    for name, message in replies.items():
        messages[f"reply.{name}"] = message
    for event_type, (model, _, _) in EVENTS.items():
        messages[event_type] = _event_message(event_type, model)
    messages["control"] = {
        "name": "control",
        "title": "CONTROL signal",
        "contentType": "application/json",
        "payload": _ref("ControlEnvelope"),
    }
    components["messages"] = messages
    components["schemas"] = _schemas()

    channels = document["channels"]
    channels[COMMANDS]["messages"] = {
        f"command.{n}": {"$ref": _pointer("components", "messages", f"command.{n}")} for n in commands
    }
    channels[NODE_COMMANDS]["messages"] = channels[COMMANDS]["messages"]
    channels[CONTROL]["messages"] = {"control": {"$ref": _pointer("components", "messages", "control")}}
    channels[REPLIES]["address"] = None
    channels[REPLIES]["messages"] = {
        f"reply.{n}": {"$ref": _pointer("components", "messages", f"reply.{n}")} for n in replies
    }
    for event_type in EVENTS:
        channels[event_type]["messages"] = {event_type: {"$ref": _pointer("components", "messages", event_type)}}

    operations = document["operations"]
    operations[COMMANDS]["messages"] = [
        {"$ref": _pointer("channels", COMMANDS, "messages", m)} for m in channels[COMMANDS]["messages"]
    ]
    operations[COMMANDS]["reply"] = {
        "address": {"location": "$message.header#/reply_to"},
        "channel": {"$ref": _pointer("channels", REPLIES)},
        "messages": [{"$ref": _pointer("channels", REPLIES, "messages", m)} for m in channels[REPLIES]["messages"]],
    }
    operations[NODE_COMMANDS]["messages"] = [
        {"$ref": _pointer("channels", NODE_COMMANDS, "messages", m)} for m in channels[NODE_COMMANDS]["messages"]
    ]
    operations[NODE_COMMANDS]["reply"] = operations[COMMANDS]["reply"]
    operations[CONTROL]["messages"] = [{"$ref": _pointer("channels", CONTROL, "messages", "control")}]
    operations[REPLIES]["messages"] = operations[COMMANDS]["reply"]["messages"]
    for event_type in EVENTS:
        operations[event_type]["messages"] = [{"$ref": _pointer("channels", event_type, "messages", event_type)}]
    document["channels"] = dict(sorted(channels.items()))  # the broker keeps publishers in a set
    document["operations"] = dict(sorted(operations.items()))
    return document


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.ops.asyncapi", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed document is stale")
    parser.add_argument("--output", type=Path, default=DOCUMENT)
    args = parser.parse_args(argv)
    text = render(build())
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run python -m service.ops.asyncapi", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output} ({len(ACTIONS)} actions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
