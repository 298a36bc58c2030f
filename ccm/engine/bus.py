"""The in-process event bus: object types published, subscribed configurations selected.

``ALL`` stands for "everything may have changed" (a node with no record, a compacted
watch, a periodic reconcile): every configuration is selected. So does a change of the
``nodes`` type: node groups decide where every configuration runs.
"""

from __future__ import annotations

from collections.abc import Iterable

from ccm.engine.graph import DependencyGraph
from ccm.engine.registry import Registry
from ccm.models import Node

ALL = "*"


class EventBus:
    def __init__(self, registry: Registry, graph: DependencyGraph) -> None:
        self.graph = graph
        self.subscribers: dict[str, list[str]] = {}
        for configuration in registry:
            for type_name in configuration.subscribes:
                self.subscribers.setdefault(type_name, []).append(configuration.name)

    def select(self, published: Iterable[str]) -> list[str]:
        """Configurations to run for these object types, dependants included, in order."""
        types = set(published)
        if ALL in types or Node.TYPE in types:
            return list(self.graph.order)
        direct = [name for t in sorted(types) for name in self.subscribers.get(t, [])]
        return self.graph.with_dependants(direct)
