"""The read rule of docs/contract.md §3 in SQL, once for every table that carries it.

Artifacts, memory items and threads each have ``visibility``, ``owner`` and ``trace_id`` columns; a row is
readable by an admin, by its owner, by anyone when public, and within its trace when ``trace`` (threads
saved before owners existed have none and are public). The same rule on a loaded row is ``identity.can_read``.
"""

from __future__ import annotations

from sqlalchemy import BindParameter, ColumnElement, FromClause, and_, or_, true

from contracts import Visibility
from service.identity import Requester


def readable_by(table: FromClause, requester: Requester) -> ColumnElement[bool]:
    """The rows of ``table`` that ``requester`` may read, with its identity as literal values."""
    if requester.is_admin:
        return true()
    return read_rule(table, owner=requester.id, trace_id=requester.trace_id)


def read_rule(
    table: FromClause,
    *,
    owner: str | BindParameter[str] | None,
    trace_id: str | BindParameter[str] | None,
) -> ColumnElement[bool]:
    """Readable by a requester that is not an admin: public, owned by ``owner``, or of trace ``trace_id``.

    ``owner`` and ``trace_id`` are values or bind parameters (a cached statement); None leaves that branch out.
    """
    rule = [table.c.visibility == Visibility.PUBLIC.value]
    if owner is not None:
        rule.append(table.c.owner == owner)
    if trace_id is not None:
        rule.append(and_(table.c.visibility == Visibility.TRACE.value, table.c.trace_id == trace_id))
    return or_(*rule)
