"""The one backoff policy: tenacity's capped exponential wait, its delays from settings.

``[backoff] initial`` (default 0.5 s) doubles up to ``max`` (default 10 s). Used wherever
ccm retries through an outage: recording a halt, reaching etcd at start, a run that could
not be done (etcd away, lock lost), and the event watcher's re-watch. A sleep is an
``Event.wait`` (a stopping daemon never sleeps through its SIGTERM).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import tenacity

from ccm.settings import BackoffSettings

T = TypeVar("T")


def wait(settings: BackoffSettings) -> tenacity.wait.wait_base:
    return tenacity.wait_exponential(
        multiplier=settings.initial, min=settings.initial, max=settings.max
    )


def delay(settings: BackoffSettings, attempt: int) -> float:
    """The wait before retry number ``attempt`` (1 = the first retry)."""
    return float(min(settings.initial * 2 ** (attempt - 1), settings.max))


def retry_until_done(
    attempt: Callable[[], T],
    settings: BackoffSettings,
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    stop: threading.Event | None = None,
    on_retry: Callable[[BaseException, float], None] = lambda error, seconds: None,
) -> T:
    """Call ``attempt`` until it returns; retry ``retry_on`` errors with the backoff. A
    set ``stop`` ends the waiting: the last error is raised."""
    stopping = stop or threading.Event()

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        seconds = state.next_action.sleep if state.next_action else 0.0
        if error is not None:
            on_retry(error, seconds)

    def sleep(seconds: float) -> None:
        stopping.wait(seconds)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(retry_on),
        wait=wait(settings),
        stop=lambda state: stopping.is_set(),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(attempt)
