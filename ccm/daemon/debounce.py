"""When to run: collapse a burst of thin events into one run, at a predictable instant.

A Cluster API request often writes many objects (a new customer: a user, a pool, three
vhosts, a cron), and every write touches ``/ccm/events/<type>``. Running once per event
would take the cluster lock and render everything over and over. The watcher therefore
feeds each event's type into a :class:`Debouncer`, and the daemon starts a run when it
is due:

* ``quiet`` seconds after the *last* event (the burst is over), but
* never later than ``max_wait`` seconds after the *first* pending event, so a steady
  trickle of writes cannot postpone a run forever.

That is, ``due_at = min(last_event + quiet, first_event + max_wait)``. ``quiet = 0``
means due at once; ``max_wait < quiet`` is allowed and simply caps the wait.

This module is pure logic: no threads, no sleeping, no etcd. Time comes from an
injected :class:`~ccm.cluster.clock.Clock`, so tests state instants exactly. The caller
(the daemon loop) waits :meth:`Debouncer.seconds_until_due` or until the next event,
then :meth:`~Debouncer.take`\\ s the pending types and runs them. The debouncer only
decides *when*; *what* a type triggers is the event bus's business.

Two choices worth knowing:

* :data:`ALL` (``"*"``) stands for every type, e.g. after the watch was compacted and
  individual events are lost. It absorbs every other type: while it is pending,
  :meth:`~Debouncer.take` returns exactly ``frozenset({ALL})``.
* :meth:`~Debouncer.restore` puts types back after a run that did not apply them (the
  halt flag was set, the lock was lost, the run failed). Restored work is **due
  immediately** — it has already waited its quiet period once, and an operator who
  runs ``ccm resume`` expects the held work to go now, not another ``quiet`` later.
  Events arriving afterwards join it but do not postpone it. Not hot-looping on a
  failing run is the caller's job (in ccm a failure sets the halt flag, and a halted
  node waits for ``ccm resume`` before it looks at the debouncer again).

Pending work here lives in memory only; after a restart, the daemon derives what it
missed from etcd revisions and :meth:`~Debouncer.add`\\ s it again (see DESIGN.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

from ccm.cluster.clock import Clock
from ccm.engine.bus import ALL

__all__ = ["ALL", "Debouncer"]

# ALL, the pseudo type meaning "every object type" (a full run), is the event bus's
# own marker: what the debouncer holds is exactly what the bus is asked to select.


class Debouncer:
    """Pending object types and the instant their run is due.

    ``quiet`` and ``max_wait`` are seconds (finite, >= 0), measured on
    ``clock.monotonic()``. Not thread-safe: one owner (the daemon loop) calls it.
    """

    def __init__(self, quiet: float, max_wait: float, clock: Clock) -> None:
        self.quiet: Final = _seconds(quiet, "quiet")
        self.max_wait: Final = _seconds(max_wait, "max_wait")
        self._clock = clock
        self._pending: set[str] = set()
        self._first: float | None = None  # when the oldest pending event arrived
        self._last: float | None = None  # when the newest pending event arrived
        self._restored: float | None = None  # when work was restored: due from then

    @property
    def pending(self) -> frozenset[str]:
        """The pending types (``{ALL}`` when a full run is pending); empty when idle."""
        return frozenset(self._pending)

    def add(self, types: Iterable[str]) -> None:
        """Record one event touching ``types``; it may postpone the run by ``quiet``.

        The first event after idleness anchors ``max_wait``. An empty ``types`` is not
        an event: it changes nothing.
        """
        new = _types(types)
        if not new:
            return
        now = self._clock.monotonic()
        if self._first is None:
            self._first = now
        self._last = now
        self._merge(new)

    def due_at(self) -> float | None:
        """The monotonic instant the pending run should start; None when nothing is pending."""
        if self._first is None or self._last is None:
            return None
        due = min(self._last + self.quiet, self._first + self.max_wait)
        if self._restored is not None:
            due = min(due, self._restored)
        return due

    def is_due(self) -> bool:
        """True when work is pending and its instant has come (``now >= due_at``)."""
        due = self.due_at()
        return due is not None and self._clock.monotonic() >= due

    def seconds_until_due(self) -> float | None:
        """How long to wait before the run (0.0 when due); None when nothing is pending."""
        due = self.due_at()
        if due is None:
            return None
        return max(0.0, due - self._clock.monotonic())

    def take(self) -> frozenset[str]:
        """Return the pending types and forget them; the caller now owns (runs) them.

        Works whether or not the run is due (e.g. a final run on shutdown); returns an
        empty set when nothing is pending. The next event starts a new burst, with a
        new ``max_wait`` anchor.
        """
        taken = frozenset(self._pending)
        self._pending.clear()
        self._first = self._last = self._restored = None
        return taken

    def restore(self, types: Iterable[str]) -> None:
        """Put back types a run took but did not apply; they are due immediately.

        Anything that arrived since :meth:`take` stays pending and becomes due now too
        (it will run together with the restored types). An empty ``types`` changes
        nothing.
        """
        back = _types(types)
        if not back:
            return
        now = self._clock.monotonic()
        if self._first is None:
            self._first = self._last = now
        if self._restored is None:
            self._restored = now
        self._merge(back)

    def _merge(self, types: set[str]) -> None:
        if ALL in self._pending or ALL in types:
            self._pending = {ALL}
        else:
            self._pending |= types

    def __repr__(self) -> str:
        return (
            f"Debouncer(quiet={self.quiet}, max_wait={self.max_wait}, "
            f"pending={sorted(self._pending)}, due_at={self.due_at()})"
        )


def _seconds(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"debounce {name} must be a finite number of seconds >= 0, not {value}")
    return value


def _types(types: Iterable[str]) -> set[str]:
    # A bare string is an iterable of characters: add("site") would pend "s", "i", ...
    if isinstance(types, str):
        raise TypeError(f"types must be an iterable of type names, not the string {types!r}")
    found = set(types)
    for name in found:
        if not isinstance(name, str) or not name:
            raise ValueError(f"an object type must be a non-empty string, not {name!r}")
    return found
