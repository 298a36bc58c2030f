"""The Configuration base class: what a configuration declares and how it plans.

A configuration subscribes to object types, depends on other configurations (by
name), and *plans*: ``plan(snapshot, render)`` returns the full intended state as typed
changes. It is pure: it reads nothing but the snapshot and its templates (through
``render``), writes nothing and runs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Protocol, TypeVar

from ccm.errors import PlanError
from ccm.models.base import CcmObject
from ccm.models.snapshot import Snapshot
from ccm.plan.changes import Change

T = TypeVar("T", bound=CcmObject)


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
    #: its changes run as its tenants' unix accounts (a pool's ``user =``, a crontab's
    #: owner): the accounts must exist on every node this configuration runs on
    needs_accounts: ClassVar[bool] = False
    #: it makes the tenants' accounts: it runs exactly on the nodes where a configuration
    #: that ``needs_accounts`` runs (its own ``groups`` are that union, not a fixed list)
    provides_accounts: ClassVar[bool] = False
    #: the checks its ``Check`` changes name, with their default argv (``{root}`` and
    #: the change's variables filled in); settings override one by name in ``[checks]``
    checks: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    #: the health probes its ``Probe`` changes name, with their default argv; settings
    #: override one by name in ``[probes]``
    probes: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        raise NotImplementedError


def referenced(
    snapshot: Snapshot,
    model: type[T],
    object_id: int,
    *,
    referrer: CcmObject,
    field: str,
    configuration: str,
) -> T:
    """The object ``referrer.field`` points at; ``PlanError`` if the snapshot lacks it.

    The object store refuses dangling references at write time and a snapshot is read at
    one revision, so a missing referenced object means a broken invariant: the planner
    raises, naming both objects, rather than silently dropping the referrer (which would
    make the executor delete what the referrer produced).
    """
    found = snapshot.get(model, object_id)
    if found is None:
        raise PlanError(
            configuration,
            f"{referrer.describe()}: {field} refers to {model.TYPE}/{object_id}, "
            f"which is not in the snapshot (revision {snapshot.revision})",
        )
    return found
