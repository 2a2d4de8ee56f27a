"""Keyset cursors: what list actions hand out must come back as the same position, and forgeries are refused."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from contracts import InvalidArgument
from service.store import cursor


@pytest.mark.parametrize(
    ("moment", "item_id"),
    [
        (datetime(2024, 5, 1, 10, 0, tzinfo=UTC), "art_0123abcd-4567-89ab-cdef-0123456789ab"),
        (datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC), "thread-Ω/with slashes"),
        (datetime(1999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-7))), ""),
    ],
)
def test_cursors_round_trip(moment: datetime, item_id: str) -> None:
    """decode(encode(t, id)) is the same instant (microseconds kept) and the same id; the cursor is URL-safe."""
    token = cursor.encode(moment, item_id)
    assert token.isascii() and not set(token) & set("+/= ")
    assert cursor.decode(token) == (moment, item_id)


def _b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "!!!",
        "not-base64-at-all?",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        _b64("just a string"),
        _b64(42),
        _b64(["2024-05-01T10:00:00+00:00"]),
        _b64(["2024-05-01T10:00:00+00:00", "a", "b"]),
        _b64(["2024-05-01T10:00:00", "naive"]),
        _b64(["tomorrow", "id"]),
        _b64([20240501, "id"]),
        _b64(["2024-05-01T10:00:00+00:00", 7]),
        _b64({"t": "2024-05-01T10:00:00+00:00", "i": "id"}),
    ],
)
def test_forged_cursors_are_invalid_argument_naming_the_field(token: str) -> None:
    """Anything the worker did not issue is INVALID_ARGUMENT with details naming ``cursor``."""
    with pytest.raises(InvalidArgument) as refused:
        cursor.decode(token)
    assert refused.value.details == {"field": "cursor"}
    assert "cursor" in refused.value.message
