"""A registration's trace quota: charged in its commit, refused over a limit, warned about once at 80%.

The charge runs in the registration's own job, after its row went in: a refusal raises there and rolls
the row back with it (its savepoint, or its group that then runs again job by job, so no neighbour is
lost), a twin or a lost race never reaches it, and a replay is answered from the inbox before any job
runs. The count therefore moves exactly when an artifact commits. The warning is a change
(``quota_warning``) recorded by the same job, so it commits (and is published from the outbox) exactly when
the registration that earned it does; the usage row remembers that it was recorded.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import (
    Aborted,
    ArtifactManifest,
    ChangeKind,
    QuotaWarning,
    ResourceExhausted,
    TraceQuota,
    TraceQuotaDetails,
    Visibility,
)
from service.core.context import HandlerContext
from service.settings import Settings
from service.store import changes, quotas
from service.store.quotas import Limits, Usage


def limits_of(settings: Settings) -> Limits:
    return Limits(max_artifacts=settings.trace_max_artifacts, max_bytes=settings.trace_max_bytes)


async def charge(conn: AsyncConnection, ctx: HandlerContext, manifest: ArtifactManifest) -> None:
    """Count the new artifact into its trace; RESOURCE_EXHAUSTED (final) when that would exceed a limit.

    No limit set: a plain count, deferred to the group's end where the writer allows it.
    """
    limits = limits_of(ctx.settings)
    if not limits.any:
        await quotas.count(conn, manifest.trace_id, manifest.size_bytes)
        return
    charged = await quotas.charge(conn, manifest.trace_id, manifest.size_bytes, manifest.id, limits)
    if not charged.taken:
        raise refusal(manifest, limits, charged.usage)
    if charged.warn:
        earned = warning(manifest.trace_id, limits, charged.usage)
        await changes.record(conn, warning_change(earned, manifest, ctx))


def warning_change(earned: QuotaWarning, manifest: ArtifactManifest, ctx: HandlerContext) -> dict[str, Any]:
    """The ``quota_warning`` change: read (``changes_since``) by the trace and the registration's owner."""
    return changes.new_change(
        ChangeKind.QUOTA_WARNING,
        node=ctx.settings.node_name,
        at=ctx.now,
        visibility=Visibility.TRACE.value,
        owner=manifest.owner,
        trace_id=earned.trace_id,
        quota=earned.quota.value,
        limit=earned.limit,
        usage=earned.usage,
        threshold_percent=earned.threshold_percent,
    )


def refusal(manifest: ArtifactManifest, limits: Limits, usage: Usage) -> ResourceExhausted | Aborted:
    """The refusal, naming the limit the trace would exceed and its usage now (the trace the requester named)."""
    if limits.max_artifacts is not None and usage.artifacts + 1 > limits.max_artifacts:
        details = TraceQuotaDetails(
            trace_id=manifest.trace_id,
            quota=TraceQuota.ARTIFACTS,
            limit=limits.max_artifacts,
            usage=usage.artifacts,
            requested=1,
        )
    elif limits.max_bytes is not None and usage.size_bytes + manifest.size_bytes > limits.max_bytes:
        details = TraceQuotaDetails(
            trace_id=manifest.trace_id,
            quota=TraceQuota.BYTES,
            limit=limits.max_bytes,
            usage=usage.size_bytes,
            requested=manifest.size_bytes,
        )
    else:  # freed in the moment between the refusal and this read: not a refusal to keep
        return Aborted("the trace's usage changed meanwhile, retry", {"trace_id": manifest.trace_id})
    return ResourceExhausted(
        f"trace {manifest.trace_id} is at its quota of {details.limit} {details.quota.value}",
        details.model_dump(mode="json"),
        retryable=False,
    )


def warning(trace_id: str, limits: Limits, usage: Usage) -> QuotaWarning:
    """The event of a trace that reached the threshold: the artifacts limit first when both were reached."""
    if limits.max_artifacts is not None and usage.artifacts >= quotas.warn_at(limits.max_artifacts):
        return QuotaWarning(
            trace_id=trace_id, quota=TraceQuota.ARTIFACTS, limit=limits.max_artifacts, usage=usage.artifacts
        )
    assert limits.max_bytes is not None  # the statement warns only at a threshold of a limit that is set
    return QuotaWarning(trace_id=trace_id, quota=TraceQuota.BYTES, limit=limits.max_bytes, usage=usage.size_bytes)
