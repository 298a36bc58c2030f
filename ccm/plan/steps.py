"""What the change kinds share: the node as a plan sees it, a configuration's operations,
and the protocol every step (one operation on the node) follows.

A change kind (``ccm.plan.files``, ``ccm.plan.accounts``, ``ccm.plan.units``,
``ccm.plan.actions``) knows how to compare itself with the node (``compare``), and the
steps it plans know how to describe themselves for ``ccm diff`` (text and JSON) and how
to apply themselves on the node, recording their own undo. The executor,
``compute_operations`` and the diff only drive them in order; none of them asks which
kind a change is.

The kinds import this module, never the other way round: what it keeps of the checks
and actions is described by the protocols ``Gate`` and ``Action`` (no import cycle in
``ccm.plan``; an import-linter contract keeps it so).
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ccm.plan.manifest import DOWN, Manifest, UnitState
from ccm.plan.node import Accounts
from ccm.plan.pending import Pending, PendingUnit
from ccm.plan.playbook import Playbook
from ccm.settings import Settings


@dataclass(frozen=True)
class Refusal:
    """Why this node refuses one object, and which configuration found it."""

    configuration: str
    reason: str


@dataclass
class NodeView:
    """The node as one run's plan reads it (nothing here changes it)."""

    root: Path
    manifest: Manifest
    accounts: Accounts
    uid_base: int
    #: inputs fingerprint of a playbook (to skip an unchanged one)
    fingerprint: Callable[[Playbook], str]
    #: a reconcile: run playbooks even with unchanged inputs
    full: bool
    #: ``[accounts] backend``: ``useradd`` or ``extrausers`` (``ccm.plan.extrausers``)
    accounts_backend: str = "useradd"
    #: the node's settings, for a kind that reads a server (``ccm.plan.sql``); None in a
    #: comparison that has none (such a kind then refuses to plan)
    settings: Settings | None = None
    #: what a kind read once for this comparison (a SQL server's state), by its own key
    cache: dict[str, Any] = field(default_factory=dict)

    def under(self, node_path: str) -> str:
        # plain strings: this runs once per planned file, and Path objects cost more here
        return os.path.join(str(self.root), node_path.lstrip("/"))


class Journal(Protocol):
    def record(self, what: str, undo: Callable[[], None]) -> None: ...


class Gate(Protocol):
    """A check or a probe: a declared command run when its triggers saw a change."""

    @property
    def command(self) -> str: ...

    @property
    def triggers(self) -> tuple[str, ...]: ...

    @property
    def variables(self) -> Mapping[str, str]: ...

    def label(self) -> str: ...


class Action(Protocol):
    """A reload, restart or command that runs once everything is in place, when its
    triggers saw a change (or when a file it was recorded for is removed)."""

    @property
    def triggers(self) -> tuple[str, ...]: ...

    def pending(self, configuration: str) -> Pending: ...


class Run(Protocol):
    """What a step needs to apply itself: the executor, seen from a step."""

    @property
    def settings(self) -> Settings: ...

    @property
    def root(self) -> Path: ...

    @property
    def accounts(self) -> Accounts: ...

    @property
    def journal(self) -> Journal: ...

    def run(self, configuration: str, argv: list[str]) -> None:
        """Run ``argv``; ``CommandFailed`` naming the configuration when it fails."""

    def account_argv(self, setting: str, account: Any, username: str) -> list[str]:
        """The ``useradd``/``usermod``/``userdel`` argv of the settings, filled in."""

    def take_down(self, configuration: str, unit: str, verb: str) -> None:
        """Stop or disable (``verb``) a unit ccm manages, and remember it in the manifest;
        a restore brings it back (``CommandFailed`` when the command fails)."""


class Step(Protocol):
    """One operation on the node, as ``ccm diff`` shows it and the executor performs it."""

    #: -1: units taken down (before their files go), 0: accounts, before 1: files (a
    #: file may be owned by an account made here)
    ORDER: ClassVar[int]
    #: runs after the reloads, not in the all-or-nothing phase (``userdel``)
    DEFERRED: ClassVar[bool]

    @property
    def claim(self) -> tuple[str, str] | None:
        """``("file", path)`` or ``("account", name)`` that the manifest records as ccm's
        before the step makes it; None when the step makes nothing new."""

    @property
    def changed(self) -> str:
        """What the run report lists: a node path, ``account:<name>`` or ``unit:<name>``."""

    def apply(self, run: Run, configuration: str) -> None:
        """Perform it; record how to undo it in ``run.journal`` first."""

    def text(self, colour: bool) -> list[str]:
        """Lines for ``ccm diff`` (each ending in a newline)."""

    def as_json(self) -> dict[str, Any]:
        """The entry of ``ccm diff --json``'s ``changes`` (without the configuration)."""


