"""The daemon's loop (``ccm daemon``) in this process: a real etcd, a real temporary root,
a manual clock, and the loop driven one turn at a time (``Daemon.turn``).

Events are handed to the daemon as the watcher hands them (``Daemon.on_types``), so a
test decides exactly which events a node has seen; what etcd itself reports (the halt
flag cleared, the lock) arrives from etcd. A turn that must wait for etcd is given a
deadline, and returns as soon as the message is there: nothing sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_node import (
    Commands,
    Sites,
    break_check,
    engine_with,
    new_root,
    revoke_lock_lease,
    settings_for,
    site,
)
from etcd_server import EtcdServer

from ccm.cluster.clock import ManualClock
from ccm.cluster.etcd import EtcdClient
from ccm.cluster.halt import HaltFlag, HaltRecord
from ccm.cluster.nodes import NodeRecords
from ccm.cluster.store import ObjectStore
from ccm.daemon.loop import Daemon
from ccm.daemon.node_run import NodeRun
from ccm.daemon.notify import Notifier
from ccm.engine.registry import Registry
from ccm.errors import ClusterError
from ccm.settings import EtcdSettings

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
        **overrides: Any,
    ) -> None:
        self.name = name
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
            notifier=Notifier(env={}, clock=clock),
            engine_factory=engine_with(self.commands),
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

    def close(self) -> None:
        self.daemon.stop()  # ends its halt watch, if any


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

    clock.advance(1.9)
    node.turn()  # still backing off
    assert node.applied() < revision
    clock.advance(0.1)
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
