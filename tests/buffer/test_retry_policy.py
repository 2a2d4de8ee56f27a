"""The retry policy against a fake clock: which errors are retried, how long it waits, when it gives up."""

from __future__ import annotations

import pytest

from buffer import CallTimeout, InvalidArgument, RetryPolicy, StorageError, Unavailable
from contracts import Aborted, DeadlineExceeded


class FakeClock:
    """Sleeps advance a counter instead of the wall clock, and are recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Flaky:
    """Raises the given errors in turn, then returns ``"ok"``; counts its calls."""

    def __init__(self, *errors: StorageError) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_default_policy_waits_5_10_20_then_raises() -> None:
    """With defaults an unreachable worker costs three retries after 5, 10 and 20 s, then the error surfaces."""
    clock = FakeClock()
    attempt = Flaky(*(Unavailable("down") for _ in range(10)))
    with pytest.raises(Unavailable):
        await RetryPolicy().run(attempt, sleep=clock.sleep)
    assert attempt.calls == 4
    assert clock.sleeps == [5.0, 10.0, 20.0]
    assert clock.now == 35.0


async def test_success_after_two_failures_stops_retrying() -> None:
    """A call that succeeds on its third attempt returns its result after exactly two waits."""
    clock = FakeClock()
    attempt = Flaky(CallTimeout("ping", 1.0), Unavailable("down"))
    assert await RetryPolicy().run(attempt, sleep=clock.sleep) == "ok"
    assert attempt.calls == 3
    assert clock.sleeps == [5.0, 10.0]


@pytest.mark.parametrize(
    "error",
    [InvalidArgument("bad"), DeadlineExceeded("expired in queue", retryable=False), Unavailable("x", retryable=False)],
)
async def test_non_retryable_error_raises_at_once(error: StorageError) -> None:
    """An answer that retrying cannot change (non-retryable) raises on the first attempt, with no wait."""
    clock = FakeClock()
    attempt = Flaky(error)
    with pytest.raises(type(error)) as raised:
        await RetryPolicy().run(attempt, sleep=clock.sleep)
    assert raised.value is error
    assert attempt.calls == 1
    assert clock.sleeps == []


@pytest.mark.parametrize("error", [Unavailable("down"), Aborted("conflict"), CallTimeout("get_artifact", 2.0)])
async def test_retryable_codes_are_retried(error: StorageError) -> None:
    """Unavailable, aborted and timed-out calls are tried again."""
    clock = FakeClock()
    attempt = Flaky(error)
    assert await RetryPolicy(retries=1, initial_delay_s=0.5).run(attempt, sleep=clock.sleep) == "ok"
    assert clock.sleeps == [0.5]


async def test_stale_expected_version_is_not_retried() -> None:
    """A write made against an old version raises at once: resending it can never succeed, only re-reading can."""
    clock = FakeClock()
    stale = Aborted("thread t is at version 3, not 2", {"reason": "version_mismatch", "version": 3})
    attempt = Flaky(stale)
    with pytest.raises(Aborted) as raised:
        await RetryPolicy().run(attempt, sleep=clock.sleep)
    assert raised.value is stale
    assert attempt.calls == 1
    assert clock.sleeps == []


async def test_other_exceptions_are_not_retried() -> None:
    """A bug in the caller's code (not a storage error) propagates at once instead of being retried."""
    clock = FakeClock()
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise KeyError("oops")

    with pytest.raises(KeyError):
        await RetryPolicy().run(broken, sleep=clock.sleep)
    assert calls == 1


async def test_configurable_delays_and_cap() -> None:
    """Retries, first delay, multiplier and the cap are all settings; the budget adds attempts and waits."""
    policy = RetryPolicy(retries=5, initial_delay_s=0.01, multiplier=3, max_delay_s=0.5)
    assert policy.delays() == pytest.approx([0.01, 0.03, 0.09, 0.27, 0.5])
    clock = FakeClock()
    with pytest.raises(Unavailable):
        await policy.run(Flaky(*(Unavailable("down") for _ in range(9))), sleep=clock.sleep)
    assert clock.sleeps == pytest.approx(policy.delays())
    assert policy.budget_s(call_timeout_s=1.0) == pytest.approx(6 + sum(policy.delays()))


def test_zero_retries_means_one_attempt() -> None:
    """``retries=0`` is a valid policy: no waits at all."""
    assert RetryPolicy(retries=0).delays() == []
    with pytest.raises(ValueError):
        RetryPolicy(retries=-1)
