"""The fault hooks' switchboard: what ``STORAGE_FAULTS`` arms, and that a mistyped arming fails loudly."""

from __future__ import annotations

import logging

import pytest

from service.faults import FaultHooks, InjectedFault, parse
from tests.support.worker_process import READY_MARK, SpawnWorker

pytestmark = pytest.mark.faults


def test_arming_grammar_names_points_counts_skips_and_failing_actions() -> None:
    """``after_reply@1,after_commit:2,raise_in:save_thread`` arms exactly what a test author wrote."""
    spec = parse("after_reply@1, after_commit:2 ,raise_in:save_thread")
    assert {p: (a.count, a.skip) for p, a in spec.kills.items()} == {"after_reply": (1, 1), "after_commit": (2, 0)}
    assert spec.raise_in == {"save_thread"}


@pytest.mark.parametrize("bad", ["after_comit", "raise_in", "raise_in:", "raise_in:save_thread@1", "after_reply:x"])
def test_a_mistyped_arming_is_refused(bad: str) -> None:
    """A typo in STORAGE_FAULTS stops the worker at start instead of silently arming nothing."""
    with pytest.raises(ValueError):
        parse(bad)


def test_skipped_passes_do_not_fire_and_unarmed_points_cost_nothing() -> None:
    """A hook with skips left lets the process live; an unarmed point or action is a no-op."""
    hooks = FaultHooks(parse("after_reply@2"))
    hooks.hit("after_reply")
    hooks.hit("after_reply")  # both skipped: the test is still running
    hooks.hit("after_commit")
    assert hooks.armed == {"after_reply": 1}
    assert not hooks.raises_in("register_artifact")


def test_raise_in_throws_an_unexpected_exception_not_a_storage_error() -> None:
    """``raise_in`` imitates a bug: the pipeline must treat it as INTERNAL, not as a business error."""
    hooks = FaultHooks(parse("raise_in:delete_artifact"))
    assert hooks.raises_in("delete_artifact")
    with pytest.raises(InjectedFault):
        hooks.fail("delete_artifact")


def test_armed_hooks_are_announced_in_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever reads the worker's log sees every hook ``STORAGE_FAULTS`` armed, in one line, as it was armed."""
    monkeypatch.setenv("STORAGE_FAULTS", "raise_in:delete_artifact,after_reply:2@1,after_commit")
    with caplog.at_level(logging.INFO, logger="service.faults"):
        FaultHooks()
    assert [(r.levelno, r.name) for r in caplog.records] == [(logging.WARNING, "service.faults")]
    assert caplog.records[0].getMessage().endswith(": after_commit:1, after_reply:2@1, raise_in:delete_artifact")


def test_nothing_armed_nothing_said(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("STORAGE_FAULTS", raising=False)
    with caplog.at_level(logging.DEBUG, logger="service.faults"):
        FaultHooks()
    assert caplog.records == []


async def test_a_worker_announces_its_armed_hooks_once_at_start(spawn_worker: SpawnWorker) -> None:
    """The real worker process: the WARNING is in its log before it consumes, once, naming both hooks."""
    worker = await spawn_worker(faults="raise_in:delete_artifact,after_commit@1000")
    lines = worker.current.lines
    consuming = next(i for i, line in enumerate(lines) if READY_MARK in line)
    announced = [i for i, line in enumerate(lines) if "arms fault hooks" in line]
    assert len(announced) == 1 and announced[0] < consuming, worker.output()
    assert "WARNING" in lines[announced[0]]
    assert lines[announced[0]].endswith("after_commit:1@1000, raise_in:delete_artifact")
