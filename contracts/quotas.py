"""Quotas per trace: the details of a refusal and the warning event, both naming one trace's usage.

A registration that would take its trace past ``STORAGE_TRACE_MAX_ARTIFACTS`` or ``STORAGE_TRACE_MAX_BYTES``
is refused with ``RESOURCE_EXHAUSTED``, ``retryable: false`` (waiting does not free a quota) and
``TraceQuotaDetails`` as its details. When a registration takes a trace to ``QUOTA_WARNING_PERCENT`` of a
limit, the worker publishes one ``evt.storage.quota_warning`` EVENT for that trace, ``QuotaWarning`` as
its ``event_data``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal

from pydantic import BaseModel

TRACE_QUOTA: Final = "trace_quota"
"""``details.reason`` of a quota refusal."""
QUOTA_WARNING_PERCENT = 80
"""The share of a limit at which a trace's one warning is published."""


class TraceQuota(StrEnum):
    """Which limit: the number of live artifacts, or the bytes they hold (the sum of their ``size_bytes``)."""

    ARTIFACTS = "artifacts"
    BYTES = "bytes"


class TraceQuotaDetails(BaseModel):
    """``details`` of the RESOURCE_EXHAUSTED that refuses a registration over a trace's quota.

    Only the trace the requester registers into is described: naming it in a manifest is all it takes.
    """

    reason: Literal["trace_quota"] = TRACE_QUOTA
    trace_id: str
    quota: TraceQuota
    """The limit the registration would exceed (``artifacts`` first when it would exceed both)."""
    limit: int
    usage: int
    """The trace's usage of that limit now, without the refused artifact."""
    requested: int
    """What the registration would add to it: 1 artifact, or its ``size_bytes``."""


class QuotaWarning(BaseModel):
    """``event_data`` of ``evt.storage.quota_warning``: a trace reached 80% of a limit (published once a trace)."""

    trace_id: str
    quota: TraceQuota
    """The limit reached (``artifacts`` first when one registration reached both)."""
    limit: int
    usage: int
    """The trace's usage of that limit just after the registration that reached the threshold."""
    threshold_percent: int = QUOTA_WARNING_PERCENT
