"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias

from sqlalchemy import JSON, DateTime, Dialect
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from sqlalchemy import Row, Select

JsonType = JSON().with_variant(JSONB(), "postgresql")

AnyRow: TypeAlias = "Row[*tuple[Any, ...]]"
"""A result row of any number of columns, read by name. SQLAlchemy 2.1 types a Row by its columns' types,
which makes ``Row[Any]`` a row of exactly one column."""
AnySelect: TypeAlias = "Select[*tuple[Any, ...]]"
"""A SELECT of any number of columns (``Select[Any]`` selects exactly one, as ``Row[Any]`` holds one)."""


class RawJSON(str):
    """JSON text already written (by pydantic, from a model): a JSON column stores it as it is.

    SQLAlchemy's JSON type serialises a Python value with ``json.dumps``; for a manifest that meant
    pydantic building a dict and ``json.dumps`` walking it, where pydantic writes the same JSON directly.
    """

    __slots__ = ()


def serialize_json(value: object) -> str:
    """The engines' ``json_serializer``: SQLAlchemy's default (``json.dumps``), except for ``RawJSON``."""
    return value if isinstance(value, RawJSON) else json.dumps(value)


class UtcDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC (sortable text on SQLite, ``timestamp`` on PostgreSQL), returned aware."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)
