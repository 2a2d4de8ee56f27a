"""The wire contract as code: manifest patterns, retention grammar, envelope times, errors and the action table."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from contracts import (
    ACTIONS,
    RETRYABLE_CODES,
    SPILLABLE_ACTIONS,
    AlreadyExists,
    ArtifactManifest,
    CommandData,
    CommandEnvelope,
    DeadlineExceeded,
    ErrorCode,
    InternalError,
    ListArtifactsParams,
    Output,
    Params,
    StorageError,
    Unavailable,
    is_retryable,
    make_command,
    parse_retention,
)
from tests.support.artifacts import checksum

GOOD_ID = "art_0123abcd-4567-89ab-cdef-0123456789ab"


def manifest(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": GOOD_ID,
        "trace_id": "trace-1",
        "created_by": "agent",
        "artifact_type": "report",
        "uri": "file:///x/temp/a.bin",
        "size_bytes": 1,
        "checksum": checksum(b"a"),
    }
    base.update(fields)
    return base


def rejected_fields(**fields: Any) -> set[str]:
    with pytest.raises(ValidationError) as raised:
        ArtifactManifest.model_validate(manifest(**fields))
    return {".".join(str(p) for p in e["loc"]) for e in raised.value.errors()}


# -- manifest -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "artifact_id",
    [
        "art_0123ABCD-4567-89ab-cdef-0123456789ab",  # upper-case hex
        "0123abcd-4567-89ab-cdef-0123456789ab",  # no prefix
        "art_0123abcd456789abcdef0123456789ab",  # no dashes
        "art_0123abcd-4567-89ab-cdef-0123456789ab\n",  # trailing newline
        "art_0123abcd-4567-89ab-cdef-0123456789abc",
        "art_../../etc/passwd",
        "",
    ],
)
def test_artifact_id_pattern_refuses(artifact_id: str) -> None:
    """Anything but ``art_`` + a lower-case dashed UUID is refused as the manifest id."""
    assert rejected_fields(id=artifact_id) == {"id"}


@pytest.mark.parametrize(
    "value",
    [
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "sha1:" + "a" * 40,
        "a" * 64,
        "sha256:" + "g" * 64,
        "SHA256:" + "a" * 64,
    ],
)
def test_checksum_pattern_refuses(value: str) -> None:
    """Only ``sha256:`` + 64 lower-case hex digits is a checksum."""
    assert rejected_fields(checksum=value) == {"checksum"}


def test_a_valid_manifest_gets_the_documented_defaults() -> None:
    """An agent's minimal manifest is version 1, uploading, trace-visible, aware UTC time, and leaves its
    retention to the worker's default for the type (nothing sent, so STORAGE_DEFAULT_RETENTION applies)."""
    parsed = ArtifactManifest.model_validate(manifest())
    assert parsed.version == 1 and parsed.status == "uploading" and parsed.visibility == "trace"
    assert parsed.retention is None and "retention" not in parsed.wire() and parsed.labels == {}
    assert parsed.created_at.tzinfo is not None
    assert "supersedes" not in parsed.wire(), "the wire form carries no nulls"


def test_manifest_field_bounds() -> None:
    """Version, size, type length, status, visibility, model params, labels and unknown fields are checked."""
    assert rejected_fields(version=0) == {"version"}
    assert rejected_fields(size_bytes=-1) == {"size_bytes"}
    assert rejected_fields(artifact_type="x" * 51) == {"artifact_type"}
    assert rejected_fields(status="done") == {"status"}
    assert rejected_fields(visibility="team") == {"visibility"}
    assert rejected_fields(supersedes="art_nope") == {"supersedes"}
    assert rejected_fields(context={"model_params": {"temperature": 2.01}}) == {"context.model_params.temperature"}
    assert rejected_fields(context={"model_params": {"temperature": float("nan")}}) == {
        "context.model_params.temperature"
    }
    assert rejected_fields(context={"model_params": {"max_tokens": 0}}) == {"context.model_params.max_tokens"}
    assert rejected_fields(context={"input_artifacts": ["nope"]}) == {"context.input_artifacts.0"}
    assert rejected_fields(colour="red") == {"colour"}
    ok = ArtifactManifest.model_validate(manifest(context={"model_params": {"temperature": 2, "top_p": 0.9}}))
    assert ok.context is not None and ok.context.model_params is not None
    assert ok.context.model_params.temperature == 2


def test_labels_limits() -> None:
    """Up to 32 labels with keys of 1 to 64 and values of up to 256 characters, any script."""
    ArtifactManifest.model_validate(manifest(labels={f"k{i}": "v" for i in range(32)}))
    ArtifactManifest.model_validate(manifest(labels={"к" * 64: "я" * 256}))
    assert rejected_fields(labels={f"k{i}": "v" for i in range(33)}) == {"labels"}
    assert {f.split(".")[0] for f in rejected_fields(labels={"k" * 65: "v"})} == {"labels"}
    assert rejected_fields(labels={"k": "v" * 257}) == {"labels.k"}
    assert {f.split(".")[0] for f in rejected_fields(labels={"": "v"})} == {"labels"}
    assert rejected_fields(labels={"k": 1}) == {"labels.k"}


