"""A snapshot: every object of every type, read at one etcd revision.

Configurations plan from a snapshot and nothing else, so a plan is a pure function of
(snapshot, settings) and two nodes planning at the same revision plan the same thing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from ccm.models.objects import CcmObject

T = TypeVar("T", bound=CcmObject)


@dataclass(frozen=True)
class Snapshot:
    revision: int
    objects: Mapping[str, Mapping[int, CcmObject]] = field(default_factory=dict)

    def all(self, model: type[T]) -> list[T]:
        """Every object of ``model``'s type, ordered by id (stable rendering order)."""
        found = self.objects.get(model.TYPE, {})
        return [obj for _, obj in sorted(found.items()) if isinstance(obj, model)]

    def get(self, model: type[T], object_id: int) -> T | None:
        obj = self.objects.get(model.TYPE, {}).get(object_id)
        return obj if isinstance(obj, model) else None

    def __iter__(self) -> Iterator[CcmObject]:
        for by_id in self.objects.values():
            yield from by_id.values()

    @classmethod
    def of(cls, revision: int, objects: list[CcmObject]) -> Snapshot:
        grouped: dict[str, dict[int, CcmObject]] = {}
        for obj in objects:
            grouped.setdefault(obj.TYPE, {})[obj.id] = obj
        return cls(revision, grouped)