@dataclass
class ConfigurationOperations:
    """Everything one configuration would do on this node in this run."""

    configuration: str
    steps: list[Step] = field(default_factory=list)
    checks: list[Gate] = field(default_factory=list)
    probes: list[Gate] = field(default_factory=list)
    #: reloads and commands, run once everything is in place if their triggers changed
    actions: list[Action] = field(default_factory=list)
    #: the starts and enables of the units it declares, run whatever changed
    lifecycle: list[PendingUnit] = field(default_factory=list)
    #: unit → what it declares of it (the manifest's record after the run)
    planned_units: dict[str, UnitState] = field(default_factory=dict)
    #: units it managed and no longer declares: taken down in this run
    leaving_units: set[str] = field(default_factory=set)
    #: its secret files (the manifest's record), and text from them that no command
    #: output may show (``ccm.plan.secrets.Redactor``)
    planned_secrets: set[str] = field(default_factory=set)
    secret_text: set[str] = field(default_factory=set)
    playbooks: list[Playbook] = field(default_factory=list)
    #: the node paths this configuration now owns (files), for the manifest
    planned_files: set[str] = field(default_factory=set)
    planned_accounts: set[str] = field(default_factory=set)
    #: playbook name → fingerprint of its inputs (the ones skipped as unchanged too)
    planned_playbooks: dict[str, str] = field(default_factory=dict)
    #: paths an interrupted run wrote but never checked: changed, for checks and reloads
    unverified: list[str] = field(default_factory=list)
    #: the objects (``unix-users/3``) whose changes were compared here, not kept as refused:
    #: if one is refused later in the run, what they planned must go (``late_refusals``)
    compared: set[str] = field(default_factory=set)

    def add(self, step: Step) -> None:
        self.steps.append(step)

    def ordered(self) -> list[Step]:
        """The steps in the order they are shown and applied: accounts, then files."""
        return sorted(self.steps, key=lambda step: step.ORDER)

    @property
    def files(self) -> list[Step]:
        """The steps on files and directories (after the account steps)."""
        return [step for step in self.ordered() if step.ORDER > 0]

    @property
    def changed_paths(self) -> list[str]:
        """The node paths written or removed (not ``account:``, ``unit:``)."""
        written = [step.changed for step in self.steps if step.changed.startswith("/")]
        seen = set(written)
        return written + [path for path in self.unverified if path not in seen]

    @property
    def has_changes(self) -> bool:
        return bool(self.steps or self.playbooks or self.unverified or self.lifecycle)

    def unit_target(self, unit: str) -> UnitState | None:
        """What this run makes of ``unit``: declared, taken down, or None (not managed
        here)."""
        if unit in self.leaving_units:
            return DOWN
        return self.planned_units.get(unit)


class ChangedPaths:
    """The paths a run changed, sorted once, asked whether any lies under some prefixes.

    Every path that starts with a prefix sorts at or after it, and all of them sort
    together: one binary search per prefix answers. Scanning every path for every
    trigger was quadratic: the probes of 2,000 new pools against 6,000 written files
    took three seconds of a cold apply.
    """

    def __init__(self, paths: Iterable[str]) -> None:
        self._sorted = sorted(set(paths))

    def under(self, prefixes: Iterable[str]) -> bool:
        paths = self._sorted
        for prefix in prefixes:
            index = bisect_left(paths, prefix)
            if index < len(paths) and paths[index].startswith(prefix):
                return True
        return False


def triggered(triggers: Sequence[str], changed_paths: Iterable[str]) -> bool:
    """Whether any of ``changed_paths`` lies under one of ``triggers`` (one question;
    ask a ``ChangedPaths`` when asking many about the same paths)."""
    return ChangedPaths(changed_paths).under(triggers)