# -- retention ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("infinite", None),
        ("INFINITE", None),
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("2w", timedelta(weeks=2)),
        ("P30D", timedelta(days=30)),
        ("p30d", timedelta(days=30)),
        ("PT12H", timedelta(hours=12)),
        ("P1Y", timedelta(days=365)),
        ("P1M", timedelta(days=30)),
        ("P1W", timedelta(weeks=1)),
        ("P1DT2H3M4S", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("PT0.5S", timedelta(seconds=0.5)),
    ],
)
def test_retention_grammar_accepts(text: str, expected: timedelta | None) -> None:
    """``infinite``, short durations and ISO 8601 durations all parse to how long to keep."""
    assert parse_retention(text) == expected
    ArtifactManifest.model_validate(manifest(retention=text))


@pytest.mark.parametrize(
    "text",
    [
        "forever",
        "30",
        "30 days",
        "30D",
        "d30",
        "-1d",
        "0d",
        "PT0S",
        "P",
        "PT",
        "P1H",
        "PT1D",
        "1.5d",
        "P1001Y",
        "",
        " ",
    ],
)
def test_retention_grammar_refuses(text: str) -> None:
    """Anything else (units missing or misplaced, zero, negative, over 1000 years) is refused."""
    with pytest.raises(ValueError):
        parse_retention(text)
    assert rejected_fields(retention=text) == {"retention"}


# -- envelope -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["2024-05-01T10:00:00Z", "2024-05-01T10:00:00+00:00", "2024-05-01T13:30:00+03:30", "2024-05-01T10:00:00"],
)
def test_envelope_time_is_aware_utc_whatever_the_form(text: str) -> None:
    """Z, an offset and naive UTC all read as the same instant, returned aware in UTC."""
    body = {"specversion": "1.0", "type": "ai.team.command", "source": "a", "id": "1", "time": text}
    envelope = CommandEnvelope.model_validate({**body, "data": {"action": "ping"}})
    assert envelope.time == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert envelope.time is not None and envelope.time.utcoffset() == timedelta(0)


def test_list_params_times_follow_the_same_rule() -> None:
    """created_after/created_before accept naive UTC and offsets alike."""
    params = ListArtifactsParams.model_validate(
        {"created_after": "2024-05-01T10:00:00", "created_before": "2024-05-01T12:00:00-02:00"}
    )
    assert params.created_after == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert params.created_before == datetime(2024, 5, 1, 14, tzinfo=UTC)


def test_command_envelope_requirements() -> None:
    """A COMMAND needs specversion 1.0, the command type, a source, an id and an action of 1 to 100 chars."""
    good = {"specversion": "1.0", "type": "ai.team.command", "source": "a", "id": "1", "data": {"action": "ping"}}
    assert CommandEnvelope.model_validate(good).data.params == {}
    for broken in (
        {**good, "specversion": "0.3"},
        {**good, "type": "ai.team.result"},
        {**good, "source": ""},
        {**good, "id": ""},
        {**good, "data": {"action": ""}},
        {**good, "data": {"action": "x" * 101}},
        {**good, "data": {"action": "ping", "params": []}},
        {**good, "data": {"action": "ping", "timeout_seconds": 0}},
        {**good, "data": {"action": "ping", "timeout_seconds": 3601}},
        {**good, "data": {"action": "ping", "idempotency_key": ""}},
        {**good, "data": {"action": "ping", "idempotency_key": "k" * 256}},
        {k: v for k, v in good.items() if k != "source"},
    ):
        with pytest.raises(ValidationError):
            CommandEnvelope.model_validate(broken)


@pytest.mark.parametrize("attribute", ["id", "specversion", "type"])
def test_a_received_envelope_must_carry_its_cloudevents_attributes(attribute: str) -> None:
    """Receipt never fills in id, specversion or type (an id-less command would get a fresh id on every delivery)."""
    good = {"specversion": "1.0", "type": "ai.team.command", "source": "a", "id": "1", "data": {"action": "ping"}}
    broken = {k: v for k, v in good.items() if k != attribute}
    for validate in (
        CommandEnvelope.model_validate,
        lambda body: CommandEnvelope.model_validate_json(json.dumps(body)),
    ):
        with pytest.raises(ValidationError) as refused:
            validate(broken)
        assert [e["loc"] for e in refused.value.errors()] == [(attribute,)]


