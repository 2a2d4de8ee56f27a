"""Params and outputs of the artifact actions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from contracts._base import Output, Page, PageParams, Params, SearchText
from contracts.envelope import UtcDatetime
from contracts.manifest import ArtifactId, ArtifactManifest, ArtifactStatus, Labels

MAX_URI_TTL_S = 7 * 86400


class RegisterArtifactParams(Params):
    manifest: ArtifactManifest


class RegisterArtifactOutput(Output):
    artifact_id: str
    registered: bool
    already_exists: bool
    uri: str
    checksum: str
    manifest: ArtifactManifest


class GetArtifactParams(Params):
    artifact_id: ArtifactId
    latest: bool = False


class ArtifactFailure(StrEnum):
    """Why a ``failed`` artifact failed, when the worker knows: its stored bytes are not the registered ones
    (``corrupted``, found by the ``verify_checksums`` scope), or its file is gone (``missing``)."""

    CORRUPTED = "corrupted"
    MISSING = "missing"


class ArtifactDetails(Output):
    reason: ArtifactFailure


class GetArtifactOutput(Output):
    artifact_id: str
    manifest: ArtifactManifest
    details: ArtifactDetails | None = Field(
        default=None, description="set on a failed artifact whose cause was recorded: details.reason"
    )


class ListArtifactsParams(PageParams):
    trace_id: str | None = None
    artifact_type: str | None = None
    created_by: str | None = None
    step_id: str | None = None
    status: ArtifactStatus | None = None
    labels: Labels = Field(default_factory=dict)
    created_after: UtcDatetime | None = None
    created_before: UtcDatetime | None = None
    latest_only: bool = False
    search: SearchText | None = None
    """Artifacts with a label value holding this, ignoring case (3 to 128 characters)."""


class ListArtifactsOutput(Page):
    artifacts: list[ArtifactManifest]


class GetArtifactUriParams(Params):
    artifact_id: ArtifactId
    expires_in_seconds: int = Field(default=3600, ge=1, le=MAX_URI_TTL_S)


class GetArtifactUriOutput(Output):
    artifact_id: str
    uri: str
    signed: bool
    expires_at: datetime | None = None


class DeleteArtifactParams(Params):
    artifact_id: ArtifactId


class DeleteArtifactOutput(Output):
    artifact_id: str
    deleted: bool


class RestoreArtifactParams(Params):
    artifact_id: ArtifactId


class RestoreArtifactOutput(Output):
    artifact_id: str
    restored: bool
    manifest: ArtifactManifest
