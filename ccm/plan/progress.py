"""How far a run has got: the executor reports each configuration's steps as it goes.

A cold apply of thousands of accounts runs for tens of seconds; a terminal shows a bar,
a pipe or a log gets a line at each milestone (``Milestones``), and the daemon logs the
same milestones. The executor only calls ``Progress``; who listens decides how to show
it.
"""

from __future__ import annotations

from typing import Any, Protocol


class Progress(Protocol):
    """Told ``(configuration, done, total)``: once with ``done == 0`` before a
    configuration's first step, then after each step."""

    def __call__(self, configuration: str, done: int, total: int, /) -> None: ...


def no_progress(configuration: str, done: int, total: int, /) -> None:
    """Nobody listens (tests, ``ccm diff``)."""


class Milestones:
    """Which reports are worth a line: the start, every ``step`` percent, the end.

    Only configurations with at least ``minimum`` steps get lines in between: a run of
    three files is one line, not four.
    """

    def __init__(self, step: int = 10, minimum: int = 50) -> None:
        self.step = step
        self.minimum = minimum
        self._last: dict[str, int] = {}

    def __call__(self, configuration: str, done: int, total: int) -> bool:
        if done == 0:
            self._last[configuration] = 0
            return True
        if done >= total:
            return True
        if total < self.minimum:
            return False
        reached = done * 100 // total // self.step * self.step
        if reached > self._last.get(configuration, 0):
            self._last[configuration] = reached
            return True
        return False


class LoggedProgress:
    """The milestones as log lines (``ccm daemon``, and ``ccm apply`` into a pipe)."""

    def __init__(self, log: Any, milestones: Milestones | None = None) -> None:
        self.log = log
        self.milestones = milestones or Milestones()

    def __call__(self, configuration: str, done: int, total: int, /) -> None:
        if self.milestones(configuration, done, total):
            self.log.info("progress", configuration=configuration, done=done, total=total)
