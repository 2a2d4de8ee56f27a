"""Classes 1 and 2: envelopes and values an attacker crafts by hand get INVALID_ARGUMENT, never a wedge.

Each test sends raw bytes over AMQP as a hostile agent would: times that overflow once converted to UTC,
times in the future, envelopes without the CloudEvents attributes the worker must not invent, NaN and
Infinity tokens, forged cursors. The worker answers each once, settles it, and keeps answering ``ping``.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts import COMMAND_TYPE
from tests.support.bus import Bus, error, output
from tests.support.wire import dead_letters
from tests.support.workers import Workers

pytestmark = pytest.mark.security

OVERFLOW_LOW = "0001-01-01T00:00:00+14:00"
"""Year 1 at +14:00 is year 0 in UTC: no datetime holds it (OverflowError in astimezone)."""
OVERFLOW_HIGH = "9999-12-31T23:59:59-14:00"
"""Year 10000 in UTC."""


def envelope(action: str, params: dict[str, Any] | None = None, **attributes: Any) -> dict[str, Any]:
    """A COMMAND as JSON, every attribute spelled out: the test drops or spoils what it attacks."""
    body: dict[str, Any] = {
        "specversion": "1.0",
        "type": COMMAND_TYPE,
        "source": "mallory",
        "id": str(uuid.uuid4()),
        "time": datetime.now(UTC).isoformat(),
        "data": {"action": action, "params": params or {}, "context": {"requester_id": "mallory"}},
    }
    body.update(attributes)
    return body


async def send(bus: Bus, body: dict[str, Any] | bytes, **properties: Any) -> dict[str, Any]:
    """Publish raw bytes with a fresh AMQP correlation id and wait for the one reply."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await bus.send(raw, str(uuid.uuid4()), **properties)


async def still_answers(bus: Bus) -> None:
    """The worker is not wedged: a plain ping is answered."""
    assert output(await bus.call("ping", timeout=10))["node"]


def cursor_of(moment: str, item_id: str = "x") -> str:
    """A cursor as the worker encodes them (base64url JSON of [time, id]), with an attacker's time."""
    return base64.urlsafe_b64encode(json.dumps([moment, item_id]).encode()).decode().rstrip("=")


def invalid(reply: dict[str, Any]) -> dict[str, Any]:
    """The error of an INVALID_ARGUMENT reply (anything else fails the test)."""
    found = error(reply)
    assert found["code"] == "INVALID_ARGUMENT", found
    assert "Traceback" not in json.dumps(found)
    return found


async def test_an_overflowing_time_is_refused_and_never_wedges_the_worker(workers: Workers) -> None:
    """More overflowing envelopes than the prefetch: each is INVALID_ARGUMENT and dead-lettered, ping still works."""
    _, bus = await workers.start(prefetch=2)
    for moment in (OVERFLOW_LOW, OVERFLOW_HIGH, OVERFLOW_LOW):
        found = invalid(await send(bus, envelope("ping", time=moment)))
        assert "time" in json.dumps(found["details"])
    assert len(await dead_letters(bus, 3)) == 3
    await still_answers(bus)


@pytest.mark.parametrize("attribute", ["id", "specversion", "type"])
async def test_an_envelope_missing_a_required_attribute_is_not_executed(workers: Workers, attribute: str) -> None:
    """Without id, specversion or type the command is INVALID_ARGUMENT + DLQ: no id is invented, nothing runs."""
    _, bus = await workers.start()
    thread_id = f"t-{uuid.uuid4().hex[:8]}"
    body = envelope("save_thread", {"thread_id": thread_id, "messages": [{"role": "user", "content": "hi"}]})
    del body[attribute]
    found = invalid(await send(bus, body))
    assert attribute in json.dumps(found["details"])
    assert len(await dead_letters(bus, 1)) == 1
    assert error(await bus.call("get_thread", {"thread_id": thread_id}))["code"] == "NOT_FOUND"


