"""The playbook kind: run an Ansible playbook when its inputs changed.

It sits below ``ccm.plan.steps``, which keeps each configuration's playbooks and hands
them to the playbook executor as they are: so its ``compare`` is written against the few
things it reads and fills (the protocols below), which the shared module's
``ConfigurationOperations`` and ``NodeView`` provide. That keeps ``ccm.plan`` free of
import cycles (an import-linter contract in pyproject.toml holds it so).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ccm.plan.manifest import Manifest


class _Operations(Protocol):
    @property
    def configuration(self) -> str: ...

    @property
    def playbooks(self) -> list[Playbook]: ...

    @property
    def planned_playbooks(self) -> dict[str, str]: ...


class _Node(Protocol):
    @property
    def manifest(self) -> Manifest: ...

    @property
    def fingerprint(self) -> Callable[[Playbook], str]: ...

    @property
    def full(self) -> bool: ...


@dataclass(frozen=True)
class Playbook:
    """Run an Ansible playbook from ``playbooks/`` with these extra-vars.

    It runs only when its inputs' fingerprint differs from the one recorded at its last
    success on this node, or on a full run (a reconcile): starting Ansible costs seconds.
    """

    playbook: str
    extra_vars: Mapping[str, Any] = field(default_factory=dict)

    def compare(self, ops: _Operations, node: _Node) -> None:
        inputs = node.fingerprint(self)
        ops.planned_playbooks[self.playbook] = inputs
        last = node.manifest.owned(ops.configuration).playbooks.get(self.playbook)
        if node.full or last != inputs:
            ops.playbooks.append(self)
