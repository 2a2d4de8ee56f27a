"""Who a command acts as (docs/contract.md §3) and who may read what."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contracts import CommandEnvelope, InvalidArgument, PermissionDenied, Visibility
from service.settings import Settings


@dataclass(frozen=True, slots=True)
class Requester:
    """The identity a command acts as; ``id`` None is anonymous (sees only public data)."""

    id: str | None
    trace_id: str | None = None
    is_admin: bool = False


SYSTEM = Requester(id=None, is_admin=True)
"""The CLI and the periodic jobs: admin rights, no identity."""

MAX_REQUESTER_ID = 255
"""The width of every owner column: a longer identity could be stored on SQLite but never read back."""


def requester_of(envelope: CommandEnvelope, user_id: str | None, settings: Settings) -> Requester:
    """The broker-validated ``user_id`` first; the body's claims only when the settings trust them.

    Admin rights follow the ``user_id`` alone: RabbitMQ refuses a ``user_id`` that is not the connection's
    user, whereas anyone can write any name into ``source`` or ``context.requester_id``. A body claim of an
    admin's name is therefore an ordinary agent of that name (it may own data, never run admin actions).
    """
    context: dict[str, Any] = envelope.data.context or {}
    trace = context.get("requester_trace_id")
    trace_id = str(trace) if trace is not None else None
    if user_id:
        ident: str | None = user_id
    elif settings.trust_body_identity:
        claimed = context.get("requester_id")
        ident = str(claimed) if claimed else envelope.source
    else:
        ident = None
    if ident is None:
        trace_id = None  # an anonymous command's trace is as unverified as its identity: public data only
    is_admin = bool(user_id) and user_id in settings.admins
    return Requester(id=ident, trace_id=trace_id, is_admin=is_admin)


def check_requester(requester: Requester) -> None:
    """Refuse an identity no owner column can hold: stored anyway (SQLite does not check widths), it would
    be a row that never validates on the way out and breaks every listing that reaches it."""
    if requester.id is not None and len(requester.id) > MAX_REQUESTER_ID:
        raise InvalidArgument(
            f"requester id is {len(requester.id)} characters, at most {MAX_REQUESTER_ID} allowed",
            {"field": "requester_id", "length": len(requester.id), "limit": MAX_REQUESTER_ID},
        )


def can_read(visibility: str, owner: str | None, trace_id: str | None, requester: Requester) -> bool:
    if visibility == Visibility.PUBLIC or requester.is_admin:
        return True
    is_owner = requester.id is not None and owner == requester.id
    if visibility == Visibility.PRIVATE:
        return is_owner
    return is_owner or (requester.trace_id is not None and trace_id == requester.trace_id)


def refuse_read(kind: str, item_id: str, visibility: str, requester: Requester) -> PermissionDenied:
    """The refusal names the item, its visibility and who asked; never the owner, which is not the asker's
    to know (it tells a stranger whose data this is, and whom to impersonate under body identity)."""
    return PermissionDenied(
        f"{kind} {item_id} is {visibility} and not readable by this requester",
        {kind: item_id, "visibility": visibility, "requester": requester.id},
    )