def test_a_received_envelope_without_time_has_none_and_a_built_one_has_now() -> None:
    """Receipt leaves a missing time unset (expiry then counts from the AMQP timestamp); builders stamp it."""
    body = {"specversion": "1.0", "type": "ai.team.command", "source": "a", "id": "1", "data": {"action": "ping"}}
    assert CommandEnvelope.model_validate_json(json.dumps(body)).time is None
    built = make_command("ping", source="a")
    assert built.time is not None and abs(built.time - datetime.now(UTC)) < timedelta(seconds=5)
    assert CommandEnvelope(source="a", data=CommandData(action="ping")).id


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00:00+14:00",
        "0001-01-01T00:59:59+01:00",
        "9999-12-31T23:59:59-14:00",
        "9999-12-31T23:59:59-00:01",
    ],
)
def test_a_time_no_utc_datetime_holds_is_a_validation_error(text: str) -> None:
    """Converting to UTC overflows: a ValidationError naming the field, never an OverflowError escaping pydantic."""
    body = {"specversion": "1.0", "type": "ai.team.command", "source": "a", "id": "1", "time": text}
    with pytest.raises(ValidationError) as refused:
        CommandEnvelope.model_validate_json(json.dumps({**body, "data": {"action": "ping"}}))
    assert [e["loc"] for e in refused.value.errors()] == [("time",)]
    with pytest.raises(ValidationError) as in_params:
        ListArtifactsParams.model_validate({"created_after": text})
    assert [e["loc"] for e in in_params.value.errors()] == [("created_after",)]


def test_make_command_round_trips_through_json() -> None:
    """A command built by make_command parses back identical, extensions and all."""
    command = make_command("get_artifact", {"artifact_id": GOOD_ID}, source="agent", idempotency_key="k")
    raw = json.loads(command.to_json_bytes())
    assert "subject" not in raw, "unset optional attributes are left out, not sent as null"
    back = CommandEnvelope.model_validate(raw)
    assert back == command
    assert CommandData.model_validate({"action": "x", "vendor_field": 1}).model_extra == {"vendor_field": 1}


# -- errors ---------------------------------------------------------------------------------------------------


def test_retryable_defaults_follow_the_contract() -> None:
    """UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED and ABORTED retry; everything else does not."""
    assert {ErrorCode(c) for c in RETRYABLE_CODES} == {
        ErrorCode.UNAVAILABLE,
        ErrorCode.DEADLINE_EXCEEDED,
        ErrorCode.RESOURCE_EXHAUSTED,
        ErrorCode.ABORTED,
    }
    for code in ErrorCode:
        error = StorageError.class_for(code)("m")
        assert error.code == code and error.retryable is is_retryable(code)
    assert InternalError("x").retryable is False
    assert DeadlineExceeded("expired", retryable=False).retryable is False


def test_errors_come_back_typed_from_the_wire() -> None:
    """A client rebuilds the typed error (code, message, details, retryable) from an ERROR reply."""
    error = StorageError.from_wire("ALREADY_EXISTS", "taken", {"artifact_id": GOOD_ID}, False)
    assert isinstance(error, AlreadyExists)
    assert (error.message, error.details, error.retryable) == ("taken", {"artifact_id": GOOD_ID}, False)
    assert isinstance(StorageError.from_wire("UNAVAILABLE", "down", None, None), Unavailable)
    assert StorageError.from_wire("UNAVAILABLE", "down", None, None).retryable is True
    assert isinstance(StorageError.from_wire("TEAPOT", "?", None, None), InternalError)


# -- the action table -----------------------------------------------------------------------------------------


def test_action_table_matches_the_contract() -> None:
    """Every action of docs/contract.md §4 has params and output models; admin and spillable sets are as documented."""
    documented = {
        "register_artifact",
        "get_artifact",
        "list_artifacts",
        "get_artifact_uri",
        "delete_artifact",
        "restore_artifact",
        "save_thread",
        "get_thread",
        "list_threads",
        "delete_thread",
        "cleanup",
        "get_stats",
        "ping",
        "put_memory",
        "get_memory",
        "search_memory",
        "list_namespaces",
        "delete_memory",
    }
    assert documented <= set(ACTIONS)
    for name, spec in ACTIONS.items():
        assert spec.name == name
        assert issubclass(spec.params, Params) and issubclass(spec.output, Output)
    assert {n for n, s in ACTIONS.items() if s.admin} == {"delete_artifact", "restore_artifact", "cleanup"}
    spillable = {"register_artifact", "save_thread", "delete_thread", "put_memory", "delete_memory"}
    assert set(SPILLABLE_ACTIONS) == spillable
    assert all(ACTIONS[n].writes for n in SPILLABLE_ACTIONS)


def test_params_refuse_unknown_fields() -> None:
    """A typo in a param name is an error, not a silently ignored filter."""
    with pytest.raises(ValidationError) as raised:
        ListArtifactsParams.model_validate({"trace": "t1"})
    assert raised.value.errors()[0]["loc"] == ("trace",)
