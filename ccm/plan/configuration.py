"""The Configuration base class: what a configuration declares and how it plans.

A configuration subscribes to object types, depends on other configurations (by
name), and *plans*: ``plan(snapshot, render)`` returns the full intended state as typed
changes. It is pure: it reads nothing but the snapshot and its templates (through
``render``), writes nothing and runs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Protocol

from ccm.models import Snapshot
from ccm.plan.changes import Change


class Render(Protocol):
    """Render a template from ``templates/`` with the given variables."""

    def __call__(self, template: str, /, **variables: object) -> str: ...


class Configuration:
    """Subclass, set the class attributes, implement ``plan``."""

    #: unique name, kebab-case (``nginx-vhosts``)
    name: ClassVar[str]
    #: object types whose change selects this configuration
    subscribes: ClassVar[tuple[str, ...]] = ()
    #: names of configurations that must run before this one (and whose selection selects it)
    depends_on: ClassVar[tuple[str, ...]] = ()
    #: one line for ``ccm graph``
    summary: ClassVar[str] = ""
    #: node groups (``nginx``, ``cron`` …): it runs on a registered node that has any of
    #: them (on an unregistered node, everything runs); empty: on every node
    groups: ClassVar[tuple[str, ...]] = ()
    #: the checks its ``Check`` changes name, with their default argv (``{root}`` and
    #: the change's variables filled in); settings override one by name in ``[checks]``
    checks: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    #: the health probes its ``Probe`` changes name, with their default argv; settings
    #: override one by name in ``[probes]``
    probes: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        raise NotImplementedError
