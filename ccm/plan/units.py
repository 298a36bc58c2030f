"""The unit kind: a systemd unit a configuration declares, and its lifecycle on the node.

A configuration declares each unit it runs: enabled or not, running or not, and the
paths whose change restarts it (its config file; its own unit file, when it writes one).
The manifest records what ccm made of every unit, so only units ccm manages are ever
stopped: a unit whose object is deleted (or whose group leaves the node) is no longer
declared, and is stopped and disabled although nothing plans it any more.

The executor orders the lifecycle around the files:

1. units taken down (a ``TakeDown`` step: stop, then disable) come first in their
   configuration's steps, so a unit is stopped and disabled *before* its unit file goes;
   each is saved in the manifest as it happens (a crash never leaves a unit recorded
   as enabled whose file is gone), and the journal starts it again if the run fails;
2. once every file is checked: ``daemon-reload`` when a unit file (or drop-in) under
   ``/etc/systemd/system/`` was written or removed, then the enables and starts of new
   units and the restarts of running ones whose ``restart_on`` paths changed. A start,
   enable or restart that fails restores the run: the units it started are stopped, its
   files are put back, systemd reloads them and restarts what it restarted.

A unit that is new to ccm and declared stopped is left alone (ccm never stops a unit it
did not start); one declared running is started, never restarted, in its first run.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from ccm.errors import PlanError
from ccm.plan.actions import UNIT_DIRECTORY, UnitAction
from ccm.plan.manifest import DOWN, UnitState
from ccm.plan.pending import PendingUnit
from ccm.plan.steps import ConfigurationOperations, NodeView, Run

#: a unit name as it goes on a command line: systemd's characters, never an option
_UNIT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9:_.@-]{0,254}")


@dataclass(frozen=True)
class Unit:
    """A systemd unit this configuration manages.

    ``name``: ``redis-server@shop`` (an instance of the system's template unit) or
    ``ccm-daemon-shop.service``. ``unit_file``: the node path of the unit file when the
    configuration writes it itself (with a ``File`` change, under
    ``/etc/systemd/system/``, named as the unit); None when the system provides it.
    ``enabled``/``running``: what the unit should be. ``restart_on``: node-path prefixes
    whose change restarts a running unit (its config file); the ``unit_file`` is one too.
    """

    name: str
    unit_file: str | None = None
    enabled: bool = True
    running: bool = True
    restart_on: tuple[str, ...] = ()
    origin: tuple[str, ...] = ()

    def compare(self, ops: ConfigurationOperations, node: NodeView) -> None:
        configuration = ops.configuration
        problem = self.problem()
        if problem:
            raise PlanError(configuration, problem)
        if self.name in ops.planned_units:
            raise PlanError(configuration, f"unit {self.name} is declared twice")
        other = node.manifest.owner_of_unit(self.name)
        if other is not None and other != configuration:
            raise PlanError(configuration, f"unit {self.name} is already managed by {other}")
        before = node.manifest.owned(configuration).units.get(self.name)
        after = UnitState(self.enabled, self.running)
        ops.planned_units[self.name] = after
        if before is not None:
            verbs = down_verbs(before, after)
            if verbs:
                ops.add(TakeDown(self.name, verbs, removed=False))
        if self.enabled and not (before and before.enabled):
            ops.lifecycle.append(PendingUnit(configuration, self.name, "enable"))
        if not self.running:
            return
        if before and before.running:
            restart_on = (*self.restart_on, *([self.unit_file] if self.unit_file else []))
            ops.actions.append(UnitAction(self.name, "restart", restart_on))
        else:
            ops.lifecycle.append(PendingUnit(configuration, self.name, "start"))

    def keep(self, ops: ConfigurationOperations, node: NodeView) -> None:
        """Refused: a unit ccm runs for these objects stays as it is (never taken down)."""
        before = node.manifest.owned(ops.configuration).units.get(self.name)
        if before is not None:
            ops.planned_units[self.name] = before

    def problem(self) -> str:
        """Why this declaration is not one ccm can act on ("" when it is)."""
        if not _UNIT_NAME.fullmatch(self.name):
            return f"unit name {self.name!r} is not a systemd unit name"
        if self.unit_file is None:
            return ""
        directory, file_name = posixpath.split(self.unit_file)
        if directory + "/" != UNIT_DIRECTORY:
            return f"unit {self.name}: its unit file {self.unit_file} is not in {UNIT_DIRECTORY}"
        if file_name not in (self.name, self.name + ".service"):
            return f"unit {self.name}: its unit file {self.unit_file} is named for another unit"
        return ""


def down_verbs(before: UnitState, after: UnitState) -> tuple[str, ...]:
    """What takes a unit from ``before`` to ``after``: ``stop`` and/or ``disable``."""
    verbs = []
    if before.running and not after.running:
        verbs.append("stop")
    if before.enabled and not after.enabled:
        verbs.append("disable")
    return tuple(verbs)


@dataclass(frozen=True)
class TakeDown:
    """Stop and/or disable a unit ccm manages: no longer declared (``removed``), or
    declared stopped or disabled. Runs before the configuration's files change."""

    ORDER: ClassVar[int] = -1
    DEFERRED: ClassVar[bool] = False
    unit: str
    verbs: tuple[str, ...]
    removed: bool

    @property
    def claim(self) -> tuple[str, str] | None:
        return None

    @property
    def changed(self) -> str:
        return f"unit:{self.unit}"

    def apply(self, run: Run, configuration: str) -> None:
        for verb in self.verbs:
            run.take_down(configuration, self.unit, verb)

    def text(self, colour: bool) -> list[str]:
        why = "no longer declared" if self.removed else "declared so"
        return [f"- unit {self.unit} ({', '.join(self.verbs)}: {why})\n"]

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": "unit",
            "unit": self.unit,
            "operation": "remove" if self.removed else "down",
            "commands": list(self.verbs),
        }


def plan_unit_removals(ops: ConfigurationOperations, node: NodeView) -> None:
    """Units the configuration managed and no longer declares are taken down (only
    those: a unit ccm never started is never stopped)."""
    owned = node.manifest.owned(ops.configuration)
    for unit, state in sorted(owned.units.items()):
        if unit in ops.planned_units:
            continue
        ops.leaving_units.add(unit)
        verbs = down_verbs(state, DOWN)
        if verbs:
            ops.add(TakeDown(unit, verbs, removed=True))
