"""From intended state to operations: compare a configuration's changes with the node.

``compute_operations`` reads the node (files, accounts, the manifest) but changes
nothing; its result is what ``ccm diff`` prints and what the executor performs. An
empty list of operations means the node already is what the plan says (a no-op run).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ccm.errors import PlanError, TenantConflict
from ccm.models.reserved import uid_problem
from ccm.plan.changes import (
    Account,
    Change,
    Check,
    Command,
    Directory,
    File,
    Playbook,
    UnitAction,
)
from ccm.plan.manifest import Manifest, Owned
from ccm.plan.node import Accounts, PathState, read_path


@dataclass(frozen=True)
class Refusal:
    """Why this node refuses one object, and which configuration found it."""

    configuration: str
    reason: str


@dataclass(frozen=True)
class WriteFile:
    path: str
    before: PathState
    change: File
    content_changed: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class RemoveFile:
    path: str
    before: PathState


@dataclass(frozen=True)
class EnsureDirectory:
    path: str
    before: PathState
    change: Directory
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class CreateAccount:
    account: Account


@dataclass(frozen=True)
class ModifyAccount:
    account: Account
    before_shell: str
    before_comment: str


@dataclass(frozen=True)
class DeleteAccount:
    username: str


FileOperation = WriteFile | RemoveFile | EnsureDirectory
AccountOperation = CreateAccount | ModifyAccount | DeleteAccount


@dataclass
class ConfigurationOperations:
    """Everything one configuration would do on this node in this run."""

    configuration: str
    accounts: list[AccountOperation] = field(default_factory=list)
    files: list[FileOperation] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    units: list[UnitAction] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    playbooks: list[Playbook] = field(default_factory=list)
    #: the node paths this configuration now owns (files), for the manifest
    planned_files: set[str] = field(default_factory=set)
    planned_accounts: set[str] = field(default_factory=set)
    #: playbook name → fingerprint of its inputs (the ones skipped as unchanged too)
    planned_playbooks: dict[str, str] = field(default_factory=dict)
    #: paths an interrupted run wrote but never checked: changed, for checks and reloads
    unverified: list[str] = field(default_factory=list)

    @property
    def changed_paths(self) -> list[str]:
        written = [op.path for op in self.files]
        return written + [path for path in self.unverified if path not in written]

    @property
    def has_changes(self) -> bool:
        return bool(self.accounts or self.files or self.playbooks or self.unverified)


def _under(root: Path, node_path: str) -> str:
    # plain strings: this runs once per planned file, and Path objects cost more here
    return os.path.join(str(root), node_path.lstrip("/"))


def triggered(triggers: Sequence[str], changed_paths: Sequence[str]) -> bool:
    return any(path.startswith(prefix) for prefix in triggers for path in changed_paths)


def _mode_owner_reasons(
    before: PathState, mode: int, owner: str, group: str, accounts: Accounts
) -> list[str]:
    reasons = []
    if before.mode != mode:
        reasons.append(f"mode {before.mode:04o} -> {mode:04o}" if before.mode is not None else "")
    if before.uid is not None and accounts.user_name(before.uid) != owner:
        reasons.append(f"owner {accounts.user_name(before.uid)} -> {owner}")
    if before.gid is not None and accounts.group_name(before.gid) != group:
        reasons.append(f"group {accounts.group_name(before.gid)} -> {group}")
    return [reason for reason in reasons if reason]


def compute_operations(
    configuration: str,
    changes: Sequence[Change],
    *,
    root: Path,
    manifest: Manifest,
    accounts: Accounts,
    fingerprint: Callable[[Playbook], str] | None = None,
    full: bool = False,
    uid_base: int = 20000,
    refused: dict[str, Refusal] | None = None,
) -> ConfigurationOperations:
    """The operations for one configuration's changes.

    A playbook runs only when its inputs' ``fingerprint`` differs from the one recorded
    at its last success on this node, or on a ``full`` run (a reconcile): starting
    Ansible costs seconds, so an unrelated change never does.

    ``refused`` (object → why), shared by the configurations of one run, is read and
    extended: a change whose ``origin`` holds a refused object is left as it is on the
    node, and a ``TenantConflict`` on a change with an origin refuses its objects
    instead of failing the run.
    """
    refused = {} if refused is None else refused
    ops = ConfigurationOperations(configuration)
    ops.unverified = list(manifest.unverified.get(configuration, []))
    owned = manifest.owned(configuration)
    for change in changes:
        origin: tuple[str, ...] = getattr(change, "origin", ())
        if origin and not refused.keys().isdisjoint(origin):
            _leave_as_it_is(ops, change, owned)
            continue
        try:
            _plan_change(ops, change, root, manifest, accounts, fingerprint, full, uid_base)
        except TenantConflict as conflict:
            if not origin:
                raise
            for name in origin:
                refused.setdefault(name, Refusal(configuration, conflict.message))
            _leave_as_it_is(ops, change, owned)
    for path in sorted(owned.files - ops.planned_files):
        before = read_path(_under(root, path))
        if before.exists:
            ops.files.append(RemoveFile(path, before))
    for username in sorted(owned.accounts - ops.planned_accounts):
        if username in accounts.users:
            ops.accounts.append(DeleteAccount(username))
    return ops


def _plan_change(
    ops: ConfigurationOperations,
    change: Change,
    root: Path,
    manifest: Manifest,
    accounts: Accounts,
    fingerprint: Callable[[Playbook], str] | None,
    full: bool,
    uid_base: int,
) -> None:
    configuration = ops.configuration
    if isinstance(change, File):
        _plan_file(ops, change, root, manifest, accounts)
    elif isinstance(change, Directory):
        before = read_path(_under(root, change.path), with_content=False)
        if before.exists and not before.is_dir:
            raise TenantConflict(configuration, f"{change.path} exists and is not a directory")
        _refuse_foreign_owner(configuration, change, before, accounts, uid_base)
        reasons = (
            ["new"]
            if not before.exists
            else _mode_owner_reasons(before, change.mode, change.owner, change.group, accounts)
        )
        if reasons:
            ops.files.append(EnsureDirectory(change.path, before, change, tuple(reasons)))
    elif isinstance(change, Account):
        _plan_account(ops, change, manifest, accounts, uid_base)
    elif isinstance(change, Check):
        ops.checks.append(change)
    elif isinstance(change, UnitAction):
        ops.units.append(change)
    elif isinstance(change, Command):
        ops.commands.append(change)
    elif isinstance(change, Playbook):
        inputs = fingerprint(change) if fingerprint is not None else ""
        ops.planned_playbooks[change.playbook] = inputs
        owned = manifest.owned(configuration)
        if full or not inputs or owned.playbooks.get(change.playbook) != inputs:
            ops.playbooks.append(change)


def _leave_as_it_is(ops: ConfigurationOperations, change: Change, owned: Owned) -> None:
    """A refused change: what ccm made for it earlier stays (never removed as orphaned)."""
    if isinstance(change, File) and change.path in owned.files:
        ops.planned_files.add(change.path)
    elif isinstance(change, Account) and change.username in owned.accounts:
        ops.planned_accounts.add(change.username)


def _plan_file(
    ops: ConfigurationOperations, change: File, root: Path, manifest: Manifest, accounts: Accounts
) -> None:
    if change.path in ops.planned_files:
        raise PlanError(ops.configuration, f"{change.path} is planned twice")
    other = manifest.owner_of_file(change.path)
    if other is not None and other != ops.configuration:
        raise PlanError(ops.configuration, f"{change.path} is already owned by {other}")
    missing = accounts.missing(change.owner, change.group)
    if missing:  # a tenant's file whose account this node refused: refuse the file too
        raise TenantConflict(ops.configuration, f"{change.path}: {missing}")
    before = read_path(_under(root, change.path))
    if before.exists and before.is_dir:
        raise TenantConflict(ops.configuration, f"{change.path} is a directory, not a file")
    if before.exists and other is None:
        raise TenantConflict(
            ops.configuration,
            f"{change.path} exists but was not written by ccm; refusing to overwrite it "
            "(move it away to let ccm manage it)",
        )
    ops.planned_files.add(change.path)
    content = change.content.encode()
    if not before.exists:
        ops.files.append(WriteFile(change.path, before, change, True, ("new",)))
        return
    content_changed = before.content != content
    reasons = _mode_owner_reasons(before, change.mode, change.owner, change.group, accounts)
    if content_changed:
        reasons.insert(0, "content")
    if reasons:
        ops.files.append(WriteFile(change.path, before, change, content_changed, tuple(reasons)))


def _refuse_foreign_owner(
    configuration: str, change: Directory, before: PathState, accounts: Accounts, uid_base: int
) -> None:
    """An existing directory owned by another uid is never handed over: it holds data
    (a deleted tenant's kept home), or it is the system's (root's)."""
    if not before.exists or before.uid is None:
        return
    if change.owner_id is not None:
        expected: int | None = uid_base + change.owner_id
    else:
        entry = accounts.users.get(change.owner)
        expected = entry.uid if entry else None
    if before.uid != expected:
        raise TenantConflict(
            configuration,
            f"{change.path} exists and belongs to uid {before.uid} "
            f"({accounts.user_name(before.uid)}), not to {change.owner}; refusing to hand it "
            "over (move it away if it is meant for this account)",
        )


def _plan_account(
    ops: ConfigurationOperations,
    change: Account,
    manifest: Manifest,
    accounts: Accounts,
    uid_base: int,
) -> None:
    configuration = ops.configuration
    existing = accounts.users.get(change.username)
    owner = manifest.owner_of_account(change.username)
    uid = uid_base + change.id
    if existing is None:
        problem = uid_problem(uid)
        if problem:
            raise TenantConflict(
                configuration, f"account {change.username!r} cannot be made here: {problem}"
            )
        holder = accounts.user_name(uid)
        if holder != str(uid):  # the uid is taken by an account of another name
            raise TenantConflict(
                configuration,
                f"account {change.username!r} needs uid {uid}, which {holder!r} holds",
            )
        if change.username in accounts.groups:  # useradd --user-group would fail
            raise TenantConflict(
                configuration,
                f"account {change.username!r} cannot be made: a group of that name exists "
                "on this node",
            )
        ops.planned_accounts.add(change.username)
        ops.accounts.append(CreateAccount(change))
        accounts.planned.add(change.username)
        return
    if owner != configuration:
        raise TenantConflict(
            configuration,
            f"account {change.username!r} exists on this node but was not created by ccm; "
            "refusing to take it over",
        )
    if existing.uid != uid:
        raise TenantConflict(
            configuration,
            f"account {change.username!r} has uid {existing.uid}, not {uid} (unix-users/"
            f"{change.id}): it belongs to another object or was not made by ccm; refusing it",
        )
    ops.planned_accounts.add(change.username)
    if existing.shell != change.shell or existing.comment != change.comment:
        ops.accounts.append(ModifyAccount(change, existing.shell, existing.comment))
