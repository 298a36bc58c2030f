"""The executor: performs a run's operations on the node, all or nothing.

Order, for the configurations in topological order:

1. per configuration: the units it takes down (stop, then disable: before their unit
   files go), account creations/modifications, then files and directories (atomic
   writes, synced to disk once for the whole run; ownership recorded in the manifest
   before the write), then its checks
   (``nginx -t``…) if any of its paths changed, then its playbooks;
2. once every configuration is in place: the manifest, then ``daemon-reload`` if a unit
   file changed, the enables and starts of new units, the de-duplicated unit
   restarts/reloads (the stronger kept) and the commands whose triggers saw a change,
   then the health probes, then account deletions.

Every step of phase 1 records how to undo itself in a journal. If anything in phase 1
fails — a check, a playbook, a write, even an unexpected ``OSError`` — the journal is
unwound (files restored byte for byte and mode for mode, new files and directories
removed, new accounts deleted, stopped units started again), nothing is reloaded, and a
``RunError`` naming the configuration is raised. Phase 2 starts only when everything
checked: its actions are saved in the manifest as pending before the first one runs,
and each is removed once it succeeded, so a failing reload (``ActionFailed``) leaves the
checked files in place and is run again by the next run — even though that run finds
no file to change. A failing start, enable or restart of a unit a configuration manages
(or ``daemon-reload``), or a failing probe, restores the run instead
(``_restore``): what it started is stopped while its unit file is still there, the
files go back, systemd re-reads them, and what it restarted or reloaded runs again.

Command output reaches errors, logs and the history only through the run's
``Redactor``: no line of a secret file is ever shown.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ccm import faults
from ccm.errors import (
    ActionFailed,
    CcmError,
    CheckFailed,
    CommandFailed,
    LifecycleFailed,
    ProbeFailed,
    RunError,
)
from ccm.log import get_logger
from ccm.plan.accounts import Account
from ccm.plan.actions import Playbook, record_file_actions, triggered_actions
from ccm.plan.commands import CommandResult, CommandRunner, fill, run_command
from ccm.plan.fsutil import sync_filesystems
from ccm.plan.manifest import Manifest, UnitState
from ccm.plan.node import Accounts
from ccm.plan.pending import Pending, PendingDaemonReload
from ccm.plan.progress import Progress, no_progress
from ccm.plan.secrets import Redactor
from ccm.plan.steps import ChangedPaths, ConfigurationOperations, Refusal, Step
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


#: probes run side by side at most (each a short connect to a socket or port)
PROBES_AT_ONCE = 8


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
        probes: Mapping[str, Sequence[str]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        progress: Progress = no_progress,
        sync: Callable[[Iterable[Path]], object] = sync_filesystems,
    ) -> None:
        self.settings = settings
        self.root: Path = settings.root
        self.manifest = manifest
        self.accounts = accounts
        self.runner = runner
        self.playbooks = playbooks
        self.log = get_logger(revision=revision, node=settings.node)
        self.journal = _Journal()
        #: called before every change; raises (``LockLost``) to stop the run there
        self.guard = guard
        #: check name → argv (the configurations' declarations with the settings' overrides)
        self.checks = dict(settings.checks if checks is None else checks)
        self.probes = dict(settings.probes if probes is None else probes)
        self.monotonic = monotonic
        self.sleep = sleep
        #: puts the run's files on disk (they are written without a sync each)
        self.sync = sync
        #: told how far each configuration's steps have got
        self.progress = progress
        #: command output passes through it: the run's secret text never shows
        self.redact = Redactor(set())
        #: what the run did so far (``take_down`` adds its stops and disables)
        self.report = RunReport()
        #: filled by the journal's unwinding: units to enable or start again once the
        #: files are back (and systemd re-read them)
        self._revive: list[list[str]] = []

    def command(self, argv: list[str]) -> CommandResult:
        """Run ``argv`` with the command timeout; its output with secrets redacted."""
        result = self.runner(argv, timeout=self.settings.commands.timeout)
        return dataclasses.replace(result, output=self.redact(result.output))

    # -- what steps use (ccm.plan.steps.Run) ------------------------------------------

    def run(self, configuration: str, argv: list[str]) -> None:
        result = self.command(argv)
        if result.returncode != 0:
            raise CommandFailed(configuration, argv, result.returncode, result.output)

    def take_down(self, configuration: str, unit: str, verb: str) -> None:
        """``stop`` or ``disable`` a unit, saved in the manifest at once (a crash right
        after must not leave it recorded as enabled once its file is gone); the journal
        puts the record back and queues the start or enable that brings it back."""
        variables = {"unit": unit, "root": str(self.root)}
        self.run(configuration, fill(getattr(self.settings.commands, f"{verb}_unit"), variables))
        self.report.actions.append(f"{verb} {unit}")
        owned = self.manifest.owned(configuration)
        before = owned.units[unit]
        owned.units[unit] = UnitState(
            before.enabled and verb != "disable", before.running and verb != "stop"
        )
        self.manifest.save()
        setting = "start_unit" if verb == "stop" else "enable_unit"
        revive = fill(getattr(self.settings.commands, setting), variables)

        def undo() -> None:
            owned.units[unit] = before
            self._revive.append(revive)

        self.journal.record(f"unit {unit}", undo)

    def account_argv(self, setting: str, account: Account | None, username: str) -> list[str]:
        variables = {"root": str(self.root), "username": username}
        if account is not None:
            uid = str(self.settings.accounts.uid_base + account.id)
            variables |= {
                "home": account.home,
                "shell": account.shell,
                "comment": account.comment,
                "uid": uid,
            }
        return fill(getattr(self.settings.commands, setting), variables)

    # -- the whole run -------------------------------------------------------------

    def apply(self, operations: Sequence[ConfigurationOperations]) -> RunReport:
        report = self.report = RunReport()
        self.redact = Redactor(set().union(*(ops.secret_text for ops in operations)))
        before = self.manifest.state()
        current = "(run)"
        try:
            for ops in operations:
                current = ops.configuration
                self._apply_configuration(ops, report)
            current = "(run)"
            self.guard()
            # the files went in unsynced, one by one: on disk before the manifest calls
            # them checked and before anything reloads them
            self.sync(
                self.root / path.lstrip("/") for path in report.changed_paths if path[:1] == "/"
            )
        except BaseException as error:
            self.log.error("run failed, restoring every change of this run", error=str(error))
            self._restore((), None)
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
                step.changed.removeprefix("account:") for step in ops.steps if step.DEFERRED
            }
            # started and enabled once their pending start and enable ran (or restored)
            owned.units = dict(ops.planned_units)
            owned.secrets = set(ops.planned_secrets)
        for ops in operations:  # every file of this run passed its check; a
            # configuration this run did not plan keeps what an interrupted run left
            self.manifest.unverified.pop(ops.configuration, None)
        # saved before any of them runs, removed one by one as they succeed: a failed
        # reload (or a crash) is retried by the next run, which finds every file in place
        self.manifest.pending_actions = triggered_actions(
            operations, report.changed_paths, self.manifest.pending_actions, self.manifest
        )
        for ops in operations:
            record_file_actions(ops, self.manifest)
        self.manifest.save()
        actions = list(self.manifest.pending_actions)
        # reloads first: the workers of a deleted pool exit, so its user can be deleted
        self._run_pending_actions(report, operations, before)
        failed = self._run_probes(operations, report)
        if failed is not None:
            self.log.error("probe failed: restoring every change of this run")
            self._restore(actions, before)
            raise failed
        for ops in operations:
            self._apply_deferred(ops, report)
        return report

    # -- health probes: the gate before the lock is released ---------------------------

    def _run_probes(
        self, operations: Sequence[ConfigurationOperations], report: RunReport
    ) -> ProbeFailed | None:
        """Each probe of what this run touched, retried until it passes or
        ``[rollout] probe_timeout`` runs out; the first (in the configurations' order)
        that keeps failing is returned. The same command line runs once, and up to
        ``PROBES_AT_ONCE`` run side by side: a new node's 2,000 pools each bring a
        probe, and one after the other they took four seconds of its first run."""
        changed = ChangedPaths(report.changed_paths)
        due: dict[tuple[str, ...], str] = {}  # argv → the configuration it probes for
        for ops in operations:
            for probe in ops.probes:
                if not changed.under(probe.triggers):
                    continue
                # no guard: the reloads ran, the gate belongs to them (a SIGTERM finishes
                # the run; a lost lock is caught by the fenced success record)
                declared = self.probes.get(probe.command)
                if declared is None:
                    return ProbeFailed(ops.configuration, [probe.command], 127, "not declared")
                argv = fill(list(declared), {"root": str(self.root), **probe.variables})
                due.setdefault(tuple(argv), ops.configuration)
        if not due:
            return None
        with ThreadPoolExecutor(min(PROBES_AT_ONCE, len(due))) as pool:
            outcomes = list(pool.map(self._probe, due, due.values()))
        for command, failed in zip(due, outcomes, strict=True):
            if failed is not None:
                return failed
            report.actions.append("probe " + " ".join(command))
        return None

    def _probe(self, argv: tuple[str, ...], configuration: str) -> ProbeFailed | None:
        """One probe, tried every ``probe_interval`` until it passes (None) or
        ``probe_timeout`` runs out (its failure)."""
        deadline = self.monotonic() + self.settings.rollout.probe_timeout
        while True:
            result = self.command(list(argv))
            if result.returncode == 0:
                return None
            if self.monotonic() >= deadline:
                self.log.error("probe failed", argv=list(argv), output=result.output)
                return ProbeFailed(configuration, list(argv), result.returncode, result.output)
            self.sleep(self.settings.rollout.probe_interval)

    def _restore(self, ran: Sequence[Pending], before: Any) -> None:
        """Put the node back as it was before this run, in the mirror order of the run.

        ``ran``: the pending actions that ran (or failed) after the files were in place.
        The units this run started or enabled are stopped and disabled first, while
        their unit files are still there; then the journal puts every file, account and
        stopped unit's record back; then systemd re-reads the unit files, the units the
        run took down are enabled and started again, and what was restarted, reloaded or
        run runs again, so the services run what they ran before. ``before``: the
        manifest to put back (None in phase 1, where the journal restores it).
        """
        for action in reversed(ran):
            argv = action.retract(self.settings)
            if argv is not None:
                self._restoring(argv)
        self.journal.unwind(self.log)
        self.accounts.reload()
        if before is not None:
            self.manifest.restore(before)
        self.manifest.save()
        again = [action for action in ran if action.retract(self.settings) is None]
        reloads = [action for action in again if isinstance(action, PendingDaemonReload)]
        for argv in [
            *(action.argv(self.settings) for action in reloads),
            *self._revive,
            *(action.argv(self.settings) for action in again if action not in reloads),
        ]:
            self._restoring(argv)
        self._revive.clear()

    def _restoring(self, argv: list[str]) -> None:
        """One command of a restore: a failure is logged and the restore goes on."""
        result = self.command(argv)
        if result.returncode != 0:
            self.log.error("a command of the restore failed", argv=argv, output=result.output)

    def _apply_configuration(self, ops: ConfigurationOperations, report: RunReport) -> None:
        log = self.log.bind(configuration=ops.configuration)
        steps = [step for step in ops.ordered() if not step.DEFERRED]
        unit_steps = [step for step in steps if step.ORDER < 0]
        account_steps = [step for step in steps if step.ORDER == 0]
        total = len(steps)
        if total:
            self.progress(ops.configuration, 0, total)
        for done, step in enumerate(unit_steps, 1):  # before the files: stopped before gone
            self._apply_step(step, ops, log, done, total)
        self._claim_accounts(ops)
        for done, step in enumerate(account_steps, len(unit_steps) + 1):
            self._apply_step(step, ops, log, done, total)
        if account_steps:
            self.accounts.reload()
        self._claim_files(ops)
        first_file = len(unit_steps) + len(account_steps)
        for done, step in enumerate(steps[first_file:], first_file + 1):
            self._apply_step(step, ops, log, done, total)
            faults.reached("written")
        changed = ops.changed_paths
        # accounts made or changed, units taken down, units to enable or start
        named = [step.changed for step in account_steps + unit_steps]
        named += [f"unit:{action.unit}" for action in ops.lifecycle]
        if changed or named:
            report.changed[ops.configuration] = changed + list(dict.fromkeys(named))
        touched = ChangedPaths(changed)
        for check in ops.checks:
            if not touched.under(check.triggers):
                continue
            self.guard()
            declared = self.checks.get(check.command)
            if declared is None:
                raise RunError(ops.configuration, f"check {check.command!r} is not declared")
            argv = fill(list(declared), {"root": str(self.root), **check.variables})
            result = self.command(argv)
            log.info("check", argv=argv, returncode=result.returncode)
            report.actions.append("check " + " ".join(argv))
            if result.returncode != 0:
                raise CheckFailed(ops.configuration, argv, result.returncode, result.output)
            faults.reached("checked")
        for playbook in ops.playbooks:
            self.guard()
            if self.playbooks is None:
                raise RunError(ops.configuration, "no playbook executor is configured")
            self.playbooks(ops.configuration, playbook)
            report.actions.append(f"playbook {playbook.playbook}")

    def _apply_step(
        self, step: Step, ops: ConfigurationOperations, log: Any, done: int, total: int
    ) -> None:
        self.guard()
        log.info("change", change=step.changed, operation=type(step).__name__)
        step.apply(self, ops.configuration)
        self.progress(ops.configuration, done, total)

    # -- ownership, recorded before the change ----------------------------------------

    @staticmethod
    def _claims(ops: ConfigurationOperations, kind: str) -> set[str]:
        """What the steps of ``ops`` will make of ``kind`` (``file``, ``account``)."""
        return {step.claim[1] for step in ops.steps if step.claim and step.claim[0] == kind}

    def _claim_accounts(self, ops: ConfigurationOperations) -> None:
        """Before ``useradd``: record the accounts as ccm's (a crash must not orphan one).
        A failed run takes back the claim of any account that is not there."""
        held = self.manifest.owned(ops.configuration).accounts
        new = self._claims(ops, "account") - held
        if not new:
            return
        held |= new
        self.manifest.save()

        def undo() -> None:  # runs after the userdel steps: keep any account still there
            self.accounts.reload()
            held.difference_update(n for n in new if n not in self.accounts.users)

        self.journal.record(f"accounts of {ops.configuration}", undo)
        faults.reached("claimed")

    def _claim_files(self, ops: ConfigurationOperations) -> None:
        """Before writing: record the files as ccm's, and as not yet checked.

        A process killed (or a lock lost) between a write and the end of the run must
        not leave a file ccm wrote that the manifest does not list (the next run would
        refuse it as foreign), nor one that was never checked (the next run would
        neither check nor reload it). A failed run restores both.
        """
        if not any(step.ORDER > 0 for step in ops.steps):
            return
        configuration = ops.configuration
        held = self.manifest.owned(configuration).files
        new = self._claims(ops, "file") - held
        before = self.manifest.unverified.get(configuration)
        held |= new
        # secret before written: a crash must not leave its content to a later diff
        self.manifest.owned(configuration).secrets |= ops.planned_secrets
        unverified = set(before or []) | set(ops.changed_paths)
        self.manifest.unverified[configuration] = sorted(unverified)
        self.manifest.save()

        def undo() -> None:
            held.difference_update(new)
            if before is None:
                self.manifest.unverified.pop(configuration, None)
            else:
                self.manifest.unverified[configuration] = before

        self.journal.record(f"files of {configuration}", undo)
        faults.reached("claimed")

    # -- after everything is in place --------------------------------------------------

    def _apply_deferred(self, ops: ConfigurationOperations, report: RunReport) -> None:
        """``userdel`` of accounts no longer planned; a failure keeps it listed, so the
        next run deletes it again."""
        for step in ops.steps:
            if not step.DEFERRED:
                continue
            self.guard()
            self.log.info(
                "change",
                configuration=ops.configuration,
                change=step.changed,
                operation=type(step).__name__,
            )
            try:
                step.apply(self, ops.configuration)
            except CommandFailed as failed:
                raise ActionFailed(
                    ops.configuration, failed.argv, failed.returncode, failed.output
                ) from None
            report.changed.setdefault(ops.configuration, []).append(step.changed)
            self.accounts.reload()
            owned = self.manifest.owned(ops.configuration).accounts
            owned.discard(step.changed.removeprefix("account:"))
            self.manifest.save()

    def _run_pending_actions(
        self, report: RunReport, operations: Sequence[ConfigurationOperations], before: Any
    ) -> None:
        """Run the pending actions in order. A failing reload or command leaves the rest
        pending (``ActionFailed``); a failing daemon-reload, or start, enable, restart or
        reload of a unit a configuration manages, restores the run (``LifecycleFailed``)."""
        ran: list[Pending] = []
        while self.manifest.pending_actions:
            self.guard()
            action = self.manifest.pending_actions[0]
            argv = action.argv(self.settings)
            self.log.info("action", configuration=action.configuration, argv=argv)
            ran.append(action)
            result = self.command(argv)
            if result.returncode != 0:
                if restores(action, operations):
                    self._restore(ran, before)
                    raise LifecycleFailed(
                        action.configuration, argv, result.returncode, result.output
                    )
                raise ActionFailed(action.configuration, argv, result.returncode, result.output)
            report.actions.append(action.label(argv))
            faults.reached("acted")
            self.manifest.pending_actions.pop(0)
            self.manifest.save()


def restores(action: Pending, operations: Sequence[ConfigurationOperations]) -> bool:
    """Whether a failure of ``action`` restores the run: a ``daemon-reload``, or an action
    on a unit one of the configurations manages (its service is the run's own: rather
    the old config running than the new one down)."""
    if isinstance(action, PendingDaemonReload):
        return True
    return action.unit is not None and any(
        ops.unit_target(action.unit) is not None for ops in operations
    )
