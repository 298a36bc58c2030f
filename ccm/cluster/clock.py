"""Clocks, injected wherever ccm measures time, so time-based logic is tested exactly.

ccm needs two kinds of time. *Monotonic* time decides when things happen (the debouncer's
quiet period and max_wait, lock and lease timeouts): it never jumps, so an NTP step or a
daylight-saving change cannot fire or starve a run. *Wall* time is only recorded (the
``at`` of ``/ccm/halt``, a node's ``last_run``): readable, comparable across nodes, and
always timezone-aware UTC.

Nothing in ccm calls :func:`time.monotonic` or :func:`datetime.now` directly; it takes a
:class:`Clock`. Production passes :class:`SystemClock`; tests pass :class:`ManualClock`
and move time by hand, so they can assert ``clock.monotonic() == 60.0`` instead of
sleeping (the idea of kopf's ``looptime``).
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]

#: Where a :class:`ManualClock`'s wall time starts unless told otherwise: fixed, so test
#: output (halt records, run timestamps) is reproducible.
DEFAULT_WALL_START = datetime(2024, 1, 1, tzinfo=UTC)


class Clock(Protocol):
    """A source of time: monotonic seconds to measure with, UTC wall time to record."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    def wall(self) -> datetime:
        """The current date and time, timezone-aware, in UTC."""
        ...


class SystemClock:
    """The real clocks of this machine (``CLOCK_MONOTONIC`` and the system time)."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> datetime:
        return datetime.now(UTC)

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to; for tests.

    :meth:`advance` moves both clocks forward together, as real time does. :meth:`set`
    places them anywhere, except that monotonic time cannot go backwards (that would be
    a test bug the real clock cannot reproduce); wall time may jump either way, as a
    real wall clock does when it is stepped.
    """

    def __init__(self, monotonic: float = 0.0, wall: datetime = DEFAULT_WALL_START) -> None:
        self._monotonic = _finite(monotonic, "monotonic")
        self._wall = _utc(wall)

    def monotonic(self) -> float:
        return self._monotonic

    def wall(self) -> datetime:
        return self._wall

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` (>= 0) pass on both clocks."""
        seconds = _finite(seconds, "seconds")
        if seconds < 0:
            raise ValueError(f"a clock cannot advance by a negative time: {seconds}")
        self._monotonic += seconds
        self._wall += timedelta(seconds=seconds)

    def set(self, *, monotonic: float | None = None, wall: datetime | None = None) -> None:
        """Place either clock at an exact value (monotonic only forwards)."""
        if monotonic is not None:
            monotonic = _finite(monotonic, "monotonic")
            if monotonic < self._monotonic:
                raise ValueError(
                    f"monotonic time cannot go backwards: {monotonic} < {self._monotonic}"
                )
            self._monotonic = monotonic
        if wall is not None:
            self._wall = _utc(wall)

    def __repr__(self) -> str:
        return f"ManualClock(monotonic={self._monotonic!r}, wall={self._wall.isoformat()!r})"


def _finite(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value}")
    return value


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"wall time must be timezone-aware, not naive: {value.isoformat()}")
    return value.astimezone(UTC)


def timestamp(moment: datetime) -> str:
    """The one way ccm writes a time into etcd: ISO-8601, UTC, milliseconds, ``Z``
    (``2026-11-30T12:00:00.000Z``); ``datetime.fromisoformat`` reads it back."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
