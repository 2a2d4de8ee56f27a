"""The committed AsyncAPI document: complete for every action and never stale."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

import pytest

from contracts import ACTIONS, topology
from service.ops import asyncapi


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    return json.loads(asyncapi.DOCUMENT.read_text())  # type: ignore[no-any-return]


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[unquote(part).replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_committed_document_matches_the_code() -> None:
    """Adding or changing an action, its params or its output without regenerating the document fails here."""
    assert asyncapi.DOCUMENT.read_text() == asyncapi.render(asyncapi.build()), (
        "docs/asyncapi.json is stale: run `python -m service.ops.asyncapi` and commit the result"
    )


def test_every_action_is_a_command_message_with_its_params_and_output(committed: dict[str, Any]) -> None:
    """A reader finds each action of the contract with the exact params and output schemas the worker validates."""
    channel = committed["channels"][asyncapi.COMMANDS]
    assert {name.removeprefix("command.") for name in channel["messages"]} == set(ACTIONS)
    schemas = committed["components"]["schemas"]
    assert schemas["StorageAction"]["enum"] == sorted(ACTIONS)
    for name, spec in ACTIONS.items():
        message = _resolve(committed, channel["messages"][f"command.{name}"]["$ref"])
        data = message["payload"]["allOf"][1]["properties"]["data"]["properties"]
        assert data["action"] == {"const": name}
        params = _resolve(committed, data["params"]["$ref"])
        expected = spec.params.model_json_schema(ref_template="#/components/schemas/{model}")
        expected.pop("$defs", None)
        assert params == expected, name
        reply = _resolve(committed, f"#/components/messages/reply.{name}.result")
        output_ref = reply["payload"]["allOf"][1]["properties"]["data"]["properties"]["output"]["$ref"]
        assert output_ref.endswith(f"/{spec.output.__name__}")
        assert message["x-mindbus-action"] == {"writes": spec.writes, "admin": spec.admin, "spillable": spec.spillable}


def test_queue_replies_and_node_events_are_described(committed: dict[str, Any]) -> None:
    """Ops see the command queue binding, the reply path and the three registry events with their priorities."""
    commands = committed["channels"][asyncapi.COMMANDS]
    assert commands["address"] == topology.ROUTING_KEY_ANY
    assert commands["bindings"]["amqp"]["queue"]["name"] == topology.COMMAND_QUEUE
    operation = committed["operations"][asyncapi.COMMANDS]
    assert operation["action"] == "receive"
    assert operation["reply"]["address"]["location"] == "$message.header#/reply_to"
    assert len(operation["reply"]["messages"]) == len(ACTIONS) + 1
    expected = {
        topology.EVT_NODE_REGISTERED: topology.PRIORITY_NODE_LIFECYCLE,
        topology.EVT_NODE_HEARTBEAT: topology.PRIORITY_HEARTBEAT,
        topology.EVT_NODE_DEREGISTERED: topology.PRIORITY_NODE_LIFECYCLE,
    }
    for event_type, priority in expected.items():
        assert committed["channels"][event_type]["address"] == event_type
        amqp = committed["operations"][event_type]["bindings"]["amqp"]
        assert (amqp["priority"], amqp["deliveryMode"]) == (priority, 2)
    passport = committed["components"]["schemas"]["NodePassport"]["properties"]
    assert {"node_type", "capabilities", "queue", "routing_keys", "version"} <= set(passport)


def test_every_reference_resolves(committed: dict[str, Any]) -> None:
    """No dangling $ref: tools that render the document (AsyncAPI Studio, generators) can follow every link."""
    refs = _refs(committed)
    assert len(refs) > len(ACTIONS) * 3
    for ref in refs:
        assert _resolve(committed, ref) is not None, ref


def test_check_mode_reports_a_stale_document(tmp_path: Any) -> None:
    """``python -m service.ops.asyncapi --check`` exits 1 on a stale file and 0 on a fresh one, as CI needs."""
    target = tmp_path / "asyncapi.json"
    target.write_text("{}\n")
    assert asyncapi.main(["--check", "--output", str(target)]) == 1
    assert asyncapi.main(["--output", str(target)]) == 0
    assert asyncapi.main(["--check", "--output", str(target)]) == 0
