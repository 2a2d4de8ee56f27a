"""Params and outputs of agent memory: a namespaced key-value store with TTL."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints

from contracts._base import DEFAULT_PAGE, Output, Page, PageLimit, PageParams, Params
from contracts.envelope import UtcDatetime
from contracts.manifest import Labels, Visibility

MAX_NAMESPACE_DEPTH = 8
MAX_VALUE_BYTES = 64 * 1024

NamespacePart = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Namespace = Annotated[list[NamespacePart], Field(min_length=1, max_length=MAX_NAMESPACE_DEPTH)]
NamespacePrefix = Annotated[list[NamespacePart], Field(max_length=MAX_NAMESPACE_DEPTH)]
MemoryKey = Annotated[str, StringConstraints(min_length=1, max_length=512)]


def _check_value_size(value: dict[str, Any]) -> dict[str, Any]:
    import json

    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_VALUE_BYTES:
        raise ValueError(f"value is {size} bytes as JSON, at most {MAX_VALUE_BYTES} allowed")
    return value


MemoryValue = Annotated[dict[str, Any], AfterValidator(_check_value_size)]


class PutMemoryParams(Params):
    namespace: Namespace
    key: MemoryKey
    value: MemoryValue
    ttl_seconds: int | None = Field(default=None, ge=1)
    labels: Labels = Field(default_factory=dict)
    expected_version: int | None = Field(default=None, ge=0)
    visibility: Visibility = Visibility.PRIVATE


class PutMemoryOutput(Output):
    namespace: list[str]
    key: str
    version: int
    expires_at: UtcDatetime | None = None


class GetMemoryParams(Params):
    namespace: Namespace
    key: MemoryKey
    refresh_ttl: bool = False


class MemoryItem(Output):
    namespace: list[str]
    key: str
    value: dict[str, Any]
    version: int
    labels: dict[str, str] = Field(default_factory=dict)
    owner: str | None = None
    visibility: Visibility = Visibility.PRIVATE
    trace_id: str | None = None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    expires_at: UtcDatetime | None = None


class SearchMemoryParams(PageParams):
    namespace_prefix: NamespacePrefix = Field(default_factory=list)
    labels: Labels = Field(default_factory=dict)


class SearchMemoryOutput(Page):
    items: list[MemoryItem]


class ListNamespacesParams(Params):
    prefix: NamespacePrefix = Field(default_factory=list)
    max_depth: int | None = Field(default=None, ge=1, le=MAX_NAMESPACE_DEPTH)
    limit: PageLimit = DEFAULT_PAGE
    cursor: str | None = Field(default=None, max_length=4096)


class ListNamespacesOutput(Output):
    count: int
    namespaces: list[list[str]]
    next_cursor: str | None = None
    """Where the next page starts (the same ``prefix`` and ``max_depth``); null on the last page."""


class DeleteMemoryParams(Params):
    namespace: Namespace
    key: MemoryKey


class DeleteMemoryOutput(Output):
    namespace: list[str]
    key: str
    deleted: bool
