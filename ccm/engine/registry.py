"""The registry of configurations.

Configurations register here by class; the daemon and the CLI use a registry filled
from the ``ccm.configurations`` entry points (the built-in ones live in the top-level
``configurations`` package), tests build a fresh one with only what they need.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import entry_points

from ccm.errors import GraphError
from ccm.models import OBJECT_TYPES
from ccm.models.types import ENTRY_POINT_GROUP, load_types
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
        if any(t not in OBJECT_TYPES for t in configuration.subscribes):
            load_types()  # the installed packages' types, which define themselves on import
        unknown = [t for t in configuration.subscribes if t not in OBJECT_TYPES]
        if unknown:
            raise GraphError(f"{name} subscribes to unknown object types: {', '.join(unknown)}")
        self._refuse_clashing_commands(configuration)
        self._by_name[name] = configuration()
        return configuration

    def _refuse_clashing_commands(self, configuration: type[Configuration]) -> None:
        """A check or probe name means one command in the whole registry. Two packages
        declaring the same name with different default argv would silently replace one
        another's (the settings' ``[checks]`` override names just one), so that is refused
        naming both owners. The same declaration is shared: a plugin reuses a built-in
        check by importing its constant (``configurations.virtual_hosts.NGINX_CHECKS``)."""
        for kind in ("checks", "probes"):
            mine: Mapping[str, tuple[str, ...]] = getattr(configuration, kind)
            for other in self:
                theirs: Mapping[str, tuple[str, ...]] = getattr(other, kind)
                for name in sorted(set(mine) & set(theirs)):
                    if tuple(mine[name]) != tuple(theirs[name]):
                        raise GraphError(
                            f"{kind[:-1]} {name!r} is declared by {other.name} "
                            f"({' '.join(theirs[name])}) and by {configuration.name} "
                            f"({' '.join(mine[name])}): give one of them another name, or "
                            f"reuse the other's by importing its declaration"
                        )

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
