"""Class 1: no delivery is ever left unsettled or unanswered, whatever fails while the worker handles it.

A bug at any stage (reading the envelope, the inbox lookup, the expiry/target gate, the execution, building
the reply, publishing it) is injected once. The sender still gets one ERROR INTERNAL without a stack trace,
the message is settled (the worker runs with a prefetch of one: an unsettled delivery would hold the only
slot and the next command would never arrive), and the next ``ping`` is answered.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import service.core.pipeline as pipeline_module
from service.core.pipeline import Pipeline
from service.core.recording import Recorder
from service.transport.worker import Worker
from tests.support.bus import error, output
from tests.support.workers import Workers

pytestmark = pytest.mark.security


class Bug(RuntimeError):
    """What a defect in the worker looks like: an exception nobody planned for."""


def once(original: Callable[..., Any]) -> Callable[..., Any]:
    """``original``, except that its first call raises ``Bug`` (sync and async functions alike)."""
    state = {"fired": False}

    def fire() -> None:
        if not state["fired"]:
            state["fired"] = True
            raise Bug("injected: a stage of the pipeline failed unexpectedly")

    if _is_async(original):

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            fire()
            return await original(*args, **kwargs)

        return async_wrapper

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        fire()
        return original(*args, **kwargs)

    return wrapper


def _is_async(function: Callable[..., Any]) -> bool:
    import inspect

    return inspect.iscoroutinefunction(function)


STAGES: dict[str, tuple[object, str]] = {
    "parse": (pipeline_module, "parse"),
    "inbox lookup": (Recorder, "lookup"),
    "gate": (Pipeline, "_gate"),
    "execute": (Pipeline, "_execute"),
    "building the reply": (Pipeline, "_finish"),
    "publishing the reply": (Worker, "_reply"),
}


@pytest.mark.parametrize("stage", list(STAGES))
async def test_a_failure_at_any_stage_is_answered_internal_and_settled(
    workers: Workers, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    """A bug injected at one stage: the write command gets ERROR INTERNAL (no trace), settles, ping still works."""
    owner, name = STAGES[stage]
    monkeypatch.setattr(owner, name, once(getattr(owner, name)))
    _, bus = await workers.start(prefetch=1)
    thread_id = f"t-{uuid.uuid4().hex[:8]}"
    params = {"thread_id": thread_id, "messages": [{"role": "user", "content": "hello"}]}

    reply = await bus.call("save_thread", params, context={"requester_id": "alice"}, timeout=10)

    found = error(reply)
    assert found["code"] == "INTERNAL" and found["retryable"] is False
    text = json.dumps(reply)
    assert "Traceback" not in text and "injected" not in text and "Bug" not in text
    assert output(await bus.call("ping", timeout=10))["node"]
    assert not bus.unmatched, "one reply per command, and only one"