async def test_an_id_less_command_sent_twice_runs_never(workers: Workers) -> None:
    """Exactly-once needs the sender's id: an id-less save_thread sent twice appends nothing, twice refused."""
    _, bus = await workers.start()
    thread_id = f"t-{uuid.uuid4().hex[:8]}"
    output(await bus.call("save_thread", {"thread_id": thread_id, "messages": []}, context={"requester_id": "m"}))
    body = envelope("save_thread", {"thread_id": thread_id, "messages": [{"role": "user", "content": "again"}]})
    body["data"]["context"] = {"requester_id": "m"}
    del body["id"]
    for _ in range(2):
        invalid(await send(bus, body))
    got = output(await bus.call("get_thread", {"thread_id": thread_id}, context={"requester_id": "m"}))
    assert got["messages"] == []


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400", "-1E+400"])
async def test_nan_and_infinity_are_not_json(workers: Workers, token: str) -> None:
    """NaN, Infinity or a number no double holds, in params: INVALID_ARGUMENT non_finite_number + DLQ, no write."""
    _, bus = await workers.start()
    key = f"k-{uuid.uuid4().hex[:8]}"
    body = envelope("put_memory", {"namespace": ["mallory"], "key": key, "value": {"score": "__N__"}})
    raw = json.dumps(body).replace('"__N__"', token).encode()
    found = invalid(await send(bus, raw))
    assert found["details"]["reason"] == "non_finite_number"
    assert len(await dead_letters(bus, 1)) == 1
    missing = await bus.call("get_memory", {"namespace": ["mallory"], "key": key}, context={"requester_id": "mallory"})
    assert error(missing)["code"] == "NOT_FOUND"
    await still_answers(bus)


async def test_the_words_nan_and_infinity_inside_strings_are_fine(workers: Workers) -> None:
    """Only the bare tokens are refused: text that says NaN or Infinity is stored as sent."""
    _, bus = await workers.start()
    value = {"note": "NaN Infinity -Infinity", "NaN": "Infinity"}
    context = {"requester_id": "mallory"}
    output(await bus.call("put_memory", {"namespace": ["words"], "key": "k", "value": value}, context=context))
    got = output(await bus.call("get_memory", {"namespace": ["words"], "key": "k"}, context=context))
    assert got["value"] == value


async def test_a_time_in_the_future_is_refused(workers: Workers) -> None:
    """A time ten minutes ahead is INVALID_ARGUMENT time_in_future (+ DLQ); five seconds ahead is clock skew."""
    _, bus = await workers.start()
    ahead = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    found = invalid(await send(bus, envelope("ping", time=ahead)))
    assert found["details"]["reason"] == "time_in_future"
    assert len(await dead_letters(bus, 1)) == 1
    skewed = (datetime.now(UTC) + timedelta(seconds=5)).isoformat()
    assert output(await send(bus, envelope("ping", time=skewed)))["node"]


async def test_expiration_counts_from_the_amqp_timestamp_without_a_time(workers: Workers) -> None:
    """No envelope time, an AMQP timestamp an hour old, expiration 60 s: DEADLINE_EXCEEDED, the write never runs."""
    _, bus = await workers.start()
    thread_id = f"t-{uuid.uuid4().hex[:8]}"
    body = envelope("save_thread", {"thread_id": thread_id, "messages": [{"role": "user", "content": "late"}]})
    del body["time"]
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    found = error(await send(bus, body, expiration=60, timestamp=hour_ago))
    assert found["code"] == "DEADLINE_EXCEEDED" and found["retryable"] is False
    assert error(await bus.call("get_thread", {"thread_id": thread_id}))["code"] == "NOT_FOUND"
    fresh = envelope("save_thread", {"thread_id": thread_id, "messages": []})
    del fresh["time"]
    output(await send(bus, fresh, expiration=60, timestamp=datetime.now(UTC)))


@pytest.mark.parametrize(
    ("action", "params", "field"),
    [
        ("list_artifacts", {"created_after": OVERFLOW_LOW}, "created_after"),
        ("list_artifacts", {"created_before": OVERFLOW_HIGH}, "created_before"),
        ("list_threads", {"created_after": OVERFLOW_LOW}, "created_after"),
        ("list_threads", {"created_before": OVERFLOW_HIGH}, "created_before"),
        (
            "save_thread",
            {"thread_id": "t-overflow", "messages": [{"role": "user", "content": "x", "created_at": OVERFLOW_LOW}]},
            "created_at",
        ),
        ("list_artifacts", {"cursor": cursor_of(OVERFLOW_LOW)}, "cursor"),
        ("list_threads", {"cursor": cursor_of(OVERFLOW_HIGH)}, "cursor"),
        ("search_memory", {"cursor": cursor_of(OVERFLOW_LOW)}, "cursor"),
        ("list_artifacts", {"cursor": cursor_of("2024-01-01T00:00:00+00:00", "\ud800")}, "cursor"),
    ],
)
async def test_overflowing_times_in_params_and_cursors_are_invalid_argument(
    workers: Workers, action: str, params: dict[str, Any], field: str
) -> None:
    """A time no UTC datetime holds, in a filter, a message or a forged cursor, is INVALID_ARGUMENT naming it."""
    _, bus = await workers.start()
    found = invalid(await send(bus, envelope(action, params)))
    assert field in json.dumps(found), found
    await still_answers(bus)
