"""When to try a call again and how long to wait: tenacity, on retryable errors only.

A retryable error is one the worker (or the client's transport boundary) marked ``retryable``: the service
was unreachable, busy or out of time. Anything else is an answer and raises at once. The sleep function is
injectable so the policy is tested against a fake clock.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from contracts import StorageError

log = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

DEFAULT_RETRIES = 3
DEFAULT_INITIAL_DELAY_S = 5.0
DEFAULT_MULTIPLIER = 2.0
DEFAULT_MAX_DELAY_S = 60.0


VERSION_MISMATCH = "version_mismatch"


def is_version_conflict(exc: BaseException) -> bool:
    """An ``expected_version`` that is no longer current: retryable by code, but only after re-reading.

    Sending the same command again can never succeed, so the client neither retries nor buffers it.
    """
    return isinstance(exc, StorageError) and exc.details.get("reason") == VERSION_MISMATCH


def is_retryable_error(exc: BaseException) -> bool:
    return isinstance(exc, StorageError) and exc.retryable and not is_version_conflict(exc)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """``retries`` extra attempts after the first, waiting ``initial_delay_s * multiplier**n`` (5, 10, 20 s)."""

    retries: int = DEFAULT_RETRIES
    initial_delay_s: float = DEFAULT_INITIAL_DELAY_S
    multiplier: float = DEFAULT_MULTIPLIER
    max_delay_s: float = DEFAULT_MAX_DELAY_S

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.initial_delay_s < 0 or self.max_delay_s < 0 or self.multiplier < 1:
            raise ValueError("delays must be >= 0 and the multiplier >= 1")

    def delays(self) -> list[float]:
        """The waits between attempts, in order: what a caller can budget for."""
        return [min(self.initial_delay_s * self.multiplier**n, self.max_delay_s) for n in range(self.retries)]

    def budget_s(self, call_timeout_s: float) -> float:
        """The longest a call can take before it raises or spills: every attempt timing out, every wait."""
        return (self.retries + 1) * call_timeout_s + sum(self.delays())

    def retrying(self, *, sleep: Sleep | None = None, label: str = "call") -> AsyncRetrying:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential(multiplier=self.initial_delay_s, exp_base=self.multiplier, max=self.max_delay_s),
            retry=retry_if_exception(is_retryable_error),
            before_sleep=_log_retry(label),
            reraise=True,
        )
        return retrying if sleep is None else retrying.copy(sleep=sleep)

    async def run(self, attempt: Callable[[], Awaitable[T]], *, sleep: Sleep | None = None, label: str = "call") -> T:
        """Call ``attempt`` until it returns, raises a non-retryable error, or the retries are spent."""
        async for tries in self.retrying(sleep=sleep, label=label):
            with tries:
                return await attempt()
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover


def _log_retry(label: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.info("%s attempt %d failed (%s); retrying in %.3g s", label, state.attempt_number, error, wait)

    return before_sleep
