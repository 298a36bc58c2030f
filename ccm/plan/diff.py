"""Showing a plan without applying it: unified diffs and the actions that would run.

The operations come from ``compute_operations``, the same ones the executor would
perform, so what ``ccm diff`` shows is what ``ccm apply`` does: per configuration, the
units it takes down (``- unit``, stopped and disabled before its files change), its
accounts and files (a secret file as fingerprints and line numbers), the units it
brings up (``+ unit``); then every action in the order it would run (``daemon-reload``,
enables, starts, restarts, reloads, commands, probes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ccm.plan.actions import triggered_actions, wanted
from ccm.plan.files import coloured, unified
from ccm.plan.manifest import Manifest
from ccm.plan.pending import Pending
from ccm.plan.steps import ChangedPaths, ConfigurationOperations, Refusal

__all__ = [
    "Previews",
    "actions_that_would_run",
    "coloured",
    "describe_json",
    "describe_text",
    "unified",
]


def actions_that_would_run(
    operations: Sequence[ConfigurationOperations],
    pending: Sequence[Pending] = (),
    manifest: Manifest | None = None,
) -> list[str]:
    """Checks, playbooks, reloads and commands a run would start, in order.

    ``pending``: actions an earlier run left undone (the manifest's list); they run too.
    ``manifest``: what removed files needed when they were written (their reloads).
    """
    changed = [path for ops in operations for path in ops.changed_paths]
    actions = [
        f"{action.label()} (pending from an earlier run)"
        for action in pending
        if wanted(action, operations)
    ]
    for ops in operations:
        touched = ChangedPaths(ops.changed_paths)
        actions += [c.label() for c in ops.checks if touched.under(c.triggers)]
        actions += [f"playbook {playbook.playbook}" for playbook in ops.playbooks]
    fresh = triggered_actions(operations, changed, manifest=manifest)
    actions += [action.label() for action in fresh]
    everything = ChangedPaths(changed)
    for ops in operations:
        actions += [p.label() for p in ops.probes if everything.under(p.triggers)]
    return actions


def units_up(ops: ConfigurationOperations) -> dict[str, list[str]]:
    """Unit → what the run does to bring it up (``enable``, ``start``), in order."""
    up: dict[str, list[str]] = {}
    for action in ops.lifecycle:
        up.setdefault(action.unit, []).append(action.action)
    return up


#: (configuration, playbook) → the lines of its check-mode preview
Previews = Mapping[tuple[str, str], list[str]]


def describe_text(
    operations: Sequence[ConfigurationOperations],
    *,
    colour: bool = False,
    previews: Previews | None = None,
    pending: Sequence[Pending] = (),
    refused: Mapping[str, Refusal] | None = None,
    manifest: Manifest | None = None,
) -> str:
    out: list[str] = []
    for ops in operations:
        if not ops.has_changes:
            continue
        out.append(f"# {ops.configuration}\n")
        out.extend(
            f"~ file {path} (written by an interrupted run, never checked)\n"
            for path in ops.unverified
        )
        for step in ops.ordered():
            out.extend(step.text(colour))
        out.extend(f"+ unit {unit} ({', '.join(verbs)})\n" for unit, verbs in units_up(ops).items())
        for playbook in ops.playbooks:
            lines = (previews or {}).get((ops.configuration, playbook.playbook))
            if lines is None:
                out.append(f"! playbook {playbook.playbook} would run (not previewed)\n")
            else:
                out.extend(f"{line}\n" for line in lines)
    actions = actions_that_would_run(operations, pending, manifest)
    if actions:
        out.append("# actions\n")
        out.extend(f"! {action}\n" for action in actions)
    if refused:
        out.append("# refused on this node: left as they are, the rest applies\n")
        out.extend(
            f"! {name}: {refusal.configuration}: {refusal.reason}\n"
            for name, refusal in sorted(refused.items())
        )
    return "".join(out)


def describe_json(
    operations: Sequence[ConfigurationOperations],
    revision: int,
    previews: Previews | None = None,
    pending: Sequence[Pending] = (),
    refused: Mapping[str, Refusal] | None = None,
    manifest: Manifest | None = None,
) -> dict[str, Any]:
    changes = [
        {"configuration": ops.configuration, **change}
        for ops in operations
        for change in [
            *(step.as_json() for step in ops.ordered()),
            *(
                {"kind": "unit", "unit": unit, "operation": "up", "commands": verbs}
                for unit, verbs in units_up(ops).items()
            ),
        ]
    ]
    playbooks = [
        {
            "configuration": ops.configuration,
            "playbook": playbook.playbook,
            "preview": (previews or {}).get((ops.configuration, playbook.playbook)),
        }
        for ops in operations
        for playbook in ops.playbooks
    ]
    return {
        "revision": revision,
        "changes": changes,
        "playbooks": playbooks,
        "actions": actions_that_would_run(operations, pending, manifest),
        "refused": {
            name: {"configuration": refusal.configuration, "reason": refusal.reason}
            for name, refusal in sorted((refused or {}).items())
        },
    }
