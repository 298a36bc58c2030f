"""``ccm daemon``: the node's main loop, wiring the cluster layer to the engine.

start: connect, announce alive/<node>, queue a catch-up run (everything missed since
       the applied revision — derived in NodeRun from revisions), start the watcher
loop:  events → debouncer; when due → NodeRun under the lock
       halted → keep the pending work, watch the halt key until ``ccm resume``
       etcd trouble → keep the work, retry after a capped back-off
       every reconcile_interval → a full run (repairs drift)
READY=1 once the first (catch-up) run is done; WATCHDOG=1 from the loop itself, so a
wedged loop gets the daemon restarted by systemd.
SIGTERM → finish the current run (it is bounded), release the lock, exit 0.
SIGHUP  → re-read the settings file (engine, debounce, commands; etcd and node need a
          restart).
"""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from ccm.cluster import backoff
from ccm.cluster.clock import Clock, SystemClock
from ccm.cluster.etcd import EtcdClient
from ccm.cluster.halt import HaltFlag
from ccm.cluster.nodes import Presence
from ccm.cluster.watcher import EventWatcher
from ccm.daemon.acme_service import WAKING_TYPES, AcmeService
from ccm.daemon.debounce import ALL, Debouncer
from ccm.daemon.metrics import Metrics
from ccm.daemon.node_run import NodeRun, RunOutcome
from ccm.daemon.notify import Notifier
from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.errors import CcmError, ClusterError
from ccm.log import get_logger
from ccm.plan.ansible import AnsiblePlaybooks
from ccm.plan.progress import LoggedProgress
from ccm.settings import Settings, load_settings

#: a canary's probes during its soak, and how often a waiting node looks again
SOAK_PROBE_INTERVAL = 2.0
SOAK_POLL = 0.5
#: how soon the wait for ``ccm resume`` notices that the daemon stops
HALT_POLL = 0.5


@dataclass(frozen=True)
class _Wake:
    """A message to the main loop."""

    kind: str  # "types" | "full" | "resumed" | "stop" | "reload"
    types: frozenset[str] = frozenset()
    revision: int = 0


