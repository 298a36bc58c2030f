"""From intended state to operations: compare a configuration's changes with the node.

``compute_operations`` reads the node (files, accounts, the manifest) but changes
nothing; its result is what ``ccm diff`` prints and what the executor performs. Each
change compares itself (its kind's ``compare``); this module adds what no single change
knows: the refusals of one run, and the removal of what the configuration owned and no
longer plans (units taken down, files, accounts). An empty result means the node
already is what the plan says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
) -> ConfigurationOperations:
    """The operations for one configuration's changes.

    ``refused`` (object → why), shared by the configurations of one run, is read and
    extended: a change whose ``origin`` holds a refused object is left as it is on the
    node, and a ``TenantConflict`` on a change with an origin refuses its objects
    instead of failing the run.
    """
    node = NodeView(root, manifest, accounts, uid_base, fingerprint, full)
    ops = ConfigurationOperations(configuration)
    ops.unverified = list(manifest.unverified.get(configuration, []))
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
    plan_unit_removals(ops, node)
    plan_removals(ops, node)
    plan_account_removals(ops, node)
    return ops


def _keep(change: Change, ops: ConfigurationOperations, node: NodeView) -> None:
    """A refused change: what ccm made for it earlier stays (never removed as orphaned)."""
    keep = getattr(change, "keep", None)
    if keep is not None:
        keep(ops, node)
