"""The dependency graph of configurations (networkx): run order and dependants.

An edge ``a -> b`` means b depends on a: a runs first, and selecting a selects b.
Run order is a topological order, ties broken by name so every node runs the same
order. A cycle is an error that names it.
"""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx

from ccm.engine.registry import Registry
from ccm.errors import DependencyCycle, GraphError


class DependencyGraph:
    def __init__(self, registry: Registry) -> None:
        graph = nx.DiGraph()
        for configuration in registry:
            graph.add_node(configuration.name)
        for configuration in registry:
            for dependency in configuration.depends_on:
                if dependency not in registry:
                    raise GraphError(
                        f"{configuration.name} depends on {dependency!r}, which is not registered"
                    )
                graph.add_edge(dependency, configuration.name)
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            pass
        else:
            raise DependencyCycle([edge[0] for edge in cycle])
        self.graph = graph
        self.order: list[str] = list(nx.lexicographical_topological_sort(graph))

    def with_dependants(self, names: Iterable[str]) -> list[str]:
        """``names`` plus everything that depends on them, in run order."""
        selected: set[str] = set()
        for name in names:
            selected.add(name)
            selected |= nx.descendants(self.graph, name)
        return [name for name in self.order if name in selected]