class Daemon:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        config_path: Path | None = None,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
        engine_factory: Callable[[Settings], Engine] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.config_path = config_path
        self.clock = clock or SystemClock()
        self.notifier = notifier or Notifier()
        self.stopping = threading.Event()
        self._engine_factory = engine_factory or self._default_engine
        self.engine = self._engine_factory(settings)
        self.debouncer = Debouncer(settings.debounce.quiet, settings.debounce.max_wait, self.clock)
        # SimpleQueue: its put() is reentrant, so signal handlers may call it safely
        self.wakes: queue.SimpleQueue[_Wake] = queue.SimpleQueue()
        self.halted = False
        self.ready = False
        self.retry_at: float | None = None
        self.failures = 0
        self.next_reconcile = self._reconcile_after()
        #: True until one run succeeded: NodeRun derives the missed work from revisions
        self.catching_up = True
        #: the revision of the last successful run: events at or below it are applied
        self.applied_revision = 0
        #: when the oldest event the debouncer holds arrived (for the debounce delay)
        self.pending_since: float | None = None
        self.metrics = Metrics()
        #: a canary during its soak: when the soak ends, and when to probe next
        self.soak_until: float | None = None
        self.next_health = 0.0
        #: the thread waiting for ``ccm resume`` while halted
        self._halt_wait: threading.Thread | None = None
        #: the challenge responder and the certificate renewal (while running)
        self.acme: AcmeService | None = None
        self.log = get_logger(node=settings.node)

    def _default_engine(self, settings: Settings) -> Engine:
        # a SIGTERM also stops a long playbook (it fails, the run is rolled back)
        playbooks = AnsiblePlaybooks(settings, cancel=self.stopping.is_set)
        # the milestones of a long run, in the journal
        progress = LoggedProgress(get_logger(node=settings.node))
        return Engine(self.registry, settings, playbooks=playbooks, progress=progress)

    # -- signals and messages -------------------------------------------------------

    def stop(self) -> None:
        self.stopping.set()
        self.wakes.put(_Wake("stop"))

    def install_signal_handlers(self) -> None:
        def on_term(signum: int, frame: FrameType | None) -> None:
            self.stop()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            self.wakes.put(_Wake("reload"))

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)

    def on_types(self, types: set[str], revision: int) -> None:
        """The watcher saw these object types change at ``revision``."""
        self.wakes.put(_Wake("types", frozenset(types), revision))
        if self.acme is not None and WAKING_TYPES & types:
            self.acme.wake()

    def on_full(self, reason: str) -> None:
        """The watcher cannot tell what changed (a compacted revision): run everything."""
        self.log.warning("full run needed", reason=reason)
        self.wakes.put(_Wake("full"))

    def _reconcile_after(self) -> float | None:
        interval = self.settings.reconcile_interval
        return self.clock.monotonic() + interval if interval > 0 else None

    # -- the loop -------------------------------------------------------------------

    def run(self) -> int:
        settings = self.settings
        with EtcdClient.from_settings(settings.etcd) as client:
            presence = Presence(client, settings.etcd.prefix, settings.node)
            watcher: EventWatcher | None = None
            if settings.metrics.listen:
                host, port = self.metrics.serve(settings.metrics.listen)
                self.log.info("metrics served", url=f"http://{host}:{port}/metrics")
            try:
                start_revision = self._current_revision(client)
                if start_revision is None:  # stopped while etcd was unreachable
                    return 0
                presence.start()
                self.acme = AcmeService(client, settings, self.metrics, self.clock)
                self.acme.start()
                node_run = NodeRun(
                    settings, client, self.engine, clock=self.clock, reuse_parsed=True
                )
                watcher = EventWatcher(
                    client,
                    settings.etcd.prefix,
                    start_revision + 1,
                    self.on_types,
                    self.on_full,
                    clock=self.clock,
                    backoff_initial=settings.backoff.initial,
                    backoff_max=settings.backoff.max,
                )
                watcher.start()
                self.log.info("daemon started", revision=start_revision, root=str(settings.root))
                self._loop(client, node_run)
            finally:
                self.notifier.stopping("stopping")
                self.stopping.set()  # however it ends: every thread it started ends too
                self.wait_stopped()
                if watcher is not None:
                    watcher.stop()
                if self.acme is not None:
                    self.acme.stop()
                presence.stop()
                self.metrics.close()
        self.log.info("daemon stopped")
        return 0

    def _current_revision(self, client: EtcdClient) -> int | None:
        try:
            return backoff.retry_until_done(
                client.current_revision,
                self.settings.backoff,
                retry_on=ClusterError,
                stop=self.stopping,
                on_retry=lambda error, seconds: self.log.warning(
                    "etcd not reachable yet", error=str(error), retry_in=seconds
                ),
            )
        except ClusterError:
            if self.stopping.is_set():
                return None
            raise

    def seconds_to_wait(self) -> float:
        """How long the loop may block on its queue before it must look again: the
        next due run, retry, reconcile, soak probe or watchdog ping (at most 5 s)."""
        now = self.clock.monotonic()
        candidates = [5.0]
        interval = self.notifier.watchdog_interval()
        if interval:
            candidates.append(interval)
        if not self.halted:
            if self.retry_at is not None:
                candidates.append(max(0.0, self.retry_at - now))
            else:
                if self.catching_up:
                    candidates.append(0.0)
                due = self.debouncer.seconds_until_due()
                if due is not None:
                    candidates.append(due)
                if self.next_reconcile is not None:
                    candidates.append(max(0.0, self.next_reconcile - now))
        if self.soak_until is not None:
            candidates.append(max(0.0, self.next_health - now))
        return min(candidates)

    def _loop(self, client: EtcdClient, node_run: NodeRun) -> None:
        while not self.stopping.is_set():
            self.turn(client, node_run, self.seconds_to_wait())

    def turn(self, client: EtcdClient, node_run: NodeRun, timeout: float) -> None:
        """One turn of the loop: wait up to ``timeout`` seconds for a message, handle it
        and everything queued behind it, then run if the work is due (tests drive the
        loop turn by turn on a manual clock)."""
        try:
            wake: _Wake | None = self.wakes.get(timeout=timeout)
        except queue.Empty:
            wake = None
        self.notifier.watchdog()
        # drain what is queued, then decide: a steady stream of events must not keep
        # the loop from noticing that max_wait has passed
        while wake is not None:
            self._handle(wake, node_run)
            try:
                wake = self.wakes.get_nowait()
            except queue.Empty:
                wake = None
        if self.stopping.is_set() or self.halted:
            return
        now = self.clock.monotonic()
        if self.soak_until is not None:
            self._soak_check(node_run, now)
        if self.next_reconcile is not None and now >= self.next_reconcile:
            self.debouncer.restore([ALL])
            self.next_reconcile = self._reconcile_after()
        if self.retry_at is not None and now < self.retry_at:
            return
        if self.catching_up or self.debouncer.is_due():
            self._run_once(client, node_run)

    def _handle(self, wake: _Wake, node_run: NodeRun) -> None:
        if wake.kind == "types":
            self.metrics.seen(wake.revision)
            # an event that arrived while a run was waiting for the lock was applied by
            # that run (it read a later snapshot): no second lock round for it
            if wake.revision > self.applied_revision:
                self._pend(wake.types)
        elif wake.kind == "full":
            self._pend([ALL])
        elif wake.kind == "resumed":
            self.log.info("halt flag cleared: continuing with the pending work")
            self.halted = False  # retry_at is None: the run that halted returned
            self.metrics.halted.set(0)
        elif wake.kind == "reload":
            self._reload(node_run)

    def _soak_check(self, node_run: NodeRun, now: float) -> None:
        """A canary re-runs its probes while the others soak; a failure halts them."""
        if self.soak_until is None or now >= self.soak_until:
            self.soak_until = None
            return
        if now < self.next_health:
            return
        self.next_health = now + SOAK_PROBE_INTERVAL
        try:
            healthy = node_run.check_health()
        except CcmError as error:
            self.log.warning("soak probes not run; retrying", error=str(error))
            return
        if not healthy:
            self.soak_until = None

    def _pend(self, types: Iterable[str]) -> None:
        if self.pending_since is None:
            self.pending_since = self.clock.monotonic()
        self.debouncer.add(types)
        self.metrics.pending_types.set(len(self.debouncer.pending))

    def _run_in_worker(self, node_run: NodeRun, types: frozenset[str]) -> RunOutcome:
        """Run on a worker thread while this thread keeps pinging the watchdog.

        A lock wait behind other nodes or a long check must not look like a wedged
        daemon to systemd; a SIGTERM meanwhile cancels the lock wait or rolls the run
        back before its next change (``cancel``).
        """
        result: list[RunOutcome] = []
        failure: list[BaseException] = []

        def work() -> None:
            try:
                result.append(node_run.run(types, full=ALL in types, cancel=self.stopping))
            except BaseException as error:  # handed to the main thread
                failure.append(error)

        worker = threading.Thread(target=work, name="ccm-run", daemon=True)
        worker.start()
        interval = self.notifier.watchdog_interval() or 5.0
        while worker.is_alive():
            worker.join(interval)
            self.notifier.watchdog()
        if failure:
            raise failure[0]
        return result[0]

    def _run_once(self, client: EtcdClient, node_run: NodeRun) -> None:
        types = self.debouncer.take()
        started = self.clock.monotonic()
        if self.pending_since is not None:
            self.metrics.debounce_delay.observe(started - self.pending_since)
            self.pending_since = None
        self.metrics.pending_types.set(0)
        try:
            outcome = self._run_in_worker(node_run, types)
        except Exception as error:  # etcd away, lock lost, stopping, a bug: keep the work
            self.debouncer.restore(types)
            if self.stopping.is_set():
                return
            self.failures += 1
            delay = backoff.delay(self.settings.backoff, self.failures)
            self.retry_at = self.clock.monotonic() + delay
            if isinstance(error, CcmError):
                self.log.warning("run not done, will retry", error=str(error), retry_in=delay)
            else:
                self.log.exception("run crashed, will retry", retry_in=delay)
            return
        self.failures = 0
        self.retry_at = None
        self.metrics.lock_wait.observe(outcome.lock_wait)
        self.metrics.run_finished(
            outcome.result,
            self.clock.monotonic() - started - outcome.lock_wait,
            outcome.revision,
            len(outcome.report.changed_paths),
            outcome.report.actions,
            self.clock.wall().timestamp(),
        )
        if outcome.result == "soaking":  # the canaries go first: keep the work, come back
            self.debouncer.restore(types)
            wait = outcome.soak_left if outcome.soak_left is not None else SOAK_POLL
            self.retry_at = self.clock.monotonic() + max(wait, SOAK_POLL)
            self.notifier.status(f"soaking behind the canaries ({wait:.0f} s)")
        elif outcome.result == "success":
            self.catching_up = False
            if outcome.soak_left:
                self.soak_until = self.clock.monotonic() + outcome.soak_left
                self.next_health = self.clock.monotonic() + SOAK_PROBE_INTERVAL
            self.applied_revision = max(self.applied_revision, outcome.revision)
            if ALL in types:
                self.next_reconcile = self._reconcile_after()
        else:  # halted or failed: keep the work, wait for `ccm resume`
            self.debouncer.restore(types)
            self._wait_for_resume(client)
        if not self.ready:
            self.ready = True
            self.notifier.ready(f"caught up at revision {outcome.revision}")
            self.log.info("ready", revision=outcome.revision, result=outcome.result)

    def _wait_for_resume(self, client: EtcdClient) -> None:
        self.halted = True
        halt = HaltFlag(client, self.settings.etcd.prefix)

        def wait() -> None:
            while not self.stopping.is_set():
                try:
                    if halt.wait_cleared(self.stopping, timeout=HALT_POLL):
                        self.wakes.put(_Wake("resumed"))
                    return
                except Exception:  # never leave the node halted forever on a bug
                    self.log.exception("waiting for resume failed; retrying")
                    self.stopping.wait(5.0)

        self._halt_wait = threading.Thread(target=wait, name="ccm-halt-wait", daemon=True)
        self._halt_wait.start()

    def wait_stopped(self, timeout: float = 10.0) -> bool:
        """After :meth:`stop`: wait for the threads the loop started (the wait for
        ``ccm resume``) to end, so none of them uses the etcd client once it is closed.
        True when they did within ``timeout`` seconds."""
        if self._halt_wait is not None:
            self._halt_wait.join(timeout)
            return not self._halt_wait.is_alive()
        return True

    def _reload(self, node_run: NodeRun) -> None:
        try:
            settings = load_settings(self.config_path)
            if settings.etcd != self.settings.etcd or settings.node != self.settings.node:
                self.log.warning("etcd and node settings change only with a restart")
                settings = settings.model_copy(
                    update={"etcd": self.settings.etcd, "node": self.settings.node}
                )
            engine = self._engine_factory(settings)
        except Exception as error:  # a bad file keeps the running settings
            self.log.error("settings not reloaded; keeping the running ones", error=str(error))
            return
        interval_changed = settings.reconcile_interval != self.settings.reconcile_interval
        self.settings = settings
        self.engine = engine
        node_run.reconfigure(settings, engine)
        if interval_changed:
            self.next_reconcile = self._reconcile_after()
        pending = self.debouncer.pending
        due = self.debouncer.is_due()
        self.debouncer = Debouncer(settings.debounce.quiet, settings.debounce.max_wait, self.clock)
        if pending:
            (self.debouncer.restore if due else self.debouncer.add)(pending)
        self.notifier.status("settings reloaded")
        self.log.info("settings reloaded")


def run_daemon(
    settings: Settings, registry: Registry, config_path: Path | None, **kwargs: Any
) -> int:
    daemon = Daemon(settings, registry, config_path=config_path, **kwargs)
    daemon.install_signal_handlers()
    return daemon.run()
