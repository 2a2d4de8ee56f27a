"""CloudEvents 1.0 envelopes (structured JSON) and the four MindBus data shapes.

``time`` accepts ``Z``, an offset or a naive value (read as UTC) and always comes back aware; one that cannot
be represented in UTC is a validation error. Building an envelope in code fills in ``specversion``, the
class's ``type``, a fresh ``id`` and the current ``time``; validating a received one (``model_validate_json``,
``model_validate``) never does: CloudEvents requires the first three, and exactly-once keys on the id.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import InitErrorDetails

from contracts.errors import ErrorCode

COMMAND_TYPE: Final = "ai.team.command"
RESULT_TYPE: Final = "ai.team.result"
ERROR_TYPE: Final = "ai.team.error"
EVENT_TYPE: Final = "ai.team.event"


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # pydantic turns only ValueError into a validation error: this one would escape it
        raise ValueError("datetime is out of range once converted to UTC") from None


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
"""A datetime that is always aware and in UTC; naive input is taken as UTC."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class CommandData(_Model):
    action: str = Field(min_length=1, max_length=100)
    params: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] | None = None
    target_node: str | None = None
    timeout_seconds: int | None = Field(default=None, ge=1, le=3600)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)
    retry_policy: dict[str, Any] | None = None
    requirements: dict[str, Any] | None = None


class ResultData(_Model):
    status: Literal["SUCCESS"] = "SUCCESS"
    output: dict[str, Any] = Field(default_factory=dict)
    execution_time_ms: int = Field(default=0, ge=0)
    metrics: dict[str, Any] | None = None


class ErrorBody(_Model):
    code: ErrorCode
    message: str
    retryable: bool = False
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorData(_Model):
    error: ErrorBody
    execution_time_ms: int = Field(default=0, ge=0)


class EventData(_Model):
    event_type: str
    event_data: dict[str, Any] = Field(default_factory=dict)
    severity: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    tags: list[str] = Field(default_factory=list)


RECEIPT_REQUIRED: Final = ("specversion", "type", "id")
"""Attributes a received envelope must carry itself: their defaults are for building envelopes only."""


class CloudEvent(_Model):
    specversion: Literal["1.0"] = "1.0"
    type: str = Field(min_length=1)
    source: str = Field(min_length=1)
    id: str = Field(default_factory=new_id, min_length=1, max_length=255)
    time: UtcDatetime | None = Field(default_factory=utc_now)
    subject: str | None = None
    datacontenttype: str | None = "application/json"
    traceparent: str | None = None
    correlationid: str | None = None
    priority: int | None = None
    data: Any = None

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **options: Any) -> Self:
        """Validate a received envelope: see ``_as_received``."""
        return cls._as_received(super().model_validate_json(json_data, **options))

    @classmethod
    def model_validate(cls, obj: Any, **options: Any) -> Self:
        """Validate a received envelope (as a Python object): see ``_as_received``. An envelope built in code
        passes as it is."""
        if isinstance(obj, cls):
            return super().model_validate(obj, **options)
        return cls._as_received(super().model_validate(obj, **options))

    @classmethod
    def _as_received(cls, event: Self) -> Self:
        """Refuse an envelope without ``specversion``, ``type`` or ``id``; leave a missing ``time`` unset.

        The field defaults serve code building envelopes. A received envelope without an id must not get a
        fresh one (a redelivered copy would get another, and run twice), and one without a ``time`` must not
        look sent just now (its age then counts from the AMQP ``timestamp``). One set check per envelope.
        """
        given = event.model_fields_set
        if "time" not in given:
            event.__dict__["time"] = None
        missing = [name for name in RECEIPT_REQUIRED if name not in given]
        if missing:
            errors = [InitErrorDetails(type="missing", loc=(name,), input=None) for name in missing]
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return event


class CommandEnvelope(CloudEvent):
    type: Literal["ai.team.command"] = COMMAND_TYPE
    data: CommandData


class ResultEnvelope(CloudEvent):
    type: Literal["ai.team.result"] = RESULT_TYPE
    data: ResultData


class ErrorEnvelope(CloudEvent):
    type: Literal["ai.team.error"] = ERROR_TYPE
    data: ErrorData


class EventEnvelope(CloudEvent):
    type: Literal["ai.team.event"] = EVENT_TYPE
    data: EventData


ReplyEnvelope = ResultEnvelope | ErrorEnvelope


def make_command(
    action: str,
    params: dict[str, Any] | None = None,
    *,
    source: str,
    **data: Any,
) -> CommandEnvelope:
    """Build a COMMAND envelope the way agents send them: a fresh id, the current time."""
    return CommandEnvelope(source=source, data=CommandData(action=action, params=params or {}, **data))
