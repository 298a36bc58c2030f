"""The action kinds: checks, unit reloads/restarts, commands and playbooks.

A ``Check`` runs after its configuration's files are in place, before any reload. A
``UnitAction`` or ``Command`` whose triggers saw a change becomes a ``Pending`` action:
saved in the manifest before the first one runs and removed as each succeeds, so a
failed reload (or a crash) is run again by the next run. Unit actions are merged across
a run: one per unit, a restart absorbs a reload. ``triggered_actions`` is the one place
that decides which actions a run starts: the executor runs them, ``ccm diff`` lists them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ccm.plan.commands import fill
from ccm.plan.manifest import Manifest
from ccm.plan.steps import ConfigurationOperations, NodeView, triggered
from ccm.settings import Settings


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


@dataclass(frozen=True)
class Playbook:
    """Run an Ansible playbook from ``playbooks/`` with these extra-vars.

    It runs only when its inputs' fingerprint differs from the one recorded at its last
    success on this node, or on a full run (a reconcile): starting Ansible costs seconds.
    """

    playbook: str
    extra_vars: Mapping[str, Any] = field(default_factory=dict)

    def compare(self, ops: ConfigurationOperations, node: NodeView) -> None:
        inputs = node.fingerprint(self)
        ops.planned_playbooks[self.playbook] = inputs
        last = node.manifest.owned(ops.configuration).playbooks.get(self.playbook)
        if node.full or last != inputs:
            ops.playbooks.append(self)


# -- pending actions (kept in the manifest until they succeed) ------------------------------


@dataclass(frozen=True)
class PendingUnit:
    ORDER: ClassVar[int] = 0  # units before commands
    configuration: str
    unit: str
    action: Literal["reload", "restart"]

    @property
    def key(self) -> tuple[str, ...]:
        return ("unit", self.unit)

    def combined(self, other: Pending) -> Pending:
        """The same unit again: a restart absorbs a reload."""
        if self.action == "reload" and isinstance(other, PendingUnit) and other.action == "restart":
            return PendingUnit(self.configuration, self.unit, "restart")
        return self

    def argv(self, settings: Settings) -> list[str]:
        setting = (
            settings.commands.reload_unit
            if self.action == "reload"
            else settings.commands.restart_unit
        )
        return fill(setting, {"unit": self.unit, "root": str(settings.root)})

    def label(self, argv: Sequence[str] = ()) -> str:
        return f"{self.action} {self.unit}"

    def to_json(self) -> dict[str, Any]:
        return {"configuration": self.configuration, "unit": self.unit, "action": self.action}


@dataclass(frozen=True)
class PendingCommand:
    ORDER: ClassVar[int] = 1
    configuration: str
    argv_template: tuple[str, ...]

    @property
    def key(self) -> tuple[str, ...]:
        return ("argv", *self.argv_template)

    def combined(self, other: Pending) -> Pending:
        return self

    def argv(self, settings: Settings) -> list[str]:
        return fill(list(self.argv_template), {"root": str(settings.root)})

    def label(self, argv: Sequence[str] = ()) -> str:
        return "run " + " ".join(argv or self.argv_template)

    def to_json(self) -> dict[str, Any]:
        return {"configuration": self.configuration, "argv": list(self.argv_template)}


Pending = PendingUnit | PendingCommand


def pending_from_json(data: Mapping[str, Any]) -> Pending:
    """A manifest entry back as its action (``ValueError`` when it is neither kind)."""
    configuration = str(data["configuration"])
    if "unit" in data:
        action = str(data["action"])
        if action not in ("reload", "restart"):
            raise ValueError(f"unknown unit action {action!r}")
        return PendingUnit(
            configuration, str(data["unit"]), "reload" if action == "reload" else "restart"
        )
    return PendingCommand(configuration, tuple(str(arg) for arg in data["argv"]))


def merge(actions: Sequence[Pending]) -> list[Pending]:
    """One action per unit (where it first appears; a restart absorbs a reload), and
    each distinct command once, after the units."""
    merged: dict[tuple[str, ...], Pending] = {}
    for action in actions:
        current = merged.get(action.key)
        merged[action.key] = action if current is None else current.combined(action)
    return sorted(merged.values(), key=lambda action: action.ORDER)


def triggered_actions(
    operations: Sequence[ConfigurationOperations],
    changed: Sequence[str],
    pending: Sequence[Pending] = (),
    manifest: Manifest | None = None,
) -> list[Pending]:
    """The reloads and commands a run starts: those an earlier run left pending, those
    whose triggers saw a change among ``changed``, and those the ``manifest`` recorded
    for the files this run removes — merged."""
    fresh = [
        action.pending(ops.configuration)
        for ops in operations
        for action in ops.actions
        if triggered(action.triggers, changed)
    ]
    needed = removal_actions(operations, manifest) if manifest is not None else []
    return merge([*pending, *fresh, *needed])


def removed_paths(ops: ConfigurationOperations) -> list[str]:
    """The files this configuration's run removes (changed, and no longer planned)."""
    return [path for path in ops.changed_paths if path not in ops.planned_files]


def removal_actions(
    operations: Sequence[ConfigurationOperations], manifest: Manifest
) -> list[Pending]:
    """What the files a run removes needed when they were written."""
    return [
        action
        for ops in operations
        for path in removed_paths(ops)
        for action in manifest.owned(ops.configuration).file_actions.get(path, [])
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
