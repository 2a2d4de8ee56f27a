"""The typed action table: each action's contract (params, output, writes, admin) beside the handler serving it.

``handlers`` builds the table from its domain modules; ``check`` runs at start-up, so a handler whose
annotations disagree with the contract, or a contract action nobody serves, stops the worker before it
takes a single command instead of failing one agent at a time.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from contracts import ACTIONS as CONTRACT
from contracts.actions import ActionSpec
from service.core.context import HandlerContext
from service.core.recording import Committed

Handler = Callable[[Any, HandlerContext], Awaitable[Any]]
"""``async (params, ctx) -> output``, or ``-> Committed[output]`` for a command that commits a write."""


@dataclass(frozen=True, slots=True)
class Action:
    """One served action: what the contract says of it and the function that serves it."""

    spec: ActionSpec
    handler: Handler

    @property
    def name(self) -> str:
        return self.spec.name


ActionTable = Mapping[str, Action]


class ActionTableError(RuntimeError):
    """The handlers disagree with the contract: a programming error, reported at start-up."""


def table(*handlers: Handler) -> dict[str, Action]:
    """Pair every handler with the contract entry of its name; an action the contract does not know is an error."""
    named = {handler.__name__: handler for handler in handlers}
    unknown = sorted(set(named) - set(CONTRACT))
    if unknown:
        raise ActionTableError(f"handlers for actions the contract does not define: {', '.join(unknown)}")
    return {name: Action(CONTRACT[name], handler) for name, handler in named.items()}


def check(actions: ActionTable) -> None:
    """Every contract action is served, by a handler taking its params model and returning its output model."""
    problems = [f"{name}: no handler" for name in sorted(set(CONTRACT) - set(actions))]
    for name, action in sorted(actions.items()):
        hints = typing.get_type_hints(action.handler)
        params = next((hint for key, hint in hints.items() if key != "return"), None)
        if params is not action.spec.params:
            problems.append(f"{name}: takes {params!r}, the contract says {action.spec.params.__name__}")
        returned = hints.get("return")
        if not _returns(returned, action.spec.output):
            problems.append(f"{name}: returns {returned!r}, the contract says {action.spec.output.__name__}")
    if problems:
        raise ActionTableError("the action table disagrees with the contract: " + "; ".join(problems))


def _returns(annotation: object, output: type) -> bool:
    """``output``, ``Committed[output]``, or a union of the two."""
    if annotation is output:
        return True
    if typing.get_origin(annotation) is Committed:
        return typing.get_args(annotation) == (output,)
    members = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    return bool(members) and all(_returns(member, output) for member in members)
