"""The action kinds: checks, probes, unit reloads/restarts and commands (and playbooks,
``ccm.plan.playbook``, re-exported here).

A ``Check`` runs after its configuration's files are in place, before any reload. A
``UnitAction`` or ``Command`` whose triggers saw a change becomes a ``Pending`` action
(``ccm.plan.pending``): saved in the manifest before the first one runs and removed as
each succeeds, so a failed reload (or a crash) is run again by the next run. Unit
actions are merged across a run: one per unit, the stronger kept (a restart absorbs a
reload). ``triggered_actions`` is the one place that decides which actions a run starts:
the executor runs them, ``ccm diff`` lists them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ccm.plan.manifest import Manifest
from ccm.plan.pending import (
    Pending,
    PendingCommand,
    PendingDaemonReload,
    PendingUnit,
    merge,
)
from ccm.plan.playbook import Playbook
from ccm.plan.steps import ChangedPaths, ConfigurationOperations, NodeView, triggered

__all__ = [
    "Check",
    "Command",
    "Playbook",
    "Probe",
    "UnitAction",
    "record_file_actions",
    "removal_actions",
    "triggered_actions",
]

#: where systemd reads the unit files and drop-ins ccm writes: a change there needs a
#: daemon-reload
UNIT_DIRECTORY = "/etc/systemd/system/"


@dataclass(frozen=True)
class Check:
    """A check run after the configuration's files are in place, before any reload.

    ``command`` names a check the configuration declares (``nginx_check``); ``variables``
    fill its placeholders (``{version}``); ``{root}`` is always available.
    """

    command: str
    triggers: tuple[str, ...]
    variables: Mapping[str, str] = field(default_factory=dict)

    def compare(self, ops: ConfigurationOperations, node: NodeView) -> None:
        ops.checks.append(self)

    def label(self) -> str:
        variables = ", ".join(f"{k}={v}" for k, v in sorted(self.variables.items()))
        return f"check {self.command}" + (f" ({variables})" if variables else "")


@dataclass(frozen=True)
class Probe:
    """A health probe run after the reloads when its triggers saw a change: the gate
    before the lock is released. ``command`` names a probe the configuration declares;
    ``variables`` fill its placeholders (``{socket}``). It is retried for a bounded time
    (``[rollout] probe_timeout``); a probe that keeps failing fails the run: the files
    are restored, reloaded again, and the rollout halts with the probe's output."""

    command: str
    triggers: tuple[str, ...]
    variables: Mapping[str, str] = field(default_factory=dict)

    def compare(self, ops: ConfigurationOperations, node: NodeView) -> None:
        ops.probes.append(self)

    def label(self) -> str:
        variables = ", ".join(f"{k}={v}" for k, v in sorted(self.variables.items()))
        return f"probe {self.command}" + (f" ({variables})" if variables else "")


@dataclass(frozen=True)
class UnitAction:
    """Reload or restart a systemd unit; de-duplicated across a run (restart wins)."""

    unit: str
    action: Literal["reload", "restart"]
    triggers: tuple[str, ...]

    def compare(self, ops: ConfigurationOperations, node: NodeView) -> None:
        ops.actions.append(self)

    def pending(self, configuration: str) -> Pending:
        return PendingUnit(configuration, self.unit, self.action)


@dataclass(frozen=True)
class Command:
    """Run an argv list (``{root}`` filled in) after the run's checks passed."""

    argv: tuple[str, ...]
    triggers: tuple[str, ...]

    def compare(self, ops: ConfigurationOperations, node: NodeView) -> None:
        ops.actions.append(self)

    def pending(self, configuration: str) -> Pending:
        return PendingCommand(configuration, self.argv)


def triggered_actions(
    operations: Sequence[ConfigurationOperations],
    changed: Sequence[str],
    pending: Sequence[Pending] = (),
    manifest: Manifest | None = None,
) -> list[Pending]:
    """What a run starts once its files are in place, merged: a ``daemon-reload`` when a
    unit file changed; the actions an earlier run left pending; the starts and enables
    of the units the configurations declare; the actions whose triggers saw a change
    among ``changed``; and those the ``manifest`` recorded for the files this run
    removes. Never an action on a unit this run takes down (or declares stopped): a
    removed Redis instance is not restarted after its stop."""
    reload = [
        PendingDaemonReload(ops.configuration)
        for ops in operations
        if triggered((UNIT_DIRECTORY,), ops.changed_paths)
    ]
    lifecycle = [action for ops in operations for action in ops.lifecycle]
    touched = ChangedPaths(changed)
    fresh = [
        action.pending(ops.configuration)
        for ops in operations
        for action in ops.actions
        if touched.under(action.triggers)
    ]
    needed = removal_actions(operations, manifest) if manifest is not None else []
    merged = merge([*reload[:1], *pending, *lifecycle, *fresh, *needed])
    return [action for action in merged if wanted(action, operations)]


def wanted(action: Pending, operations: Sequence[ConfigurationOperations]) -> bool:
    """False for an action on a unit that this run takes down: an enable of a unit it
    leaves disabled, a start, restart or reload of one it leaves stopped."""
    if not isinstance(action, PendingUnit):
        return True
    for ops in operations:
        target = ops.unit_target(action.unit)
        if target is not None:
            return target.enabled if action.action == "enable" else target.running
    return True


def removed_paths(ops: ConfigurationOperations) -> list[str]:
    """The files this configuration's run removes (changed, and no longer planned)."""
    return [path for path in ops.changed_paths if path not in ops.planned_files]


def removal_actions(
    operations: Sequence[ConfigurationOperations], manifest: Manifest
) -> list[Pending]:
    """What the files a run removes needed when they were written, where it still
    makes sense (a reload, never a command on the removed file)."""
    return [
        action
        for ops in operations
        for path in removed_paths(ops)
        for action in manifest.owned(ops.configuration).file_actions.get(path, [])
        if action.REPLAYED_ON_REMOVAL
    ]


def record_file_actions(ops: ConfigurationOperations, manifest: Manifest) -> None:
    """Remember, per file this run writes, the actions it triggers; forget removed ones."""
    owned = manifest.owned(ops.configuration)
    for path in ops.changed_paths:
        if path in ops.planned_files:
            needs = [
                action.pending(ops.configuration)
                for action in ops.actions
                if triggered(action.triggers, [path])
            ]
            owned.file_actions[path] = merge(needs)
        else:
            owned.file_actions.pop(path, None)
