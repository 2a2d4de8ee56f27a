"""Artifact Manifest v1.0 with its exact validation patterns."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from contracts.envelope import UtcDatetime, utc_now
from contracts.retention import parse_retention

ARTIFACT_ID_PATTERN = r"^art_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
CHECKSUM_PATTERN = r"^sha256:[0-9a-f]{64}$"
MAX_LABELS = 32

ArtifactId = Annotated[str, StringConstraints(pattern=ARTIFACT_ID_PATTERN)]
Checksum = Annotated[str, StringConstraints(pattern=CHECKSUM_PATTERN)]
LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
LabelValue = Annotated[str, StringConstraints(max_length=256)]


class ArtifactStatus(StrEnum):
    UPLOADING = "uploading"
    COMPLETED = "completed"
    FAILED = "failed"


class Visibility(StrEnum):
    TRACE = "trace"
    PRIVATE = "private"
    PUBLIC = "public"


def _check_retention(value: str) -> str:
    parse_retention(value)
    return value


def _check_labels(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels, got {len(value)}")
    return value


Retention = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_check_retention)]
Labels = Annotated[dict[LabelKey, LabelValue], AfterValidator(_check_labels)]


class ModelParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, ge=1)


class AIContext(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_version: str | None = None
    model_name: str | None = None
    model_params: ModelParams | None = None
    input_artifacts: list[ArtifactId] = Field(default_factory=list)
    execution_time_ms: int | None = Field(default=None, ge=0)


class ArtifactManifest(BaseModel):
    """What an agent says about a file it produced. Immutable once registered, except ``status``."""

    model_config = ConfigDict(extra="forbid")

    id: ArtifactId
    version: int = Field(default=1, ge=1)
    supersedes: ArtifactId | None = None
    trace_id: str = Field(min_length=1, max_length=255)
    step_id: str | None = Field(default=None, max_length=255)
    created_by: str = Field(min_length=1, max_length=255)
    created_at: UtcDatetime = Field(default_factory=utc_now)
    artifact_type: str = Field(min_length=1, max_length=50)
    content_type: str = Field(default="application/octet-stream", min_length=1, max_length=255)
    uri: str = Field(min_length=1, max_length=2048)
    size_bytes: int = Field(ge=0)
    checksum: Checksum
    status: ArtifactStatus = ArtifactStatus.UPLOADING
    retention: Retention | None = None
    """How long the artifact is kept. Left out, the worker applies its default for the type
    (``STORAGE_DEFAULT_RETENTION``, ``infinite`` unless set) and stores and returns the value it applied."""
    owner: str | None = Field(default=None, max_length=255)
    visibility: Visibility = Visibility.TRACE
    context: AIContext | None = None
    labels: Labels = Field(default_factory=dict)

    def wire(self) -> dict[str, Any]:
        """The manifest as it travels: JSON types, no nulls."""
        return self.model_dump(mode="json", exclude_none=True)
