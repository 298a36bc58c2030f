"""The registry of configurations.

Configurations register here by class; the daemon and the CLI use a registry filled
from the ``ccm.configurations`` entry points (the built-in ones live in the top-level
``configurations`` package), tests build a fresh one with only what they need.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points

from ccm.errors import GraphError
from ccm.models import OBJECT_TYPES
from ccm.models.types import ENTRY_POINT_GROUP
from ccm.plan.configuration import Configuration


class Registry:
    def __init__(self, configurations: Iterable[type[Configuration]] = ()) -> None:
        self._by_name: dict[str, Configuration] = {}
        for configuration in configurations:
            self.register(configuration)

    def register(self, configuration: type[Configuration]) -> type[Configuration]:
        """Add a configuration class; usable as a class decorator."""
        name = getattr(configuration, "name", None)
        if not isinstance(name, str) or not name:
            raise GraphError(f"{configuration.__qualname__} has no name")
        if name in self._by_name:
            raise GraphError(f"configuration {name!r} is registered twice")
        unknown = [t for t in configuration.subscribes if t not in OBJECT_TYPES]
        if unknown:
            raise GraphError(f"{name} subscribes to unknown object types: {', '.join(unknown)}")
        self._by_name[name] = configuration()
        return configuration

    def __getitem__(self, name: str) -> Configuration:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Configuration]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def groups_of(self, configuration: Configuration) -> tuple[str, ...]:
        """The node groups ``configuration`` runs on (empty: every node). A configuration
        that provides accounts runs on the groups of every one that needs them."""
        if not configuration.provides_accounts:
            return configuration.groups
        needing = [c for c in self if c.needs_accounts]
        if any(not c.groups for c in needing):
            return ()  # one of them runs on every node
        return tuple(sorted({group for c in needing for group in c.groups}))

    @property
    def groups(self) -> frozenset[str]:
        """Every node group a registered configuration declares."""
        return frozenset(group for configuration in self for group in configuration.groups)

    @classmethod
    def from_entry_points(cls) -> Registry:
        registry = cls()
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            for configuration in entry.load():
                registry.register(configuration)
        return registry
