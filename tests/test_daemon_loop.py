"""The daemon's loop (``ccm daemon``) in this process: a real etcd, a real temporary root,
a manual clock, and the loop driven one turn at a time (``Daemon.turn``).

Events are handed to the daemon as the watcher hands them (``Daemon.on_types``), so a
test decides exactly which events a node has seen; what etcd itself reports (the halt
flag cleared, the lock) arrives from etcd. A turn that must wait for etcd is given a
deadline, and returns as soon as the message is there: nothing sleeps.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import to_toml
from daemon_node import (
    Commands,
    NotifySocket,
    Sites,
    break_check,
    engine_with,
    make_unhealthy,
    new_root,
    revoke_lock_lease,
    settings_for,
    site,
)
from structlog.testing import capture_logs

from ccm.cluster.canary import Soak
from ccm.cluster.clock import ManualClock, timestamp
from ccm.cluster.etcd import EtcdClient
from ccm.cluster.halt import HaltFlag, HaltRecord
from ccm.cluster.history import RunHistory
from ccm.cluster.keys import Keys
from ccm.cluster.lock import ClusterLock, lock_queue
from ccm.cluster.nodes import NodeRecords
from ccm.cluster.store import ObjectStore
from ccm.daemon.loop import Daemon, run_daemon
from ccm.daemon.node_run import NodeRun
from ccm.daemon.notify import Notifier
from ccm.engine.registry import Registry
from ccm.errors import ClusterError
from ccm.settings import EtcdSettings, Settings
from ccm.testing.etcd import EtcdServer
from ccm.testing.noderoot import actions, logging_command

T0 = 1000.0
QUIET = 10.0
#: how long a turn may wait for a message etcd sends (the halt flag cleared): a
#: deadline, not a pause; the turn returns when the message arrives
ETCD_DEADLINE = 10.0


class Node:
    """One daemon, its root and its commands; ``turn()`` runs one turn of its loop."""

    def __init__(
        self,
        base: Path,
        name: str,
        etcd: EtcdSettings,
        client: EtcdClient,
        clock: ManualClock,
        notify_env: dict[str, str] | None = None,
        config_path: Path | None = None,
        **overrides: Any,
    ) -> None:
        self.name = name
        self.clock = clock
        self.root = new_root(base, name)
        self.client = client
        self.commands = Commands()
        overrides.setdefault("debounce", {"quiet": QUIET, "max_wait": 60.0})
        overrides.setdefault("reconcile_interval", 3600.0)
        self.settings = settings_for(self.root, etcd, name, **overrides)
        self.daemon = Daemon(
            self.settings,
            Registry([Sites]),
            clock=clock,
            notifier=Notifier(env=notify_env or {}, clock=clock),
            engine_factory=engine_with(self.commands),
            config_path=config_path,
        )
        self.node_run = NodeRun(self.settings, client, self.daemon.engine, clock=clock)
        self.records = NodeRecords(client, etcd.prefix)

    def turn(self, timeout: float = 0.0) -> None:
        self.daemon.turn(self.client, self.node_run, timeout)

    def sees(self, revision: int, *types: str) -> None:
        """The watcher delivers an event of ``types`` (default unix-users); one turn
        takes it in (and runs, if that makes a run due)."""
        self.daemon.on_types(set(types or ("unix-users",)), revision)
        self.turn()

    def applied(self) -> int:
        record = self.records.read(self.name)
        return record.applied_revision if record is not None else 0

    def runs(self) -> int:
        """How many runs this node recorded (its history)."""
        return len(RunHistory(self.client, self.settings.etcd.prefix).read(self.name))

    def sample(self, name: str, **labels: str) -> float | None:
        """A sample of the daemon's metrics (``ccm_runs_total``…)."""
        return self.daemon.metrics.registry.get_sample_value(name, labels)

    def in_background(self, timeout: float = 0.0) -> threading.Thread:
        """One turn on another thread (the test acts while it waits for the lock)."""
        thread = threading.Thread(target=self.turn, args=(timeout,), daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.daemon.stop()
        self.daemon.wait_stopped()  # its wait for resume ends before the client closes


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(monotonic=T0)


@pytest.fixture
def nodes(
    tmp_path: Path, etcd_settings: EtcdSettings, etcd_client: EtcdClient, clock: ManualClock
) -> Iterator[list[Node]]:
    made: list[Node] = []
    yield made
    for node in made:
        node.close()


@pytest.fixture
def node_factory(
    tmp_path: Path,
    etcd_settings: EtcdSettings,
    etcd_client: EtcdClient,
    clock: ManualClock,
    nodes: list[Node],
) -> Any:
    def make(name: str = "web01", **overrides: Any) -> Node:
        node = Node(tmp_path, name, etcd_settings, etcd_client, clock, **overrides)
        nodes.append(node)
        return node

    return make


@pytest.fixture
def systemd() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture
def signal_handlers() -> Iterator[None]:
    """The test may install the daemon's handlers: pytest's own come back afterwards."""
    saved = {
        number: signal.getsignal(number)
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)


def caught_up(node: Node) -> Node:
    """The node's first turn: its catch-up run (nothing is pending yet)."""
    node.turn()
    assert node.daemon.ready and not node.daemon.halted
    return node


def answered(client: EtcdClient) -> None:
    """Wait (polling, with a deadline) until the client reaches etcd again: it skips an
    endpoint for a second after a failure."""
    deadline = time.monotonic() + ETCD_DEADLINE
    while True:
        try:
            client.current_revision()
            return
        except ClusterError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def until(condition: Callable[[], Any], what: str) -> None:
    """Poll ``condition`` (etcd's state, another thread's) until true, within a deadline."""
    deadline = time.monotonic() + ETCD_DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def finished(thread: threading.Thread) -> None:
    thread.join(ETCD_DEADLINE)
    assert not thread.is_alive(), "the turn did not return"


def put_alice(store: ObjectStore) -> int:
    return store.put("unix-users", [{"id": 1, "username": "alice"}])


# -- pending work survives a failed or halted run ---------------------------------------


def test_after_a_failure_and_resume_every_node_applies_the_revision_with_no_new_event(
    node_factory: Any, store: ObjectStore, etcd_client: EtcdClient, clock: ManualClock
) -> None:
    """One node fails its run, the other is turned away by the halt flag. ``ccm resume``
    with no new write: both apply the revision at once (no event, no reconcile)."""
    failing, turned_away = caught_up(node_factory("web01")), caught_up(node_factory("web02"))
    halt = HaltFlag(etcd_client, store.prefix)
    revision = put_alice(store)
    break_check(failing.root)  # the node's check fails (a transient fault of that node)
    for node in (failing, turned_away):
        node.sees(revision)
        assert node.applied() < revision  # not due before the quiet period

    clock.advance(QUIET)
    failing.turn()
    record = halt.get()
    assert record is not None and record.node == "web01" and "broken config" in record.error
    turned_away.turn()  # finds the flag under the lock: applies nothing
    for node in (failing, turned_away):
        assert node.daemon.halted and node.applied() < revision
        assert not site(node.root, "alice").exists()

    break_check(failing.root, broken=False)
    assert halt.clear()  # `ccm resume`
    for node in (failing, turned_away):
        node.turn(ETCD_DEADLINE)  # the flag's deletion arrives from etcd; the run follows
        assert not node.daemon.halted
        assert node.applied() >= revision, node.name
        assert site(node.root, "alice").read_text() == "alice\n"
    assert clock.monotonic() == T0 + QUIET  # no time passed: not the reconcile


def test_a_node_halted_by_the_operator_applies_the_pending_revision_on_resume(
    node_factory: Any, store: ObjectStore, etcd_client: EtcdClient, clock: ManualClock
) -> None:
    node = caught_up(node_factory())
    halt = HaltFlag(etcd_client, store.prefix)
    halt.set(HaltRecord.now("operator", "-", "maintenance", 0, clock.wall()))  # `ccm halt`
    revision = put_alice(store)
    node.sees(revision)
    clock.advance(QUIET)
    node.turn()
    assert node.daemon.halted and node.applied() < revision
    assert node.daemon.seconds_to_wait() == 5.0  # halted: no run is due, whatever is pending

    assert halt.clear()
    node.turn(ETCD_DEADLINE)
    assert node.applied() >= revision
    assert site(node.root, "alice").exists()


# -- pending work survives a run that raised ----------------------------------------------


def test_a_run_whose_lock_was_lost_is_retried_after_the_back_off_with_no_new_event(
    node_factory: Any, store: ObjectStore, etcd_client: EtcdClient, clock: ManualClock
) -> None:
    node = caught_up(node_factory(backoff={"initial": 2.0, "max": 30.0}))
    revision = put_alice(store)
    node.commands.on("probe", revoke_lock_lease(etcd_client, store.prefix))
    node.sees(revision)
    clock.advance(QUIET)
    node.turn()  # the run raises LockLost: nothing recorded, the work kept
    assert node.applied() < revision
    assert node.daemon.retry_at == T0 + QUIET + 2.0
    assert node.daemon.seconds_to_wait() == 2.0

    clock.advance(1.75)
    node.turn()  # still backing off
    assert node.applied() < revision
    clock.advance(0.25)  # exactly at the retry
    node.turn()
    assert node.applied() >= revision
    assert node.daemon.retry_at is None


def test_a_run_cut_off_by_an_etcd_outage_is_retried_after_the_back_off_with_no_new_event(
    tmp_path: Path, private_etcd_server: EtcdServer, clock: ManualClock
) -> None:
    """etcd stops mid-run (during the probe); when it is back, the node retries after
    its back-off and records the revision it was given before the outage."""
    settings = EtcdSettings(endpoints=(private_etcd_server.endpoint,), prefix="/ccm", timeout=2.0)
    with EtcdClient.from_settings(settings) as client:
        node = Node(tmp_path, "web01", settings, client, clock, lock={"ttl": 2})
        try:
            caught_up(node)
            revision = put_alice(ObjectStore(client, "/ccm", writer="tests"))
            node.commands.on("probe", private_etcd_server.kill)
            node.sees(revision)
            clock.advance(QUIET)
            node.turn()  # the run raises (etcd gone): the work is kept
            assert node.daemon.retry_at == T0 + QUIET + 0.5  # [backoff] initial

            private_etcd_server.start()
            answered(client)
            assert node.applied() < revision  # nothing recorded while etcd was away
            clock.advance(0.5)
            node.turn()  # waits for the lock (the cut-off run's lease expires), applies
            assert node.applied() >= revision
        finally:
            node.close()


# -- starting: the catch-up run, readiness ------------------------------------------------


def test_the_first_turn_applies_what_was_missed_and_tells_systemd_ready_once(
    node_factory: Any, store: ObjectStore, clock: ManualClock, systemd: NotifySocket
) -> None:
    missed = put_alice(store)  # written while the node was down
    node = node_factory(notify_env=systemd.env)
    assert node.daemon.seconds_to_wait() == 0.0  # the catch-up run is due at once
    node.turn()
    assert node.applied() >= missed and site(node.root, "alice").exists()
    assert systemd.received() == [f"READY=1\nSTATUS=caught up at revision {node.applied()}"]

    later = store.put("unix-users", [{"id": 2, "username": "bob"}])
    node.sees(later)
    clock.advance(QUIET)
    node.turn()
    assert node.applied() >= later
    assert systemd.received() == []  # READY once


def test_a_first_run_that_fails_still_tells_systemd_ready(
    node_factory: Any, store: ObjectStore, etcd_client: EtcdClient, systemd: NotifySocket
) -> None:
    """systemd must not wait forever for a node the halt flag holds: it is up."""
    put_alice(store)
    node = node_factory(notify_env=systemd.env)
    break_check(node.root)
    node.turn()
    halt = HaltFlag(etcd_client, store.prefix).get()
    assert node.daemon.halted and halt is not None
    assert systemd.received() == [f"READY=1\nSTATUS=caught up at revision {halt.revision}"]


def test_a_caught_up_node_with_nothing_pending_starts_no_run(
    node_factory: Any, clock: ManualClock
) -> None:
    node = caught_up(node_factory())
    assert node.runs() == 1
    assert node.daemon.seconds_to_wait() == 5.0
    clock.advance(100)
    node.turn()
    assert node.runs() == 1


# -- events and the debouncer --------------------------------------------------------------


def test_an_event_runs_once_quiet_seconds_after_it_arrived(
    node_factory: Any, store: ObjectStore, clock: ManualClock
) -> None:
    node = caught_up(node_factory())
    revision = put_alice(store)
    node.sees(revision)
    assert node.daemon.seconds_to_wait() == 5.0  # the loop looks again at least every 5 s
    clock.advance(QUIET - 3)
    assert node.daemon.seconds_to_wait() == 3.0
    node.turn()
    assert node.applied() < revision
    clock.advance(3)
    assert node.daemon.seconds_to_wait() == 0.0
    node.turn()
    assert node.applied() >= revision and node.runs() == 2
    node.turn()
    assert node.runs() == 2  # once


def test_an_event_at_or_below_the_applied_revision_starts_no_run(
    node_factory: Any, store: ObjectStore, clock: ManualClock
) -> None:
    """An event that arrives after the run that applied it (the run read a later
    snapshot while waiting for the lock) takes no second lock round."""
    put_alice(store)
    node = caught_up(node_factory())
    node.sees(node.applied())
    assert node.daemon.debouncer.pending == frozenset()
    clock.advance(QUIET)
    node.turn()
    assert node.runs() == 1
    node.sees(node.applied() + 1)  # a newer one does
    assert node.daemon.debouncer.pending == {"unix-users"}


def test_a_compacted_watch_runs_every_configuration(
    node_factory: Any, store: ObjectStore, clock: ManualClock
) -> None:
    """The watcher cannot tell what changed: a full run repairs whatever it missed."""
    node = caught_up(node_factory())
    revision = put_alice(store)  # an event the node never saw
    node.daemon.on_full("compacted")
    node.turn()
    clock.advance(QUIET)
    node.turn()
    assert node.applied() >= revision and site(node.root, "alice").exists()


def test_the_debounce_delay_and_the_pending_types_are_measured(
    node_factory: Any, store: ObjectStore, clock: ManualClock
) -> None:
    node = caught_up(node_factory())
    assert node.sample("ccm_pending_types") == 0
    revision = put_alice(store)
    node.sees(revision, "unix-users")
    assert node.sample("ccm_pending_types") == 1
    clock.advance(4)
    node.sees(revision, "crons")  # the same burst: the run waits for quiet after it
    assert node.sample("ccm_pending_types") == 2
    clock.advance(QUIET)
    node.turn()
    assert node.applied() >= revision
    assert node.sample("ccm_pending_types") == 0
    # from the first event of the burst to its run
    assert node.sample("ccm_debounce_delay_seconds_sum") == 4 + QUIET
    assert node.sample("ccm_debounce_delay_seconds_count") == 1

    node.sees(node.applied() + 1)  # the next burst is measured from its own first event
    clock.advance(QUIET)
    node.turn()
    assert node.sample("ccm_debounce_delay_seconds_sum") == 4 + QUIET + QUIET
    assert node.sample("ccm_debounce_delay_seconds_count") == 2


def test_the_newest_event_seen_sets_how_far_behind_the_node_is(
    node_factory: Any, store: ObjectStore, clock: ManualClock
) -> None:
    node = caught_up(node_factory())
    applied = node.applied()
    node.sees(applied + 5)
    assert node.sample("ccm_revisions_behind") == 5


# -- a run: what is measured ------------------------------------------------------------------


def test_a_run_is_measured_apart_from_its_wait_for_the_lock(
    node_factory: Any, store: ObjectStore, clock: ManualClock, etcd_client: EtcdClient
) -> None:
    node = caught_up(node_factory())
    revision = put_alice(store)
    node.sees(revision)
    clock.advance(QUIET)
    node.commands.on("reload", lambda: clock.advance(3.0))  # the reload takes 3 s
    other = ClusterLock(etcd_client, store.prefix, "web02", ttl=30).acquire()
    try:
        turn = node.in_background()
        until(lambda: len(lock_queue(etcd_client, store.prefix)) == 2, "web01 to queue")
        clock.advance(7.0)  # 7 s behind web02
    finally:
        other.release()
    finished(turn)

    assert node.applied() >= revision
    assert node.sample("ccm_lock_wait_seconds_sum") == 7.0
    assert node.sample("ccm_lock_wait_seconds_count") == 2  # the catch-up run, this run
    assert node.sample("ccm_run_duration_seconds_sum") == 3.0
    assert node.sample("ccm_runs_total", result="success") == 2
    assert node.sample("ccm_files_changed_total") == 1
    for kind in ("check", "reload", "probe"):
        assert node.sample("ccm_actions_total", kind=kind) == 1, kind
    assert node.sample("ccm_applied_revision") == node.applied()
    assert node.sample("ccm_last_success_timestamp_seconds") == clock.wall().timestamp()
    assert node.sample("ccm_halted") == 0


def test_halted_is_reported_until_the_flag_is_cleared_not_until_the_next_run(
    node_factory: Any, store: ObjectStore, clock: ManualClock, etcd_client: EtcdClient
) -> None:
    node = caught_up(node_factory())
    revision = put_alice(store)
    break_check(node.root)
    node.sees(revision)
    clock.advance(QUIET)
    node.turn()
    assert node.sample("ccm_halted") == 1
    assert node.sample("ccm_runs_total", result="failed") == 1

    break_check(node.root, broken=False)
    other = ClusterLock(etcd_client, store.prefix, "web02", ttl=30).acquire()
    try:
        assert HaltFlag(etcd_client, store.prefix).clear()
        turn = node.in_background(ETCD_DEADLINE)  # resumed: the run waits for the lock
        until(lambda: len(lock_queue(etcd_client, store.prefix)) == 2, "web01 to queue")
        assert node.sample("ccm_halted") == 0
    finally:
        other.release()
    finished(turn)
    assert node.applied() >= revision


# -- runs that could not be done: back-off, stopping --------------------------------------


def test_the_back_off_grows_with_each_run_that_raised_and_resets_after_a_success(
    tmp_path: Path, private_etcd_server: EtcdServer, clock: ManualClock
) -> None:
    settings = EtcdSettings(endpoints=(private_etcd_server.endpoint,), prefix="/ccm", timeout=2.0)
    with EtcdClient.from_settings(settings) as client:
        node = Node(
            tmp_path, "web01", settings, client, clock, backoff={"initial": 2.0, "max": 30.0}
        )
        try:
            caught_up(node)
            store = ObjectStore(client, "/ccm", writer="tests")
            revision = put_alice(store)
            node.sees(revision)
            clock.advance(QUIET)
            private_etcd_server.kill()
            for delay in (2.0, 4.0, 8.0):
                node.turn()  # cannot reach etcd
                assert node.daemon.retry_at == clock.monotonic() + delay
                clock.advance(delay)
            private_etcd_server.start()
            answered(client)
            node.turn()
            assert node.applied() >= revision and node.daemon.retry_at is None

            later = store.put("unix-users", [{"id": 2, "username": "bob"}])
            node.sees(later)
            clock.advance(QUIET)
            private_etcd_server.kill()
            node.turn()
            assert node.daemon.retry_at == clock.monotonic() + 2.0  # counted afresh
            assert node.daemon.seconds_to_wait() == 2.0
            clock.advance(2.5)
            assert node.daemon.seconds_to_wait() == 0.0  # overdue: at once, never negative
        finally:
            node.close()


def test_a_run_stopped_while_waiting_for_the_lock_keeps_its_work_and_is_not_a_failure(
    node_factory: Any, store: ObjectStore, clock: ManualClock, etcd_client: EtcdClient
) -> None:
    node = caught_up(node_factory())
    revision = put_alice(store)
    node.sees(revision)
    clock.advance(QUIET)
    other = ClusterLock(etcd_client, store.prefix, "web02", ttl=30).acquire()
    try:
        turn = node.in_background()
        until(lambda: len(lock_queue(etcd_client, store.prefix)) == 2, "web01 to queue")
        node.daemon.stop()  # SIGTERM
        finished(turn)
        assert [e.node for e in lock_queue(etcd_client, store.prefix)] == ["web02"]
    finally:
        other.release()
    assert node.daemon.debouncer.pending == {"unix-users"}  # kept
    assert node.daemon.retry_at is None and node.daemon.failures == 0
    assert node.applied() < revision


def test_stop_wakes_a_loop_that_waits_and_nothing_runs_after_it(
    node_factory: Any, store: ObjectStore, clock: ManualClock
) -> None:
    node = caught_up(node_factory())
    node.sees(put_alice(store))
    clock.advance(QUIET)  # a run is due
    waiting = threading.Thread(target=node.daemon.turn, args=(node.client, node.node_run, 3600))
    node.daemon.stop()
    waiting.start()
    finished(waiting)
    assert node.runs() == 1


# -- the periodic reconcile ---------------------------------------------------------------------


def edit_by_hand(node: Node) -> None:
    site(node.root, "alice").write_text("edited by hand\n")


def repaired(node: Node) -> bool:
    return site(node.root, "alice").read_text() == "alice\n"


def test_the_reconcile_runs_everything_every_interval_and_repairs_drift(
    node_factory: Any, store: ObjectStore, clock: ManualClock
) -> None:
    put_alice(store)
    node = caught_up(node_factory(reconcile_interval=60.0))
    edit_by_hand(node)
    clock.advance(57)
    assert node.daemon.seconds_to_wait() == 3.0
    node.turn()
    assert not repaired(node)
    clock.advance(4)
    assert node.daemon.seconds_to_wait() == 0.0  # overdue: at once, never negative
    node.turn()
    assert repaired(node)

    edit_by_hand(node)  # the next one is an interval after this one
    clock.advance(59)
    node.turn()
    assert not repaired(node)
    clock.advance(1)
    node.turn()
    assert repaired(node)


def test_a_full_run_counts_as_the_reconcile(
    node_factory: Any, store: ObjectStore, clock: ManualClock
) -> None:
    put_alice(store)
    node = caught_up(node_factory(reconcile_interval=60.0))
    clock.advance(30)
    node.daemon.on_full("compacted")
    node.turn()
    clock.advance(QUIET)
    node.turn()  # a full run at +40: the next reconcile is at +100
    edit_by_hand(node)
    clock.advance(50)  # +90
    node.turn()
    assert not repaired(node)
    clock.advance(10)
    node.turn()
    assert repaired(node)


def test_without_a_reconcile_interval_nothing_runs_by_itself(
    node_factory: Any, store: ObjectStore, clock: ManualClock
) -> None:
    put_alice(store)
    node = caught_up(node_factory(reconcile_interval=0.0))
    edit_by_hand(node)
    clock.advance(10 * 3600)
    assert node.daemon.seconds_to_wait() == 5.0
    node.turn()
    assert not repaired(node) and node.runs() == 1


def test_the_loop_wakes_for_the_watchdog_when_systemd_wants_pings_more_often(
    node_factory: Any, systemd: NotifySocket
) -> None:
    node = caught_up(node_factory(notify_env={**systemd.env, "WATCHDOG_USEC": "2000000"}))
    systemd.received()
    assert node.daemon.seconds_to_wait() == 1.0
    node.turn()
    assert systemd.received() == ["WATCHDOG=1"]  # each turn pings


def test_the_watchdog_is_pinged_while_a_long_run_holds_the_loop(
    node_factory: Any, store: ObjectStore, clock: ManualClock, systemd: NotifySocket
) -> None:
    """A slow check or a long wait for the lock is not a wedged daemon."""
    node = caught_up(node_factory(notify_env={**systemd.env, "WATCHDOG_USEC": "100000"}))
    revision = put_alice(store)
    node.sees(revision)
    clock.advance(QUIET)
    release = threading.Event()
    node.commands.on("reload", lambda: release.wait(ETCD_DEADLINE))
    systemd.received()
    turn = node.in_background()
    try:
        started = time.monotonic()
        pings = [systemd.next(ETCD_DEADLINE) for _ in range(3)]  # the run is still held
        assert pings == ["WATCHDOG=1"] * 3
        # every 0.05 s (half of WATCHDOG_USEC): 0.15 s; a 4 s bound leaves a wide margin
        assert time.monotonic() - started < 4.0
        assert turn.is_alive()
    finally:
        release.set()
    finished(turn)
    assert node.applied() >= revision


# -- canaries and their soak ------------------------------------------------------------------

ROLLOUT = {"canary": 1, "soak": 30.0, "probe_timeout": 0.0}


def probes(node: Node) -> int:
    return sum(1 for argv in node.commands.ran if any("probe sites" in part for part in argv))


def test_a_canary_probes_every_2_s_during_its_soak_and_the_others_apply_after_it(
    node_factory: Any, store: ObjectStore, clock: ManualClock, systemd: NotifySocket
) -> None:
    revision = put_alice(store)
    canary = node_factory("web01", rollout=ROLLOUT)
    follower = node_factory("web02", rollout=ROLLOUT, notify_env=systemd.env)
    canary.turn()
    assert canary.applied() >= revision and probes(canary) == 1  # its run's own probe
    assert canary.daemon.seconds_to_wait() == 2.0  # the next soak probe

    follower.turn()  # the soak holds it back
    assert follower.applied() < revision
    assert follower.daemon.retry_at == T0 + 30.0
    assert systemd.received()[0] == "STATUS=soaking behind the canaries (30 s)"

    for step, expected in ((1.0, 1), (1.0, 2), (1.5, 2), (0.5, 3), (2.0, 4)):
        clock.advance(step)
        canary.turn()
        assert probes(canary) == expected, clock.monotonic() - T0
        if clock.monotonic() == T0 + 3.5:
            assert canary.daemon.seconds_to_wait() == 0.5  # the next probe at +4
    clock.advance(30.0 - 6.0)  # the soak is over: no more probes
    canary.turn()
    assert probes(canary) == 4
    assert canary.daemon.seconds_to_wait() == 5.0
    follower.turn()
    assert follower.applied() >= revision


def test_a_canary_whose_probe_fails_during_the_soak_halts_the_others(
    node_factory: Any, store: ObjectStore, clock: ManualClock, etcd_client: EtcdClient
) -> None:
    revision = put_alice(store)
    canary = node_factory("web01", rollout=ROLLOUT)
    follower = node_factory("web02", rollout=ROLLOUT)
    canary.turn()
    follower.turn()
    make_unhealthy(canary.root)
    clock.advance(2.0)
    canary.turn()
    halt = HaltFlag(etcd_client, store.prefix).get()
    assert halt is not None and halt.node == "web01"
    assert "failed during the soak" in halt.error and "sites: no answer" in halt.error
    clock.advance(2.0)
    canary.turn()
    assert probes(canary) == 2  # the soak ended with the failure
    clock.advance(30.0)
    follower.turn()
    assert follower.daemon.halted and follower.applied() < revision


def test_a_node_comes_back_at_least_half_a_second_later_when_the_soak_is_nearly_over(
    node_factory: Any, store: ObjectStore, clock: ManualClock
) -> None:
    put_alice(store)
    canary = node_factory("web01", rollout=ROLLOUT)
    follower = node_factory("web02", rollout=ROLLOUT)
    canary.turn()
    clock.advance(29.8)
    follower.turn()
    assert follower.daemon.retry_at == clock.monotonic() + 0.5


def test_a_canary_without_a_soak_does_not_probe_again(
    node_factory: Any, store: ObjectStore, clock: ManualClock
) -> None:
    put_alice(store)
    canary = node_factory("web01", rollout={**ROLLOUT, "soak": 0.0})
    canary.turn()
    assert canary.daemon.seconds_to_wait() == 5.0
    clock.advance(2.0)
    canary.turn()
    assert probes(canary) == 1


# -- SIGHUP: the settings re-read -----------------------------------------------------------


def settings_file(path: Path, settings: Settings, **changes: Any) -> Path:
    data = settings.model_dump(mode="json", exclude_defaults=True)
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(to_toml(data))
    return path


def hangup(node: Node) -> None:
    """``kill -HUP`` the daemon, through its own handler."""
    node.daemon.install_signal_handlers()
    os.kill(os.getpid(), signal.SIGHUP)


@pytest.mark.usefixtures("signal_handlers")
def test_sighup_rereads_the_settings_and_the_pending_work_follows_the_new_ones(
    node_factory: Any,
    store: ObjectStore,
    clock: ManualClock,
    etcd_client: EtcdClient,
    systemd: NotifySocket,
    tmp_path: Path,
) -> None:
    config = tmp_path / "ccm.toml"
    node = caught_up(node_factory(config_path=config, notify_env=systemd.env))
    systemd.received()
    revision = put_alice(store)
    node.sees(revision)  # pending, not yet due
    settings_file(
        config,
        node.settings,
        debounce={"quiet": 30.0},
        lock={"ttl": 45},
        commands={"reload_unit": logging_command(node.root, "after-hup reload {unit}")},
        node="renamed",  # etcd and the node's name change only with a restart
        etcd={"prefix": "/elsewhere"},
    )
    hangup(node)
    node.turn()
    assert systemd.received() == ["STATUS=settings reloaded"]
    assert node.daemon.settings.debounce.quiet == 30.0
    assert node.daemon.settings.node == "web01"
    assert node.daemon.settings.etcd.prefix == store.prefix
    assert node.daemon.debouncer.pending == {"unix-users"}  # kept, due 30 s from now
    assert node.daemon.debouncer.seconds_until_due() == 30.0

    ttls: list[int] = []
    holder = lambda: lock_queue(etcd_client, store.prefix)[0].lease_id  # noqa: E731
    node.commands.on("reload", lambda: ttls.append(etcd_client.lease_ttl(holder())))
    clock.advance(29.0)
    node.turn()
    assert node.applied() < revision
    clock.advance(1.0)
    node.turn()
    assert node.applied() >= revision
    assert "after-hup reload sites" in actions(node.root)  # the new engine's commands
    assert ttls and ttls[0] > 30  # the new lock TTL


@pytest.mark.usefixtures("signal_handlers")
def test_work_already_due_at_a_sighup_runs_at_once(
    node_factory: Any, store: ObjectStore, clock: ManualClock, tmp_path: Path
) -> None:
    config = tmp_path / "ccm.toml"
    node = caught_up(node_factory(config_path=config))
    revision = put_alice(store)
    node.sees(revision)
    clock.advance(QUIET)  # due
    settings_file(config, node.settings, debounce={"quiet": 300.0})
    hangup(node)
    node.turn()  # reloads, then runs: the new quiet does not postpone it
    assert node.daemon.settings.debounce.quiet == 300.0
    assert node.applied() >= revision


@pytest.mark.usefixtures("signal_handlers")
def test_a_broken_settings_file_at_sighup_keeps_the_running_settings(
    node_factory: Any, store: ObjectStore, clock: ManualClock, tmp_path: Path, systemd: NotifySocket
) -> None:
    config = tmp_path / "ccm.toml"
    node = caught_up(node_factory(config_path=config, notify_env=systemd.env))
    systemd.received()
    running = node.daemon.settings
    revision = put_alice(store)
    node.sees(revision)
    config.write_text("this is not toml = [\n")
    hangup(node)
    node.turn()
    assert node.daemon.settings is running
    assert systemd.received() == []
    clock.advance(QUIET)
    node.turn()
    assert node.applied() >= revision


@pytest.mark.usefixtures("signal_handlers")
def test_a_new_reconcile_interval_starts_counting_at_the_sighup(
    node_factory: Any, store: ObjectStore, clock: ManualClock, tmp_path: Path
) -> None:
    put_alice(store)
    config = tmp_path / "ccm.toml"
    node = caught_up(node_factory(config_path=config, reconcile_interval=3600.0))
    clock.advance(50)
    settings_file(config, node.settings, reconcile_interval=100.0)
    hangup(node)
    node.turn()
    edit_by_hand(node)
    clock.advance(99)
    node.turn()
    assert not repaired(node)
    clock.advance(1)
    node.turn()
    assert repaired(node)


@pytest.mark.usefixtures("signal_handlers")
def test_an_unchanged_reconcile_interval_keeps_its_schedule_across_a_sighup(
    node_factory: Any, store: ObjectStore, clock: ManualClock, tmp_path: Path
) -> None:
    put_alice(store)
    config = tmp_path / "ccm.toml"
    node = caught_up(node_factory(config_path=config, reconcile_interval=60.0))
    clock.advance(50)
    settings_file(config, node.settings, debounce={"quiet": 20.0})
    hangup(node)
    node.turn()
    edit_by_hand(node)
    clock.advance(10)
    node.turn()
    assert repaired(node)


# -- SIGTERM, SIGINT ----------------------------------------------------------------------------


@pytest.mark.usefixtures("signal_handlers")
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_the_daemon(
    node_factory: Any, store: ObjectStore, clock: ManualClock, number: int
) -> None:
    node = caught_up(node_factory())
    node.sees(put_alice(store))
    clock.advance(QUIET)
    node.daemon.install_signal_handlers()
    os.kill(os.getpid(), number)
    until(node.daemon.stopping.is_set, "the handler")
    finished(node.in_background(3600))  # woken by the stop, runs nothing
    assert node.runs() == 1


# -- the whole daemon: start, serve, stop -----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


@pytest.mark.usefixtures("signal_handlers")
def test_the_daemon_joins_applies_a_write_serves_metrics_and_leaves_on_sigterm(
    tmp_path: Path,
    etcd_settings: EtcdSettings,
    etcd_client: EtcdClient,
    store: ObjectStore,
    systemd: NotifySocket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``run_daemon`` as ``ccm daemon`` calls it (its own engine, on this main thread);
    another thread plays the operator: waits for READY, writes, reads the metrics,
    SIGHUPs (the daemon re-reads ITS file, not ``CCM_CONFIG``'s), SIGTERMs."""
    root = new_root(tmp_path)
    port = free_port()
    settings = settings_for(
        root,
        etcd_settings,
        debounce={"quiet": 0.0, "max_wait": 0.0},
        metrics={"listen": f"127.0.0.1:{port}"},
    )
    config = settings_file(tmp_path / "ccm.toml", settings)
    (tmp_path / "other.toml").write_text("not toml = [\n")
    monkeypatch.setenv("CCM_CONFIG", str(tmp_path / "other.toml"))
    clock = ManualClock(monotonic=T0)
    records = NodeRecords(etcd_client, store.prefix)
    seen: dict[str, Any] = {}
    errors: list[BaseException] = []

    def operator() -> None:
        try:
            seen["ready"] = systemd.next(ETCD_DEADLINE)
            seen["alive"] = records.alive()
            revision = put_alice(store)
            until(lambda: scrape(port)["ccm_applied_revision"] >= revision, "the run's metrics")
            seen["record"] = records.read("web01")
            seen["metrics"] = scrape(port)
            seen["revision"] = revision
            os.kill(os.getpid(), signal.SIGHUP)
            seen["reloaded"] = systemd.next(ETCD_DEADLINE)
        except BaseException as error:
            errors.append(error)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    driver = threading.Thread(target=operator)
    driver.start()
    code = run_daemon(
        settings, Registry([Sites]), config, clock=clock, notifier=Notifier(env=systemd.env)
    )
    driver.join(ETCD_DEADLINE)
    if errors:
        raise errors[0]
    assert code == 0
    assert seen["ready"].startswith("READY=1\nSTATUS=caught up at revision ")
    assert seen["alive"] == {"web01"}
    assert site(root, "alice").read_text() == "alice\n"
    assert seen["record"].applied_revision == seen["metrics"]["ccm_applied_revision"]
    assert seen["record"].last_run.started == timestamp(clock.wall())  # the daemon's clock
    assert seen["metrics"]['ccm_runs_total{result="success"}'] == 2
    assert seen["reloaded"] == "STATUS=settings reloaded"
    assert systemd.received() == ["STOPPING=1\nSTATUS=stopping"]
    assert records.alive() == set()  # its presence went with it
    names = {thread.name for thread in threading.enumerate()}
    assert "ccm-event-watcher" not in names and "ccm-presence" not in names
    with pytest.raises(OSError):
        scrape(port)  # and so did its metrics endpoint


def test_a_running_daemon_halted_by_its_run_resumes_on_ccm_resume(
    tmp_path: Path, etcd_settings: EtcdSettings, etcd_client: EtcdClient, store: ObjectStore
) -> None:
    root = new_root(tmp_path)
    settings = settings_for(root, etcd_settings, debounce={"quiet": 0.0, "max_wait": 0.0})
    daemon = Daemon(
        settings,
        Registry([Sites]),
        clock=ManualClock(monotonic=T0),
        notifier=Notifier(env={}),
        engine_factory=engine_with(Commands()),
    )
    revision = put_alice(store)
    break_check(root)
    halt = HaltFlag(etcd_client, store.prefix)
    records = NodeRecords(etcd_client, store.prefix)
    running = threading.Thread(target=daemon.run, daemon=True)
    running.start()
    try:
        until(lambda: halt.get() is not None, "the failed run's halt")
        until(lambda: daemon.halted, "the daemon to wait for resume")
        break_check(root, broken=False)
        assert halt.clear()
        until(lambda: (r := records.read("web01")) and r.applied_revision >= revision, "apply")
    finally:
        daemon.stop()
        finished(running)


def test_a_daemon_stopped_before_etcd_ever_answered_exits_0(
    tmp_path: Path, systemd: NotifySocket
) -> None:
    unreachable = EtcdSettings(endpoints=(f"http://127.0.0.1:{free_port()}",), prefix="/ccm")
    daemon = Daemon(
        settings_for(new_root(tmp_path), unreachable),
        Registry([Sites]),
        clock=ManualClock(monotonic=T0),
        notifier=Notifier(env=systemd.env),
        engine_factory=engine_with(Commands()),
    )
    result: list[int] = []
    with capture_logs() as logs:
        running = threading.Thread(target=lambda: result.append(daemon.run()), daemon=True)
        running.start()
        until(lambda: any(e["event"] == "etcd not reachable yet" for e in logs), "a retry")
        daemon.stop()
        finished(running)
    assert result == [0]
    assert systemd.received() == ["STOPPING=1\nSTATUS=stopping"]


def test_a_daemon_started_before_etcd_waits_for_it_then_catches_up(
    tmp_path: Path, private_etcd_server: EtcdServer
) -> None:
    settings = EtcdSettings(endpoints=(private_etcd_server.endpoint,), prefix="/ccm", timeout=2.0)
    with EtcdClient.from_settings(settings) as client:
        revision = put_alice(ObjectStore(client, "/ccm", writer="tests"))
    private_etcd_server.kill()
    root = new_root(tmp_path)
    daemon = Daemon(
        settings_for(root, settings, backoff={"initial": 0.1, "max": 0.2}),
        Registry([Sites]),
        clock=ManualClock(monotonic=T0),
        notifier=Notifier(env={}),
        engine_factory=engine_with(Commands()),
    )
    running = threading.Thread(target=daemon.run, daemon=True)
    try:
        with capture_logs() as logs:
            running.start()
            until(lambda: any(e["event"] == "etcd not reachable yet" for e in logs), "a retry")
        private_etcd_server.start()
        until(lambda: daemon.ready, "the catch-up run")
        assert daemon.applied_revision >= revision and site(root, "alice").exists()
    finally:
        daemon.stop()
        finished(running)


def test_the_daemons_own_engine_cancels_a_playbook_once_stopping(
    tmp_path: Path, etcd_settings: EtcdSettings
) -> None:
    registry = Registry([Sites])
    daemon = Daemon(settings_for(new_root(tmp_path), etcd_settings), registry)
    playbooks = daemon.engine.playbooks
    assert daemon.engine.registry is registry
    assert playbooks.cancel() is False
    daemon.stop()
    assert playbooks.cancel() is True


def test_every_message_queued_before_a_turn_is_taken_in_that_turn(
    node_factory: Any, store: ObjectStore
) -> None:
    node = caught_up(node_factory())
    revision = put_alice(store)
    node.daemon.on_types({"crons"}, revision)
    node.daemon.on_types({"unix-users"}, revision)
    node.turn()
    assert node.daemon.debouncer.pending == {"crons", "unix-users"}


def test_a_run_for_one_type_leaves_the_other_configurations_alone(
    node_factory: Any, store: ObjectStore, clock: ManualClock
) -> None:
    put_alice(store)
    node = caught_up(node_factory())
    edit_by_hand(node)
    node.sees(node.applied() + 1, "crons")  # nothing here subscribes to crons
    clock.advance(QUIET)
    node.turn()
    assert node.runs() == 2 and not repaired(node)


def test_a_node_held_back_by_the_soak_applies_when_it_ends_with_no_new_event(
    node_factory: Any, store: ObjectStore, clock: ManualClock
) -> None:
    canary = caught_up(node_factory("web01", rollout=ROLLOUT))
    follower = node_factory("web02", rollout=ROLLOUT)
    follower.turn()  # its catch-up waits for the canary's soak
    clock.advance(30.0)
    follower.turn()
    assert follower.runs() == 1  # caught up
    revision = put_alice(store)
    canary.sees(revision)
    follower.sees(revision)
    clock.advance(QUIET)
    canary.turn()
    assert canary.applied() >= revision
    follower.turn()  # soaking: held back
    assert follower.applied() < revision
    clock.advance(30.0)
    follower.turn()
    assert follower.applied() >= revision


def test_a_soak_without_an_end_is_looked_at_again_every_half_second(
    node_factory: Any,
    store: ObjectStore,
    clock: ManualClock,
    etcd_client: EtcdClient,
    systemd: NotifySocket,
) -> None:
    """A soak record naming its canaries but no end (hand-made, or an older ccm)."""
    revision = put_alice(store)
    etcd_client.put(Keys(store.prefix).soak, Soak(revision, ["web09"], None).to_json())
    node = node_factory("web01", rollout=ROLLOUT, notify_env=systemd.env)
    node.turn()
    assert node.applied() < revision
    assert node.daemon.retry_at == T0 + 0.5
    assert systemd.received()[0] == "STATUS=soaking behind the canaries (0 s)"


@pytest.mark.usefixtures("signal_handlers")
@pytest.mark.parametrize("restart_only", [{"node": "renamed"}, {"etcd": {"prefix": "/elsewhere"}}])
def test_the_node_name_and_etcd_change_only_with_a_restart(
    node_factory: Any, store: ObjectStore, tmp_path: Path, restart_only: dict[str, Any]
) -> None:
    config = tmp_path / "ccm.toml"
    node = caught_up(node_factory(config_path=config))
    running = node.daemon.settings
    settings_file(config, running, debounce={"quiet": 20.0}, **restart_only)
    hangup(node)
    node.turn()
    assert node.daemon.settings.debounce.quiet == 20.0  # the rest is applied
    assert node.daemon.settings.node == running.node == "web01"
    assert node.daemon.settings.etcd == running.etcd


@pytest.mark.usefixtures("signal_handlers")
def test_settings_that_name_an_unknown_probe_are_refused_at_sighup(
    node_factory: Any, tmp_path: Path
) -> None:
    config = tmp_path / "ccm.toml"
    node = caught_up(node_factory(config_path=config))
    running = node.daemon.settings
    settings_file(config, running, probes={"wbe_probe": ["true"]})
    hangup(node)
    node.turn()
    assert node.daemon.settings is running


def test_the_first_run_that_raised_waits_the_initial_back_off(
    tmp_path: Path, private_etcd_server: EtcdServer, clock: ManualClock
) -> None:
    settings = EtcdSettings(endpoints=(private_etcd_server.endpoint,), prefix="/ccm", timeout=2.0)
    with EtcdClient.from_settings(settings) as client:
        node = Node(
            tmp_path, "web01", settings, client, clock, backoff={"initial": 2.0, "max": 30.0}
        )
        try:
            private_etcd_server.kill()
            node.turn()  # the catch-up run cannot reach etcd
            assert node.daemon.retry_at == T0 + 2.0
        finally:
            node.close()


def test_a_reconcile_interval_under_a_second_is_kept(
    node_factory: Any, store: ObjectStore, clock: ManualClock
) -> None:
    put_alice(store)
    node = caught_up(node_factory(reconcile_interval=0.5))
    edit_by_hand(node)
    clock.advance(0.5)
    node.turn()
    assert repaired(node)


def test_a_halted_node_tries_no_run_until_resumed(
    node_factory: Any, store: ObjectStore, clock: ManualClock, etcd_client: EtcdClient
) -> None:
    node = caught_up(node_factory())
    HaltFlag(etcd_client, store.prefix).set(
        HaltRecord.now("operator", "-", "maintenance", 0, clock.wall())
    )
    node.sees(put_alice(store))
    clock.advance(QUIET)
    node.turn()
    assert node.sample("ccm_runs_total", result="halted") == 1
    for _ in range(3):
        clock.advance(60)
        node.turn()
    assert node.sample("ccm_runs_total", result="halted") == 1  # no lock round while halted


def test_a_halted_daemon_that_stops_ends_its_wait_for_resume_at_once(
    node_factory: Any, store: ObjectStore, clock: ManualClock, etcd_client: EtcdClient
) -> None:
    """Its last thread ends before the etcd client closes (0.5 s: the wait's poll)."""
    node = caught_up(node_factory())
    assert node.daemon.wait_stopped(timeout=0) is True  # nothing started yet
    HaltFlag(etcd_client, store.prefix).set(
        HaltRecord.now("operator", "-", "maintenance", 0, clock.wall())
    )
    node.sees(put_alice(store))
    clock.advance(QUIET)
    node.turn()
    assert node.daemon.halted
    assert node.daemon.wait_stopped(timeout=0) is False  # waiting for `ccm resume`
    node.daemon.stop()
    assert node.daemon.wait_stopped(timeout=5.0) is True
