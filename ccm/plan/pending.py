"""Pending actions: what runs once a run's files are in place, as values the manifest keeps.

A reload, restart, start or enable of a unit, a ``daemon-reload`` or a command is saved in
the manifest before the first one runs and removed as each succeeds, so a failure (or a
crash) is run again by the next run. ``merge`` keeps one action per unit and key, in a
fixed order: ``daemon-reload`` first (systemd must read a changed unit file before a
start or restart uses it), then the units, then the commands.

This module sits below the manifest and the change kinds: it knows the settings' argv
lists and nothing of plans.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ccm.plan.commands import fill
from ccm.settings import Settings

UnitVerb = Literal["reload", "restart", "start", "enable"]

#: how much each action on one unit does: the stronger absorbs the weaker. A start
#: absorbs a reload (a unit that is not running cannot be reloaded; its start reads the
#: new files); a restart absorbs a start (``systemctl restart`` starts a stopped unit, and
#: a start left pending by a crashed run may in fact have run: only a restart is sure to
#: load the files this run wrote).
_STRENGTH: dict[str, int] = {"enable": 0, "reload": 0, "start": 1, "restart": 2}
_VERBS: dict[str, UnitVerb] = {
    "reload": "reload",
    "restart": "restart",
    "start": "start",
    "enable": "enable",
}

#: a unit action's setting in ``[commands]``, and what undoes it when a run is restored
_SETTING: dict[str, str] = {
    "reload": "reload_unit",
    "restart": "restart_unit",
    "start": "start_unit",
    "enable": "enable_unit",
}
#: started or enabled by this run: undone (stopped, disabled) while its unit file is
#: still there, before the run's files are put back
RETRACT: dict[str, str] = {"start": "stop_unit", "enable": "disable_unit"}


@dataclass(frozen=True)
class PendingDaemonReload:
    #: what a removed file needed when it was written runs again when it goes (a reload)
    REPLAYED_ON_REMOVAL: ClassVar[bool] = True
    """``systemctl daemon-reload``: a unit file (or drop-in) was written or removed."""

    ORDER: ClassVar[int] = 0  # before every start or restart
    configuration: str

    @property
    def key(self) -> tuple[str, ...]:
        return ("daemon-reload",)

    @property
    def unit(self) -> str | None:
        return None

    def combined(self, other: Pending) -> Pending:
        return self

    def argv(self, settings: Settings) -> list[str]:
        return fill(settings.commands.daemon_reload, {"root": str(settings.root)})

    def retract(self, settings: Settings) -> list[str] | None:
        return None

    def label(self, argv: Sequence[str] = ()) -> str:
        return "daemon-reload"

    def to_json(self) -> dict[str, Any]:
        return {"configuration": self.configuration, "daemon_reload": True}


@dataclass(frozen=True)
class PendingUnit:
    ORDER: ClassVar[int] = 1  # units before commands
    REPLAYED_ON_REMOVAL: ClassVar[bool] = True  # nginx reloads when a vhost file goes
    configuration: str
    unit: str
    action: UnitVerb

    @property
    def key(self) -> tuple[str, ...]:
        """Enabling is independent of running: its own key. The rest is one per unit."""
        return ("enable" if self.action == "enable" else "unit", self.unit)

    def combined(self, other: Pending) -> Pending:
        """The same unit again (so both enable, or neither): the stronger action wins."""
        if isinstance(other, PendingUnit) and _STRENGTH[other.action] > _STRENGTH[self.action]:
            return PendingUnit(self.configuration, self.unit, other.action)
        return self

    def argv(self, settings: Settings) -> list[str]:
        setting: tuple[str, ...] = getattr(settings.commands, _SETTING[self.action])
        return fill(setting, {"unit": self.unit, "root": str(settings.root)})

    def retract(self, settings: Settings) -> list[str] | None:
        """What takes this back before a restore (stop a unit this run started), or None
        when running it again after the restore is the undo (a restart, a reload)."""
        setting = RETRACT.get(self.action)
        if setting is None:
            return None
        variables = {"unit": self.unit, "root": str(settings.root)}
        return fill(getattr(settings.commands, setting), variables)

    def label(self, argv: Sequence[str] = ()) -> str:
        return f"{self.action} {self.unit}"

    def to_json(self) -> dict[str, Any]:
        return {"configuration": self.configuration, "unit": self.unit, "action": self.action}


@dataclass(frozen=True)
class PendingCommand:
    ORDER: ClassVar[int] = 2
    #: a command works on the file that triggered it (``postmap`` builds that map): when
    #: the file is removed there is nothing for it to do, and running it would fail
    REPLAYED_ON_REMOVAL: ClassVar[bool] = False
    configuration: str
    argv_template: tuple[str, ...]

    @property
    def key(self) -> tuple[str, ...]:
        return ("argv", *self.argv_template)

    @property
    def unit(self) -> str | None:
        return None

    def combined(self, other: Pending) -> Pending:
        return self

    def argv(self, settings: Settings) -> list[str]:
        return fill(list(self.argv_template), {"root": str(settings.root)})

    def retract(self, settings: Settings) -> list[str] | None:
        return None

    def label(self, argv: Sequence[str] = ()) -> str:
        return "run " + " ".join(argv or self.argv_template)

    def to_json(self) -> dict[str, Any]:
        return {"configuration": self.configuration, "argv": list(self.argv_template)}


Pending = PendingDaemonReload | PendingUnit | PendingCommand


def pending_from_json(data: Mapping[str, Any]) -> Pending:
    """A manifest entry back as its action (``ValueError`` when it is no known kind)."""
    configuration = str(data["configuration"])
    if data.get("daemon_reload") is True:
        return PendingDaemonReload(configuration)
    if "unit" in data:
        action = str(data["action"])
        verb = _VERBS.get(action)
        if verb is None:
            raise ValueError(f"unknown unit action {action!r}")
        return PendingUnit(configuration, str(data["unit"]), verb)
    return PendingCommand(configuration, tuple(str(arg) for arg in data["argv"]))


def merge(actions: Sequence[Pending]) -> list[Pending]:
    """One action per key (where it first appears, the stronger kept), ordered:
    ``daemon-reload``, then the units, then each distinct command."""
    merged: dict[tuple[str, ...], Pending] = {}
    for action in actions:
        current = merged.get(action.key)
        merged[action.key] = action if current is None else current.combined(action)
    return sorted(merged.values(), key=lambda action: action.ORDER)
