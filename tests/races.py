"""Another writer between a store's read and its commit: a race made on purpose.

``race_after_read`` wraps the store's state read (``ObjectStore._read``): after its
n-th read, before that attempt commits, ``race(n)`` runs (another writer's put or
delete). The store must see the change at commit and retry, or refuse.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ccm.cluster.store import ObjectStore


class ReadRace:
    def __init__(self, read: Callable[..., Any], race: Callable[[int], None]) -> None:
        self._read = read
        self._race = race
        #: how many times the store read its state (one per attempt)
        self.reads = 0

    def __call__(self, *args: Any) -> Any:
        self.reads += 1
        state = self._read(*args)
        self._race(self.reads)
        return state


def race_after_read(
    monkeypatch: pytest.MonkeyPatch, store: ObjectStore, race: Callable[[int], None]
) -> ReadRace:
    racing = ReadRace(store._read, race)
    monkeypatch.setattr(store, "_read", racing)
    return racing
