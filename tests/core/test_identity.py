"""Who a command acts as (docs/contract.md §3) and the read rule, without a broker."""

from __future__ import annotations

from typing import Any

import pytest

from contracts import make_command
from service.identity import Requester, can_read, requester_of
from service.settings import Settings


def settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, admins=frozenset({"ops"}), **overrides)  # type: ignore[call-arg]


def command(context: dict[str, Any] | None = None, source: str = "agent.source") -> Any:
    return make_command("ping", source=source, context=context)


@pytest.mark.parametrize(
    ("context", "user_id", "trust", "expected"),
    [
        ({"requester_id": "alice", "requester_trace_id": "t"}, None, True, Requester("alice", "t")),
        ({"requester_id": "alice"}, "guest", True, Requester("guest")),
        ({"requester_trace_id": "t"}, None, True, Requester("agent.source", "t")),
        (None, None, True, Requester("agent.source")),
        ({"requester_id": "ops"}, None, True, Requester("ops")),  # an admin's name in the body: no admin
        ({"requester_id": "ops"}, "guest", True, Requester("guest")),
        ({"requester_id": "alice", "requester_trace_id": "t"}, None, False, Requester(None)),
        ({"requester_id": "alice", "requester_trace_id": "t"}, "guest", False, Requester("guest", "t")),
        ({"requester_id": "ops"}, None, False, Requester(None)),
        (None, "ops", False, Requester("ops", is_admin=True)),
        (None, "ops", True, Requester("ops", is_admin=True)),
        ({"requester_id": "alice"}, "ops", True, Requester("ops", is_admin=True)),
    ],
)
def test_requester_of(context: dict[str, Any] | None, user_id: str | None, trust: bool, expected: Requester) -> None:
    """user_id first, then the body's requester_id, then the source; untrusted bodies leave only user_id."""
    assert requester_of(command(context), user_id, settings(trust_body_identity=trust)) == expected


def test_an_admin_name_as_source_is_an_ordinary_agent() -> None:
    """The envelope source names the requester under body identity but never makes it an admin."""
    assert requester_of(command(source="ops"), None, settings()) == Requester("ops")


@pytest.mark.parametrize(
    ("visibility", "requester", "readable"),
    [
        ("public", Requester(None), True),
        ("private", Requester("owner"), True),
        ("private", Requester("other", "trace-1"), False),
        ("private", Requester(None), False),
        ("trace", Requester("owner"), True),
        ("trace", Requester("other", "trace-1"), True),
        ("trace", Requester("other", "trace-2"), False),
        ("trace", Requester("other"), False),
        ("private", Requester("ops", is_admin=True), True),
    ],
)
def test_can_read(visibility: str, requester: Requester, readable: bool) -> None:
    """Public for all; private for the owner; trace for the owner and the same trace (admins read all)."""
    assert can_read(visibility, "owner", "trace-1", requester) is readable
