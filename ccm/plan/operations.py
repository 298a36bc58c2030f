"""From intended state to operations: compare a configuration's changes with the node.

``compute_operations`` reads the node (files, accounts, the manifest) but changes
nothing; its result is what ``ccm diff`` prints and what the executor performs. Each
change compares itself (its kind's ``compare``); this module adds what no single change
knows: the refusals of one run, and the removal of what the configuration owned and no
longer plans (units taken down, files, accounts). An empty result means the node
already is what the plan says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ccm.errors import TenantConflict
from ccm.plan.accounts import CreateAccount, DeleteAccount, ModifyAccount, plan_account_removals
from ccm.plan.actions import Playbook
from ccm.plan.changes import Change
from ccm.plan.files import EnsureDirectory, RemoveFile, WriteFile, plan_removals
from ccm.plan.manifest import Manifest
from ccm.plan.node import Accounts
from ccm.plan.steps import ConfigurationOperations, NodeView, Refusal, triggered
from ccm.plan.units import plan_unit_removals
from ccm.settings import Settings

__all__ = [
    "ConfigurationOperations",
    "CreateAccount",
    "DeleteAccount",
    "EnsureDirectory",
    "ModifyAccount",
    "Refusal",
    "RemoveFile",
    "WriteFile",
    "compute_operations",
    "late_refusals",
    "triggered",
]


def compute_operations(
    configuration: str,
    changes: Sequence[Change],
    *,
    root: Path,
    manifest: Manifest,
    accounts: Accounts,
    fingerprint: Callable[[Playbook], str],
    full: bool,
    uid_base: int,
    refused: dict[str, Refusal],
    accounts_backend: str = "useradd",
    settings: Settings | None = None,
) -> ConfigurationOperations:
    """The operations for one configuration's changes.

    ``refused`` (object → why), shared by the configurations of one run, is read and
    extended: a change whose ``origin`` holds a refused object is left as it is on the
    node, and a ``TenantConflict`` on a change with an origin refuses its objects
    instead of failing the run.

    A refused object leaves nothing behind: when a change refuses an object some of
    whose changes were already compared (its account, then its home that root owns),
    the configuration is compared again with that object refused from the start, so
    none of its steps remain. Each pass refuses at least one more object, so this ends.
    """
    node = NodeView(
        root, manifest, accounts, uid_base, fingerprint, full, accounts_backend, settings
    )
    planned_accounts = set(accounts.planned)
    while True:
        ops = _compare(configuration, changes, node, refused)
        if not late_refusals([ops], refused):
            break
        # the accounts the dropped pass planned are not made by this run after all
        accounts.planned.intersection_update(planned_accounts)
    plan_unit_removals(ops, node)
    plan_removals(ops, node)
    plan_account_removals(ops, node)
    return ops


def late_refusals(
    operations: Sequence[ConfigurationOperations], refused: Mapping[str, Refusal]
) -> set[str]:
    """The refused objects whose changes a configuration planned before the refusal was
    known (the same configuration's later change, a later configuration, or an object
    they refer to): those operations are to be computed again without them."""
    return {name for ops in operations for name in ops.compared if name in refused}


def _compare(
    configuration: str, changes: Sequence[Change], node: NodeView, refused: dict[str, Refusal]
) -> ConfigurationOperations:
    """One pass over the changes (a TenantConflict is raised before a change adds anything)."""
    ops = ConfigurationOperations(configuration)
    ops.unverified = list(node.manifest.unverified.get(configuration, []))
    for change in changes:
        origin: tuple[str, ...] = getattr(change, "origin", ())
        if origin and not refused.keys().isdisjoint(origin):
            _keep(change, ops, node)
            continue
        try:
            change.compare(ops, node)
        except TenantConflict as conflict:
            if not origin:
                raise
            for name in origin:
                refused.setdefault(name, Refusal(configuration, conflict.message))
            _keep(change, ops, node)
            continue
        ops.compared.update(origin)
    return ops


def _keep(change: Change, ops: ConfigurationOperations, node: NodeView) -> None:
    """A refused change: what ccm made for it earlier stays (never removed as orphaned)."""
    keep = getattr(change, "keep", None)
    if keep is not None:
        keep(ops, node)
