"""One run on this node under the cluster lock — shared by ``ccm daemon`` and ``ccm apply``.

    take the cluster lock
    halt flag set?            → release, report "halted" (the caller keeps its work)
    read ONE snapshot (revision R) and the events keys at R
    select: the requested types, plus every type whose events key changed after the
            revision this node last applied (so nothing is missed, whatever the watcher
            saw); everything for a node with no record or a full run
    apply (the executor stops before its next change if the lock's lease is lost)
    success → record nodes/<node> = {applied_revision: R, last_run}  (fenced on the lock)
    failure → halt record + failed last_run + lock release, in ONE fenced transaction
    release the lock

Pending work is derived from revisions, so a crash at any point loses nothing: the
next run finds the same events keys above the same applied revision.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from ccm import faults
from ccm.cluster import backoff
from ccm.cluster.canary import SoakRecord, after_canary, decide
from ccm.cluster.clock import Clock, SystemClock, timestamp
from ccm.cluster.etcd import EtcdClient, Op
from ccm.cluster.failures import ObjectFailures
from ccm.cluster.halt import HaltFlag, HaltRecord
from ccm.cluster.history import RunHistory, RunRecord
from ccm.cluster.lock import ClusterLock, LockHold
from ccm.cluster.nodes import LastRun, NodeRecord, NodeRecords
from ccm.cluster.store import ObjectStore
from ccm.daemon.debounce import ALL
from ccm.engine.run import Engine
from ccm.errors import (
    ActionFailed,
    ClusterError,
    LockLost,
    RunCancelled,
    RunError,
)
from ccm.log import get_logger
from ccm.plan.executor import RunReport
from ccm.settings import Settings

Result = Literal["success", "failed", "halted", "soaking"]


@dataclass
class RunOutcome:
    result: Result
    revision: int = 0
    selected: list[str] = field(default_factory=list)
    report: RunReport = field(default_factory=RunReport)
    error: RunError | None = None
    halt: HaltRecord | None = None
    #: seconds spent waiting for the cluster lock
    lock_wait: float = 0.0
    #: "soaking": try again in this many seconds (None: canaries still to come)
    #: "success" of a canary: the soak it started or joined lasts this long
    soak_left: float | None = None


def missed_types(event_revisions: dict[str, int], applied_revision: int) -> set[str]:
    """Object types whose events key changed after ``applied_revision``."""
    return {t for t, revision in event_revisions.items() if revision > applied_revision}


class NodeRun:
    def __init__(
        self,
        settings: Settings,
        client: EtcdClient,
        engine: Engine,
        *,
        clock: Clock | None = None,
        reuse_parsed: bool = False,
    ) -> None:
        self.settings = settings
        self.node = settings.node
        self.prefix = settings.etcd.prefix
        self.client = client
        self.engine = engine
        self.clock = clock or SystemClock()
        #: ``reuse_parsed``: the daemon's runs keep the objects they parsed for the next
        #: (ObjectStore); a one-shot ``ccm apply`` lets them go as soon as it can
        self.store = ObjectStore(client, self.prefix, writer=self.node, reuse_parsed=reuse_parsed)
        self.halt = HaltFlag(client, self.prefix)
        self.nodes = NodeRecords(client, self.prefix)
        self.failures = ObjectFailures(client, self.prefix)
        self.history = RunHistory(client, self.prefix, settings.history.keep)
        self.soak = SoakRecord(client, self.prefix)
        self.lock = ClusterLock(client, self.prefix, self.node, settings.lock.ttl, self.clock)
        self.log = get_logger(node=self.node)

    def reconfigure(self, settings: Settings, engine: Engine) -> None:
        """New settings (SIGHUP): everything built from them is rebuilt, so a new
        ``lock.ttl`` or ``history.keep`` applies from the next run on (etcd and the node
        name change only with a restart)."""
        self.settings = settings
        self.engine = engine
        self.lock = ClusterLock(self.client, self.prefix, self.node, settings.lock.ttl, self.clock)
        self.history = RunHistory(self.client, self.prefix, settings.history.keep)

    def run(
        self,
        types: Iterable[str] = (),
        *,
        full: bool = False,
        cancel: threading.Event | None = None,
        lock_timeout: float | None = None,
    ) -> RunOutcome:
        """One locked run; raises ``ClusterError`` (etcd, lock) — the caller retries."""
        asked = self.clock.monotonic()
        hold = self.lock.acquire(timeout=lock_timeout, cancel=cancel)
        waited = self.clock.monotonic() - asked
        try:
            outcome = self._run_locked(hold, types, full, cancel)
            outcome.lock_wait = waited
            return outcome
        finally:
            hold.release()

    def _run_locked(
        self,
        hold: LockHold,
        types: Iterable[str],
        full: bool,
        cancel: threading.Event | None,
    ) -> RunOutcome:
        """The run itself, under the lock ``hold`` (released by the caller)."""
        halted = self.halt.get()
        if halted is not None:
            self.log.warning(
                "halt flag is set: not applying", halt=halted.error, halted_by=halted.node
            )
            return RunOutcome("halted", halt=halted)
        canary = self.settings.rollout.canary
        soak = self.soak.get() if canary else None
        change_set = max(self.store.event_revisions().values(), default=0) if canary else 0
        decision = decide(soak, self.node, change_set, canary, self.clock.wall())
        if decision == "wait" and soak is not None:
            left = soak.seconds_left(self.clock.wall())
            self.log.info("soaking: waiting for the canaries", canaries=soak.canaries, left=left)
            return RunOutcome("soaking", soak.revision, soak_left=left)
        record = self.nodes.read(self.node)
        started_at = self.clock.wall()
        started = timestamp(started_at)
        # objects are parsed when a configuration reads them: one that no longer
        # validates fails that configuration's plan (a PlanError, which halts)
        snapshot = self.store.snapshot()
        revision = snapshot.revision
        requested = set(types)
        # applied_revision 0: a first run that failed — still owes a full run
        if full or record is None or record.applied_revision == 0 or ALL in requested:
            selection: set[str] | None = None
        else:
            revisions = self.store.event_revisions(revision)
            selection = requested | missed_types(revisions, record.applied_revision)
        selected = self.engine.select(selection)
        log = self.log.bind(revision=revision)
        log.info("run starts", configurations=selected)

        def guard() -> None:
            hold.check()
            if cancel is not None and cancel.is_set():
                raise RunCancelled(f"{self.node}: stopping; the run was rolled back")

        guard()
        try:
            report = (
                self.engine.apply(snapshot, selection, guard=guard, full=selection is None)
                if selected
                else RunReport()
            )
        except RunError as error:
            if cancel is not None and cancel.is_set():  # stopped (SIGTERM), not failed
                raise RunCancelled(f"{self.node}: stopping; the run was rolled back") from error
            return self._fail(hold, record, revision, selected, started_at, error, cancel)
        finished = self.clock.wall()
        refused = {name: f"{r.configuration}: {r.reason}" for name, r in report.refused.items()}
        last = LastRun.bounded(
            started, timestamp(finished), "success", report.changed_paths, refused=refused
        )
        failures = self.failures.sync_ops(self.node, report.refused, selected, revision, finished)
        soaking: list[Op] = []
        soak_left = None
        if decision == "canary":
            settings = self.settings.rollout
            after = after_canary(soak, self.node, change_set, canary, settings.soak, finished)
            soaking.append(self.soak.put_op(after))
            soak_left = after.seconds_left(finished)
            log.info("applied as a canary", canaries=after.canaries, soak_left=soak_left)
        history = self.history.record_ops(
            RunRecord.bounded(
                self.node,
                revision,
                started,
                last.finished,
                "success",
                report.changed_paths,
                report.actions,
                refused=refused,
            ),
            started_at,
        )
        committed = self.client.txn(
            [hold.fence()],
            [
                self.nodes.put_op(self.node, NodeRecord(revision, last)),
                *failures,
                *history,
                *soaking,
            ],
        )
        faults.reached("recorded")
        if not committed.succeeded:
            raise LockLost(
                f"{self.node}: the cluster lock changed hands before the run "
                "was recorded; it will run again"
            )
        for name, reason in refused.items():
            log.error(
                "object refused on this node; the rest was applied", object=name, error=reason
            )
        log.info("run succeeded", changed=len(report.changed_paths), actions=report.actions)
        return RunOutcome("success", revision, selected, report, soak_left=soak_left)

    def check_health(self) -> bool:
        """A canary during its soak: run every probe once; a failing one sets the halt
        flag (with its output) so the rest of the fleet never applies the change."""
        failures = self.engine.health(self.store.snapshot())
        if not failures:
            return True
        configuration, argv, output = failures[0]
        error = (
            f"canary {self.node}: probe {' '.join(argv)!r} failed during the soak:\n"
            f"{output.strip()}"
        )
        record = HaltRecord.now(
            self.node, configuration, error, self.client.current_revision(), self.clock.wall()
        )
        self.halt.set(record)
        self.log.error("canary unhealthy during the soak: halt flag set", error=error)
        return False

    def _fail(
        self,
        hold: LockHold,
        record: NodeRecord | None,
        revision: int,
        selected: list[str],
        started_at: datetime,
        error: RunError,
        cancel: threading.Event | None,
    ) -> RunOutcome:
        started = timestamp(started_at)
        halt = HaltRecord.now(
            self.node, error.configuration, str(error), revision, self.clock.wall()
        )
        last = LastRun(started, timestamp(self.clock.wall()), "failed", [], str(error))
        applied = record.applied_revision if record else 0
        run = RunRecord(self.node, revision, started, last.finished, "failed", error=str(error))
        try:
            history = self.history.record_ops(run, started_at)
        except ClusterError:  # the halt matters, the history entry does not
            history = []
        writes = [
            self.halt.set_op(halt),
            self.nodes.put_op(self.node, NodeRecord(applied, last)),
            *history,
        ]
        # The halt must reach etcd before anyone else applies: retry through an outage
        # (etcd keeps leases alive across its restart, so the fence usually still holds).

        def record_halt() -> None:
            if not self.client.txn([hold.fence()], [*writes, *hold.release_ops()]).succeeded:
                # the lock was lost meanwhile; a halt is always safe, so set it anyway
                self.client.txn([], writes)

        backoff.retry_until_done(
            record_halt,
            self.settings.backoff,
            retry_on=ClusterError,
            stop=cancel,
            on_retry=lambda error, seconds: self.log.error(
                "cannot record the halt yet; retrying", error=str(error), retry_in=seconds
            ),
        )
        self.log.error(
            "run failed: halt flag set, "
            + (
                "the files of this run are in place (they passed their checks); the action "
                "stays pending and runs again after `ccm resume`"
                if isinstance(error, ActionFailed)
                else "every change of this run was restored"
            ),
            revision=revision,
            configuration=error.configuration,
            error=str(error),
        )
        return RunOutcome("failed", revision, selected, error=error, halt=halt)
