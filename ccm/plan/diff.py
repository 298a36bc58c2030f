"""Showing a plan without applying it: unified diffs and the actions that would run.

The operations come from ``compute_operations``, the same ones the executor would
perform, so what ``ccm diff`` shows is what ``ccm apply`` does.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from ccm.plan.executor import merge_unit_actions
from ccm.plan.operations import (
    ConfigurationOperations,
    CreateAccount,
    DeleteAccount,
    EnsureDirectory,
    ModifyAccount,
    Refusal,
    RemoveFile,
    WriteFile,
    triggered,
)

_COLOURS = {"+": "\033[32m", "-": "\033[31m", "@": "\033[36m"}
_RESET = "\033[0m"


def _text(content: bytes | None) -> list[str]:
    if content is None:
        return []
    return content.decode(errors="replace").splitlines(keepends=True)


def _unified(path: str, before: bytes | None, after: bytes | None) -> list[str]:
    lines = list(
        difflib.unified_diff(
            _text(before),
            _text(after),
            fromfile="/dev/null" if before is None else f"a{path}",
            tofile="/dev/null" if after is None else f"b{path}",
        )
    )
    return [
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    ]


def _colour(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        colour = _COLOURS.get(line[:1])
        out.append(f"{colour}{line.rstrip(chr(10))}{_RESET}\n" if colour else line)
    return out


def actions_that_would_run(
    operations: Sequence[ConfigurationOperations], pending: Sequence[Mapping[str, Any]] = ()
) -> list[str]:
    """Checks, playbooks, reloads and commands a run would start, in order.

    ``pending``: actions an earlier run left undone (the manifest's list); they run too.
    """
    changed = [path for ops in operations for path in ops.changed_paths]
    actions: list[str] = [
        f"{a['action']} {a['unit']} (pending from an earlier run)"
        if "unit" in a
        else "run " + " ".join(a["argv"]) + " (pending from an earlier run)"
        for a in pending
    ]
    for ops in operations:
        for check in ops.checks:
            if triggered(check.triggers, ops.changed_paths):
                variables = ", ".join(f"{k}={v}" for k, v in sorted(check.variables.items()))
                actions.append(f"check {check.command}" + (f" ({variables})" if variables else ""))
        actions.extend(f"playbook {playbook.playbook}" for playbook in ops.playbooks)
    units = [u for ops in operations for u in ops.units if triggered(u.triggers, changed)]
    actions.extend(f"{u.action} {u.unit}" for u in merge_unit_actions(units))
    for ops in operations:
        actions.extend(
            "run " + " ".join(command.argv)
            for command in ops.commands
            if triggered(command.triggers, changed)
        )
    return actions


#: (configuration, playbook) → the lines of its check-mode preview
Previews = Mapping[tuple[str, str], list[str]]


def describe_text(
    operations: Sequence[ConfigurationOperations],
    *,
    colour: bool = False,
    previews: Previews | None = None,
    pending: Sequence[Mapping[str, Any]] = (),
    refused: Mapping[str, Refusal] | None = None,
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
        for account_op in ops.accounts:
            if isinstance(account_op, CreateAccount):
                a = account_op.account
                out.append(f"+ account {a.username} (home {a.home}, shell {a.shell})\n")
            elif isinstance(account_op, ModifyAccount):
                a = account_op.account
                out.append(
                    f"~ account {a.username} (shell {account_op.before_shell} -> {a.shell})\n"
                )
            elif isinstance(account_op, DeleteAccount):
                out.append(f"- account {account_op.username} (its home directory is kept)\n")
        for file_op in ops.files:
            if isinstance(file_op, WriteFile):
                c = file_op.change
                sign = "~" if file_op.before.exists else "+"
                out.append(
                    f"{sign} file {file_op.path} ({', '.join(file_op.reasons)}; "
                    f"{c.mode:04o} {c.owner}:{c.group})\n"
                )
                if file_op.content_changed:
                    diff = _unified(file_op.path, file_op.before.content, c.content.encode())
                    out.extend(_colour(diff) if colour else diff)
            elif isinstance(file_op, EnsureDirectory):
                d = file_op.change
                out.append(
                    f"~ directory {file_op.path} ({', '.join(file_op.reasons)}; "
                    f"{d.mode:04o} {d.owner}:{d.group})\n"
                )
            elif isinstance(file_op, RemoveFile):
                out.append(f"- file {file_op.path}\n")
                diff = _unified(file_op.path, file_op.before.content, None)
                out.extend(_colour(diff) if colour else diff)
        for playbook in ops.playbooks:
            lines = (previews or {}).get((ops.configuration, playbook.playbook))
            if lines is None:
                out.append(f"! playbook {playbook.playbook} would run (not previewed)\n")
            else:
                out.extend(f"{line}\n" for line in lines)
    actions = actions_that_would_run(operations, pending)
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
    pending: Sequence[Mapping[str, Any]] = (),
    refused: Mapping[str, Refusal] | None = None,
) -> dict[str, Any]:
    changes: list[dict[str, Any]] = []
    for ops in operations:
        for account_op in ops.accounts:
            username = (
                account_op.username
                if isinstance(account_op, DeleteAccount)
                else account_op.account.username
            )
            changes.append(
                {
                    "configuration": ops.configuration,
                    "kind": "account",
                    "operation": type(account_op).__name__,
                    "username": username,
                }
            )
        for file_op in ops.files:
            entry: dict[str, Any] = {"configuration": ops.configuration, "path": file_op.path}
            if isinstance(file_op, WriteFile):
                entry |= {
                    "kind": "file",
                    "operation": "write",
                    "reasons": list(file_op.reasons),
                    "diff": "".join(
                        _unified(
                            file_op.path, file_op.before.content, file_op.change.content.encode()
                        )
                    ),
                }
            elif isinstance(file_op, EnsureDirectory):
                entry |= {
                    "kind": "directory",
                    "operation": "ensure",
                    "reasons": list(file_op.reasons),
                }
            else:
                entry |= {
                    "kind": "file",
                    "operation": "remove",
                    "diff": "".join(_unified(file_op.path, file_op.before.content, None)),
                }
            changes.append(entry)
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
        "actions": actions_that_would_run(operations, pending),
        "refused": {
            name: {"configuration": refusal.configuration, "reason": refusal.reason}
            for name, refusal in sorted((refused or {}).items())
        },
    }
