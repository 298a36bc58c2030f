"""Test support for ccm and its plugins, installed with ccm.

The pytest plugin (``ccm.testing.plugin``, registered by the ``pytest11`` entry point)
gives any test the ``ccm_…`` fixtures: a real etcd, a node root, harmless settings and
the real ``ccm`` command. The pieces are usable without pytest too:

- ``ccm.testing.etcd``: ``EtcdServer`` and ``EtcdCluster``, real throw-away etcds;
- ``ccm.testing.noderoot``: ``seed_root``, ``node_settings``, ``actions``;
- ``ccm.testing.node``: ``CcmNode``, which runs the ``ccm`` command against a node;
- ``ccm.testing.settings_file``: ``write_settings``, a ``Settings`` as a TOML file.

Only ``ccm.testing.plugin`` imports pytest (import-linter holds that), so ccm never
needs pytest at run time. The names below are imported on first use: ``import
ccm.testing`` (which loading the pytest plugin does) imports nothing else.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ccm.testing.etcd import EtcdCluster, EtcdServer, EtcdServerError, EtcdTls
    from ccm.testing.node import CcmCommandFailed, CcmNode, CliResult
    from ccm.testing.noderoot import (
        actions,
        harmless_commands,
        logging_command,
        node_settings,
        seed_root,
    )
    from ccm.testing.settings_file import write_settings

_WHERE = {
    "EtcdCluster": "etcd",
    "EtcdServer": "etcd",
    "EtcdServerError": "etcd",
    "EtcdTls": "etcd",
    "CcmCommandFailed": "node",
    "CcmNode": "node",
    "CliResult": "node",
    "actions": "noderoot",
    "harmless_commands": "noderoot",
    "logging_command": "noderoot",
    "node_settings": "noderoot",
    "seed_root": "noderoot",
    "write_settings": "settings_file",
}
__all__ = [
    "CcmCommandFailed",
    "CcmNode",
    "CliResult",
    "EtcdCluster",
    "EtcdServer",
    "EtcdServerError",
    "EtcdTls",
    "actions",
    "harmless_commands",
    "logging_command",
    "node_settings",
    "seed_root",
    "write_settings",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'ccm.testing' has no attribute {name!r}")
    return getattr(import_module(f"ccm.testing.{_WHERE[name]}"), name)
