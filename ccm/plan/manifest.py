"""The manifest: what each configuration wrote on this node, so only that is ever removed.

Stored as JSON at ``<root>/<state_dir>/manifest.json`` and replaced atomically. A file,
account or unit that is not in the manifest was not made by ccm and is never removed
(or stopped). A manifest written before units and secrets existed loads as it is: the
keys they add are optional, and written only when there is something to keep.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccm.errors import RunError
from ccm.plan.fsutil import atomic_write
from ccm.plan.pending import Pending, pending_from_json

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class UnitState:
    """What ccm last made of a unit: enabled or not, running or not."""

    enabled: bool
    running: bool

    def to_json(self) -> dict[str, bool]:
        return {"enabled": self.enabled, "running": self.running}


#: a unit taken down: stopped and disabled
DOWN = UnitState(enabled=False, running=False)


@dataclass
class Owned:
    files: set[str] = field(default_factory=set)
    accounts: set[str] = field(default_factory=set)
    #: playbook name → fingerprint of the inputs of its last successful run
    playbooks: dict[str, str] = field(default_factory=dict)
    #: file → the reloads and commands its last write triggered: removing the file needs
    #: them too, even when the configuration no longer plans them (a PHP version's last
    #: pool deleted: php<v>-fpm must still drop the pool)
    file_actions: dict[str, list[Pending]] = field(default_factory=dict)
    #: unit → what ccm made of it: only a unit listed here is ever stopped or disabled
    units: dict[str, UnitState] = field(default_factory=dict)
    #: files whose content is secret: their removal (or a change to a file that is no
    #: longer secret) never shows the old content
    secrets: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "files": sorted(self.files),
            "accounts": sorted(self.accounts),
            "playbooks": dict(sorted(self.playbooks.items())),
            "file_actions": {
                path: [action.to_json() for action in actions]
                for path, actions in sorted(self.file_actions.items())
                if path in self.files and actions
            },
        }
        # only when there are some: an older manifest is written back unchanged
        if self.units:
            entry["units"] = {unit: self.units[unit].to_json() for unit in sorted(self.units)}
        secrets = sorted(self.secrets & self.files)
        if secrets:
            entry["secrets"] = secrets
        return entry

    def copy(self) -> Owned:
        return Owned(
            set(self.files),
            set(self.accounts),
            dict(self.playbooks),
            {path: list(actions) for path, actions in self.file_actions.items()},
            dict(self.units),
            set(self.secrets),
        )


@dataclass
class Manifest:
    path: Path
    configurations: dict[str, Owned] = field(default_factory=dict)
    #: actions (reloads, commands) whose files are in place but which have not run yet:
    #: a failed reload or a crash in between must not be forgotten by the next run
    pending_actions: list[Pending] = field(default_factory=list)
    #: configuration → paths written by a run that ended (killed, lock lost) before their
    #: check passed: the next run treats them as changed, so they are checked and reloaded
    unverified: dict[str, list[str]] = field(default_factory=dict)
    #: the text last read or written, so saving an unchanged manifest writes nothing
    stored: str = ""

    def state(self) -> tuple[dict[str, Owned], list[Pending], dict[str, list[str]]]:
        """A copy of what the manifest holds, to put back with ``restore``."""
        return (
            {name: owned.copy() for name, owned in self.configurations.items()},
            list(self.pending_actions),
            {name: list(paths) for name, paths in self.unverified.items()},
        )

    def restore(self, state: tuple[dict[str, Owned], list[Pending], dict[str, list[str]]]) -> None:
        configurations, pending, unverified = state
        self.configurations = {name: owned.copy() for name, owned in configurations.items()}
        self.pending_actions = list(pending)
        self.unverified = {name: list(paths) for name, paths in unverified.items()}

    def owned(self, configuration: str) -> Owned:
        return self.configurations.setdefault(configuration, Owned())

    def owner_of_file(self, path: str) -> str | None:
        for name, owned in self.configurations.items():
            if path in owned.files:
                return name
        return None

    def owner_of_account(self, username: str) -> str | None:
        for name, owned in self.configurations.items():
            if username in owned.accounts:
                return name
        return None

    def owner_of_unit(self, unit: str) -> str | None:
        for name, owned in self.configurations.items():
            if unit in owned.units:
                return name
        return None

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return cls(path)
        try:
            return cls._parse(path, text)
        except (ValueError, TypeError, AttributeError, KeyError) as error:
            # never read as "ccm owns nothing": that would orphan every file it wrote
            raise RunError(
                "(manifest)",
                f"{path} cannot be read ({type(error).__name__}: {error}); restore it from a "
                "backup — ccm will not treat it as empty",
            ) from None

    @classmethod
    def _parse(cls, path: Path, text: str) -> Manifest:
        data: dict[str, Any] = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
            raise ValueError(f"not a version {MANIFEST_VERSION} manifest")
        configurations = {
            name: Owned(
                set(entry.get("files", [])),
                set(entry.get("accounts", [])),
                dict(entry.get("playbooks", {})),
                {
                    str(path): [pending_from_json(action) for action in actions]
                    for path, actions in entry.get("file_actions", {}).items()
                },
                {
                    str(unit): UnitState(bool(state["enabled"]), bool(state["running"]))
                    for unit, state in entry.get("units", {}).items()
                },
                {str(path) for path in entry.get("secrets", [])},
            )
            for name, entry in data.get("configurations", {}).items()
        }
        pending = [pending_from_json(action) for action in data.get("pending_actions", [])]
        unverified = {str(k): list(v) for k, v in data.get("unverified", {}).items()}
        return cls(path, configurations, pending, unverified, text)

    def save(self) -> None:
        data = {
            "version": MANIFEST_VERSION,
            "configurations": {
                name: owned.to_json()
                for name, owned in sorted(self.configurations.items())
                if owned.files or owned.accounts or owned.playbooks or owned.units
            },
            "pending_actions": [action.to_json() for action in self.pending_actions],
            "unverified": dict(sorted(self.unverified.items())),
        }
        # compact: the C encoder (an indent takes the pure-Python one, 5x slower on a
        # manifest of 10,000 files, saved a dozen times a run)
        text = json.dumps(data, separators=(",", ":")) + "\n"
        if text != self.stored:
            atomic_write(self.path, text.encode(), mode=0o600)
            self.stored = text
