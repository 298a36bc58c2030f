"""ccm — per-node configuration management for hosting clusters, driven by etcd.

The package is layered (see DESIGN.md; the direction is checked by import-linter):

    ccm.cli / ccm.daemon     the click commands and the node's main loop
    ccm.cluster              etcd adapter, object store, watcher, debouncer, lock, halt flag
    ccm.engine               configuration registry, dependency graph, event bus, one run
    ccm.plan                 typed changes, the Configuration base class, diff and executor
    ccm.models               pydantic models of the object types (pure data)

``ccm.errors``, ``ccm.settings`` and ``ccm.log`` are shared utilities any layer may use.
"""

__version__ = "0.1.0"
