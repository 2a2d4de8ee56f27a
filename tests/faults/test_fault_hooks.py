"""The fault hooks' switchboard: what ``STORAGE_FAULTS`` arms, and that a mistyped arming fails loudly."""

from __future__ import annotations

import pytest

from service.faults import FaultHooks, InjectedFault, parse

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
