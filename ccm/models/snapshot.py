"""A snapshot: every object of every type, read at one etcd revision.

Configurations plan from a snapshot and nothing else, so a plan is a pure function of
(snapshot, settings) and two nodes planning at the same revision plan the same thing.

Objects of a type are parsed on first use (``loaders``): a run that selects only the
crontabs never pays for validating thousands of vhosts it does not read.

``node`` is the host name of the node that plans from the snapshot: placement (a cron
pinned to one node) is part of what a configuration plans, and stays pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from ccm.models.base import CcmObject
from ccm.models.node import Node

T = TypeVar("T", bound=CcmObject)

#: parses every stored object of one type: id → object
Loader = Callable[[], Mapping[int, CcmObject]]


@dataclass(frozen=True, eq=False)
class Snapshot:
    revision: int
    objects: Mapping[str, Mapping[int, CcmObject]] = field(default_factory=dict)
    loaders: Mapping[str, Loader] = field(default_factory=dict)
    #: the host name of the node planning from this snapshot (None: no node in mind)
    node: str | None = None
    _loaded: dict[str, Mapping[int, CcmObject]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def of_type(self, type_name: str) -> Mapping[int, CcmObject]:
        if type_name in self.objects:
            return self.objects[type_name]
        if type_name not in self._loaded:
            loader = self.loaders.get(type_name)
            self._loaded[type_name] = loader() if loader is not None else {}
        return self._loaded[type_name]

    def all(self, model: type[T]) -> list[T]:
        """Every object of ``model``'s type, ordered by id (stable rendering order)."""
        found = self.of_type(model.TYPE)
        return [obj for _, obj in sorted(found.items()) if isinstance(obj, model)]

    def this_node(self) -> Node | None:
        """The ``nodes`` object of the node planning, or None (not registered)."""
        return next((n for n in self.all(Node) if n.hostname == self.node), None)

    def viewed_from(self, node: str) -> Snapshot:
        """The same objects, planned by ``node`` (parsed types are shared)."""
        view = Snapshot(self.revision, self.objects, self.loaders, node)
        view._loaded.update(self._loaded)
        return view

    def get(self, model: type[T], object_id: int) -> T | None:
        obj = self.of_type(model.TYPE).get(object_id)
        return obj if isinstance(obj, model) else None

    def __iter__(self) -> Iterator[CcmObject]:
        for type_name in self.types():
            yield from self.of_type(type_name).values()

    def types(self) -> list[str]:
        return sorted({*self.objects, *self.loaders})

    def __eq__(self, other: object) -> bool:
        """Equal when read at the same revision with the same objects (loads them)."""
        if not isinstance(other, Snapshot):
            return NotImplemented
        types = set(self.types()) | set(other.types())
        return self.revision == other.revision and all(
            dict(self.of_type(t)) == dict(other.of_type(t)) for t in types
        )

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def of(cls, revision: int, objects: list[CcmObject]) -> Snapshot:
        grouped: dict[str, dict[int, CcmObject]] = {}
        for obj in objects:
            grouped.setdefault(obj.TYPE, {})[obj.id] = obj
        return cls(revision, grouped)
