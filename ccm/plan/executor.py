"""The executor: performs a run's operations on the node, all or nothing.

Order, for the configurations in topological order:

1. per configuration: account creations/modifications, then files and directories
   (atomic writes; ownership recorded in the manifest before the write), then its
   checks (``nginx -t``…) if any of its paths changed, then its playbooks;
2. once every configuration is in place: the manifest, account deletions, then the
   de-duplicated unit reloads/restarts (a restart absorbs a reload) and commands whose
   triggers saw a change.

Every step of phase 1 records how to undo itself in a journal. If anything in phase 1
fails — a check, a playbook, a write, even an unexpected ``OSError`` — the journal is
unwound (files restored byte for byte and mode for mode, new files and directories
removed, new accounts deleted), nothing is reloaded, and a ``RunError`` naming the
configuration is raised. Phase 2 starts only when everything checked: its actions are
saved in the manifest as pending before the first one runs, and each is removed once
it succeeded, so a failing reload (``ActionFailed``) leaves the checked files in place
and is run again by the next run — even though that run finds no file to change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ccm.errors import ActionFailed, CcmError, CheckFailed, CommandFailed, RunError
from ccm.log import get_logger
from ccm.plan.changes import Account, Playbook, UnitAction
from ccm.plan.commands import CommandRunner, fill, run_command
from ccm.plan.fsutil import (
    atomic_write,
    make_directory,
    make_parents,
    remove_file,
    set_mode_owner,
)
from ccm.plan.manifest import Manifest
from ccm.plan.node import Accounts
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
from ccm.settings import Settings


class PlaybookPreview(Protocol):
    def lines(self) -> list[str]: ...


class PlaybookExecutor(Protocol):
    """Runs playbooks (``ccm.plan.ansible.AnsiblePlaybooks``); raises ``PlaybookFailed``."""

    def __call__(self, configuration: str, playbook: Playbook) -> None: ...

    def check(self, configuration: str, playbook: Playbook) -> PlaybookPreview: ...

    def fingerprint(self, playbook: Playbook) -> str: ...


@dataclass
class RunReport:
    """What a run did: changed paths per configuration and the actions taken."""

    changed: dict[str, list[str]] = field(default_factory=dict)
    actions: list[str] = field(default_factory=list)
    #: objects this node refused (``unix-users/3`` → why): left as they were
    refused: dict[str, Refusal] = field(default_factory=dict)

    @property
    def changed_paths(self) -> list[str]:
        return [path for paths in self.changed.values() for path in paths]


class _Journal:
    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], None]]] = []

    def record(self, what: str, undo: Callable[[], None]) -> None:
        self._undo.append((what, undo))

    def unwind(self, log: Any) -> None:
        for what, undo in reversed(self._undo):
            try:
                undo()
            except Exception as error:  # keep unwinding: restore as much as possible
                log.error("rollback step failed", change=what, error=str(error))
        self._undo.clear()


def merge_unit_actions(actions: Sequence[UnitAction]) -> list[UnitAction]:
    """One action per unit, in first-seen order; a restart absorbs a reload."""
    merged: dict[str, UnitAction] = {}
    for action in actions:
        current = merged.get(action.unit)
        if current is None or (current.action == "reload" and action.action == "restart"):
            merged[action.unit] = action
    return list(merged.values())


class Executor:
    def __init__(
        self,
        settings: Settings,
        manifest: Manifest,
        accounts: Accounts,
        *,
        runner: CommandRunner = run_command,
        playbooks: PlaybookExecutor | None = None,
        revision: int = 0,
        guard: Callable[[], None] = lambda: None,
        checks: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.settings = settings
        self.root = settings.root
        self.manifest = manifest
        self.accounts = accounts
        self.runner = runner
        self.playbooks = playbooks
        self.log = get_logger(revision=revision, node=settings.node)
        self._journal = _Journal()
        #: called before every change; raises (``LockLost``) to stop the run there
        self.guard = guard
        #: check name → argv (the configurations' declarations with the settings' overrides)
        self.checks = dict(settings.checks if checks is None else checks)

    # -- the whole run -------------------------------------------------------------

    def apply(self, operations: Sequence[ConfigurationOperations]) -> RunReport:
        report = RunReport()
        current = "(run)"
        try:
            for ops in operations:
                current = ops.configuration
                self._apply_configuration(ops, report)
            current = "(run)"
            self.guard()
        except BaseException as error:
            self.log.error("run failed, restoring every change of this run", error=str(error))
            self._journal.unwind(self.log)
            self.accounts.reload()
            self.manifest.save()
            if isinstance(error, CcmError) or not isinstance(error, Exception):
                raise
            # disk full, permission denied, a bug: still a failed run that halts the
            # rollout and names the configuration, never a crashed daemon
            raise RunError(current, f"{type(error).__name__}: {error}") from error
        for ops in operations:
            owned = self.manifest.owned(ops.configuration)
            owned.files = set(ops.planned_files)
            owned.playbooks = dict(ops.planned_playbooks)
            # accounts still to delete stay listed until userdel succeeded
            owned.accounts = set(ops.planned_accounts) | {
                op.username for op in ops.accounts if isinstance(op, DeleteAccount)
            }
        self.manifest.unverified = {}  # every written file passed its check
        self._remember_actions(operations, report)
        self.manifest.save()
        # reloads first: the workers of a deleted pool exit, so its user can be deleted
        self._run_pending_actions(report)
        for ops in operations:
            self._delete_accounts(ops, report)
        return report

    def _apply_configuration(self, ops: ConfigurationOperations, report: RunReport) -> None:
        log = self.log.bind(configuration=ops.configuration)
        self._claim_accounts(ops)
        for account_op in ops.accounts:
            self.guard()
            if isinstance(account_op, CreateAccount):
                self._create_account(ops.configuration, account_op.account, log)
            elif isinstance(account_op, ModifyAccount):
                self._modify_account(ops.configuration, account_op, log)
        if ops.accounts:
            self.accounts.reload()
        self._claim_files(ops)
        for file_op in ops.files:
            self.guard()
            log.info("change", change=file_op.path, operation=type(file_op).__name__)
            if isinstance(file_op, WriteFile):
                self._write_file(ops.configuration, file_op)
            elif isinstance(file_op, EnsureDirectory):
                self._ensure_directory(ops.configuration, file_op)
            elif isinstance(file_op, RemoveFile):
                self._remove_file(file_op)
        changed = ops.changed_paths
        if changed or ops.accounts:
            report.changed[ops.configuration] = changed + [
                f"account:{op.account.username}"
                for op in ops.accounts
                if not isinstance(op, DeleteAccount)
            ]
        for check in ops.checks:
            if not triggered(check.triggers, changed):
                continue
            self.guard()
            declared = self.checks.get(check.command)
            if declared is None:
                raise RunError(ops.configuration, f"check {check.command!r} is not declared")
            argv = fill(list(declared), {"root": str(self.root), **check.variables})
            result = self.runner(argv, timeout=self.settings.commands.timeout)
            log.info("check", argv=argv, returncode=result.returncode)
            report.actions.append("check " + " ".join(argv))
            if result.returncode != 0:
                raise CheckFailed(ops.configuration, argv, result.returncode, result.output)
        for playbook in ops.playbooks:
            self.guard()
            if self.playbooks is None:
                raise RunError(ops.configuration, "no playbook executor is configured")
            self.playbooks(ops.configuration, playbook)
            report.actions.append(f"playbook {playbook.playbook}")

    # -- files ---------------------------------------------------------------------

    def _claim_files(self, ops: ConfigurationOperations) -> None:
        """Before writing: record the files as ccm's, and as not yet checked.

        A process killed (or a lock lost) between a write and the end of the run must
        not leave a file ccm wrote that the manifest does not list (the next run would
        refuse it as foreign), nor one that was never checked (the next run finds it
        in place and would neither check nor reload it). A failed run restores both.
        """
        if not ops.files:
            return
        configuration = ops.configuration
        owned = self.manifest.owned(configuration)
        new = {op.path for op in ops.files if isinstance(op, WriteFile)} - owned.files
        before = self.manifest.unverified.get(configuration)
        owned.files |= new
        self.manifest.unverified[configuration] = sorted(set(before or []) | set(ops.changed_paths))
        self.manifest.save()

        def undo() -> None:
            owned.files.difference_update(new)
            if before is None:
                self.manifest.unverified.pop(configuration, None)
            else:
                self.manifest.unverified[configuration] = before

        self._journal.record(f"manifest of {configuration}", undo)

    def _claim_accounts(self, ops: ConfigurationOperations) -> None:
        """Before ``useradd``: record the accounts as ccm's (a crash must not orphan one)."""
        names = {op.account.username for op in ops.accounts if isinstance(op, CreateAccount)}
        owned = self.manifest.owned(ops.configuration).accounts
        new = names - owned
        if not new:
            return
        owned |= new
        self.manifest.save()

        def undo() -> None:  # runs after the userdel steps: keep any account still there
            self.accounts.reload()
            owned.difference_update(n for n in new if n not in self.accounts.users)

        self._journal.record(f"accounts of {ops.configuration}", undo)

    def _real(self, node_path: str) -> Path:
        return self.root / node_path.lstrip("/")

    def _write_file(self, configuration: str, op: WriteFile) -> None:
        target, root = self._real(op.path), self.root
        change = op.change
        uid = self.accounts.uid(change.owner, configuration=configuration)
        gid = self.accounts.gid(change.group, configuration=configuration)
        created = make_parents(target, root)
        self._journal.record(f"parents of {op.path}", lambda: _remove_empty(created))
        before = op.before
        if before.exists and before.content is not None:
            content, mode = before.content, before.mode or 0o600

            def restore() -> None:
                atomic_write(target, content, mode=mode, uid=before.uid, gid=before.gid, root=root)

            self._journal.record(op.path, restore)
        else:
            self._journal.record(op.path, lambda: remove_file(target, root))
        if op.content_changed or not before.exists:
            atomic_write(
                target, change.content.encode(), mode=change.mode, uid=uid, gid=gid, root=root
            )
        else:  # only mode or owner differ
            set_mode_owner(target, change.mode, uid, gid, root)

    def _ensure_directory(self, configuration: str, op: EnsureDirectory) -> None:
        target, root = self._real(op.path), self.root
        uid = self.accounts.uid(op.change.owner, configuration=configuration)
        gid = self.accounts.gid(op.change.group, configuration=configuration)
        if not op.before.exists:
            created = make_directory(target, root)
            self._journal.record(op.path, lambda: _remove_empty(created))
        else:
            mode, before_uid, before_gid = op.before.mode, op.before.uid, op.before.gid

            def restore() -> None:
                set_mode_owner(target, mode or 0o755, before_uid or 0, before_gid or 0, root)

            self._journal.record(op.path, restore)
        set_mode_owner(target, op.change.mode, uid, gid, root)

    def _remove_file(self, op: RemoveFile) -> None:
        target, root = self._real(op.path), self.root
        before = op.before
        content = before.content or b""

        def restore() -> None:
            atomic_write(
                target,
                content,
                mode=before.mode or 0o600,
                uid=before.uid,
                gid=before.gid,
                root=root,
            )

        self._journal.record(op.path, restore)
        remove_file(target, root)

    # -- accounts ------------------------------------------------------------------

    def _account_command(self, name: str, account: Account | None, username: str) -> list[str]:
        variables = {"root": str(self.root), "username": username}
        if account is not None:
            uid = str(self.settings.accounts.uid_base + account.id)
            variables |= {
                "home": account.home,
                "shell": account.shell,
                "comment": account.comment,
                "uid": uid,
            }
        return fill(getattr(self.settings.commands, name), variables)

    def _run(self, configuration: str, argv: list[str]) -> None:
        result = self.runner(argv, timeout=self.settings.commands.timeout)
        if result.returncode != 0:
            raise CommandFailed(configuration, argv, result.returncode, result.output)

    def _create_account(self, configuration: str, account: Account, log: Any) -> None:
        log.info("change", change=f"account {account.username}", operation="useradd")
        self._run(configuration, self._account_command("useradd", account, account.username))
        userdel = self._account_command("userdel", None, account.username)
        self._journal.record(
            f"account {account.username}", lambda: self._run(configuration, userdel)
        )

    def _modify_account(self, configuration: str, op: ModifyAccount, log: Any) -> None:
        log.info("change", change=f"account {op.account.username}", operation="usermod")
        self._run(configuration, self._account_command("usermod", op.account, op.account.username))
        previous = Account(
            op.account.username, op.account.home, op.account.id, op.before_shell, op.before_comment
        )
        undo = self._account_command("usermod", previous, previous.username)
        self._journal.record(f"account {previous.username}", lambda: self._run(configuration, undo))

    def _delete_accounts(self, ops: ConfigurationOperations, report: RunReport) -> None:
        for op in ops.accounts:
            if isinstance(op, DeleteAccount):
                self.guard()
                self.log.info(
                    "change",
                    configuration=ops.configuration,
                    change=f"account {op.username}",
                    operation="userdel",
                )
                argv = self._account_command("userdel", None, op.username)
                result = self.runner(argv, timeout=self.settings.commands.timeout)
                if result.returncode != 0:  # stays listed: the next run deletes it again
                    raise ActionFailed(ops.configuration, argv, result.returncode, result.output)
                report.changed.setdefault(ops.configuration, []).append(f"account:{op.username}")
                self.accounts.reload()
                self.manifest.owned(ops.configuration).accounts.discard(op.username)
                self.manifest.save()

    # -- actions after everything is in place ------------------------------------

    def _remember_actions(
        self, operations: Sequence[ConfigurationOperations], report: RunReport
    ) -> None:
        """Add this run's triggered reloads and commands to the manifest's pending list.

        They are saved before any of them runs and removed one by one as they succeed,
        so a failed reload (or a crash) is retried by the next run even though that run
        finds every file already in place.
        """
        changed = report.changed_paths
        pending = list(self.manifest.pending_actions)
        for ops in operations:
            for unit in ops.units:
                if triggered(unit.triggers, changed):
                    pending.append(
                        {
                            "configuration": ops.configuration,
                            "unit": unit.unit,
                            "action": unit.action,
                        }
                    )
            for command in ops.commands:
                if triggered(command.triggers, changed):
                    pending.append({"configuration": ops.configuration, "argv": list(command.argv)})
        units = merge_unit_actions(
            [UnitAction(a["unit"], a["action"], ()) for a in pending if "unit" in a]
        )
        owners = {a["unit"]: a["configuration"] for a in pending if "unit" in a}
        commands: list[dict[str, Any]] = []
        for action in pending:
            if "argv" in action and action not in commands:
                commands.append(action)
        self.manifest.pending_actions = [
            {"configuration": owners[u.unit], "unit": u.unit, "action": u.action} for u in units
        ] + commands

    def _run_pending_actions(self, report: RunReport) -> None:
        """Run the pending reloads, restarts and commands; a failure leaves the rest pending."""
        while self.manifest.pending_actions:
            self.guard()
            action = self.manifest.pending_actions[0]
            configuration = str(action["configuration"])
            if "unit" in action:
                setting = "reload_unit" if action["action"] == "reload" else "restart_unit"
                variables = {"unit": str(action["unit"]), "root": str(self.root)}
                argv = fill(getattr(self.settings.commands, setting), variables)
                label = f"{action['action']} {action['unit']}"
            else:
                argv = fill([str(a) for a in action["argv"]], {"root": str(self.root)})
                label = "run " + " ".join(argv)
            self.log.info("action", configuration=configuration, argv=argv)
            result = self.runner(argv, timeout=self.settings.commands.timeout)
            if result.returncode != 0:
                raise ActionFailed(configuration, argv, result.returncode, result.output)
            report.actions.append(label)
            self.manifest.pending_actions.pop(0)
            self.manifest.save()


def _remove_empty(directories: Sequence[Path]) -> None:
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return
