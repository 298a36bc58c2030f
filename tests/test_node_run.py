"""One locked run on a node (``NodeRun``): a real etcd, a real temporary root, a manual clock.

What a run promises the fleet: it applies only under the lock and records its success
only while the lock is still its own (the fence); a failure sets the halt flag, records
the failed run and releases the lock in one transaction; a node turned away by the halt
flag or by a canary's soak applies nothing; the work a run selects is derived from
revisions, so nothing a node missed is lost.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from daemon_node import (
    Commands,
    MarkerPlaybooks,
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

from ccm import faults
from ccm.cluster.canary import SoakRecord
from ccm.cluster.clock import ManualClock, timestamp
from ccm.cluster.etcd import EtcdClient
from ccm.cluster.halt import HaltRecord
from ccm.cluster.history import RunHistory
from ccm.cluster.keys import Keys
from ccm.cluster.lock import ClusterLock, lock_queue
from ccm.cluster.nodes import LastRun, NodeRecord
from ccm.cluster.store import ObjectStore
from ccm.daemon.node_run import NodeRun, missed_types
from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.errors import LockCancelled, LockLost, LockTimeout, RunCancelled
from ccm.models import Snapshot
from ccm.plan.changes import Change, Playbook
from ccm.plan.configuration import Configuration, Render
from ccm.plan.manifest import Manifest
from ccm.settings import EtcdSettings
from ccm.testing.etcd import EtcdServer
from ccm.testing.noderoot import actions


def alice_and_bob(store: ObjectStore) -> int:
    return store.put("unix-users", [{"id": 1, "username": "alice"}, {"id": 2, "username": "bob"}])


class Crontabs(Configuration):
    """Subscribes to crons, plans nothing: only its selection is looked at."""

    name = "crontabs"
    subscribes = ("crons",)

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return []


class Node:
    """One node: its root, settings, commands, clock and its ``NodeRun``."""

    def __init__(
        self,
        base: Path,
        etcd: EtcdSettings,
        client: EtcdClient,
        name: str = "web01",
        **overrides: Any,
    ) -> None:
        self.name = name
        self.root = new_root(base, name)
        self.clock = ManualClock()
        self.commands = Commands()
        self.settings = settings_for(self.root, etcd, name, **overrides)
        engine = engine_with(self.commands, Sites, Crontabs)(self.settings)
        self.run = NodeRun(self.settings, client, engine, clock=self.clock)
        self.client = client
        self.keys = Keys(etcd.prefix)

    def record(self) -> NodeRecord | None:
        return self.run.nodes.read(self.name)

    def history(self) -> list[Any]:
        return RunHistory(self.client, self.keys.prefix).read(self.name)

    def lock_queue(self) -> list[str]:
        return [entry.node for entry in lock_queue(self.client, self.keys.prefix)]


@pytest.fixture
def node(tmp_path: Path, etcd_settings: EtcdSettings, etcd_client: EtcdClient) -> Node:
    return Node(tmp_path, etcd_settings, etcd_client)


def cron(store: ObjectStore) -> int:
    return store.put(
        "crons",
        [{"id": 1, "unix_user_id": 1, "name": "job", "schedule": "@daily", "command": "true"}],
    )


def keys_under(client: EtcdClient, prefix: str) -> list[str]:
    kvs, _ = client.get_prefix(prefix)
    return [kv.key for kv in kvs]


# -- the success record is fenced on the lock ----------------------------------------------


def test_a_lock_lost_during_the_probe_records_no_success_history_or_failures(
    tmp_path: Path, etcd_client: EtcdClient, etcd_settings: EtcdSettings, store: ObjectStore
) -> None:
    """Probes run without a guard (the reloads ran; the gate is theirs), so the lease can
    be lost after the last check of the lock. The record of the run is then refused by
    the fence: the run ends with ``LockLost`` and writes nothing, so the next holder
    does not take this node for one that applied the revision."""
    root = new_root(tmp_path)
    site(root, "bob").parent.mkdir(parents=True)
    site(root, "bob").write_text("made by hand\n")  # bob is refused on this node
    revision = alice_and_bob(store)
    commands = Commands()
    settings = settings_for(root, etcd_settings)
    run = NodeRun(settings, etcd_client, engine_with(commands)(settings), clock=ManualClock())
    commands.on("probe", revoke_lock_lease(etcd_client, etcd_settings.prefix))

    with pytest.raises(LockLost, match="changed hands before the run was recorded"):
        run.run(["unix-users"])

    assert site(root, "alice").read_text() == "alice\n"  # applied, probed: then the lease went
    keys = Keys(etcd_settings.prefix)
    assert etcd_client.get(keys.node("web01")) is None
    assert keys_under(etcd_client, keys.history) == []
    assert keys_under(etcd_client, keys.failures) == []

    # the same run with its lock kept records all three: the run's record, its
    # history and bob's refusal (what the lost lock kept out)
    outcome = run.run(["unix-users"])
    assert outcome.result == "success" and outcome.revision >= revision
    record = etcd_client.get(keys.node("web01"))
    assert record is not None
    assert json.loads(record.value)["applied_revision"] == outcome.revision
    assert len(keys_under(etcd_client, keys.history)) == 1
    assert keys_under(etcd_client, keys.failures) == [keys.failure("unix-users/2", "web01")]


def test_a_run_that_fails_after_its_lock_was_lost_still_halts_the_fleet(
    tmp_path: Path, etcd_client: EtcdClient, etcd_settings: EtcdSettings, store: ObjectStore
) -> None:
    """A halt is always safe: a failing node whose lease went meanwhile still sets it."""
    root = new_root(tmp_path)
    alice_and_bob(store)
    break_check(root)
    commands = Commands()
    settings = settings_for(root, etcd_settings)
    run = NodeRun(settings, etcd_client, engine_with(commands)(settings), clock=ManualClock())
    commands.on("broken", revoke_lock_lease(etcd_client, etcd_settings.prefix))

    outcome = run.run(["unix-users"])

    assert outcome.result == "failed"
    halt = run.halt.get()
    assert halt is not None and halt.node == "web01" and "sites: broken config" in halt.error
    record = run.nodes.read("web01")
    assert record is not None and record.last_run is not None
    assert record.last_run.result == "failed" and record.applied_revision == 0
    assert not site(root, "alice").exists()  # rolled back


# -- what a run selects ---------------------------------------------------------------------


def test_a_node_with_no_record_runs_every_configuration(node: Node, store: ObjectStore) -> None:
    put = alice_and_bob(store)
    outcome = node.run.run(["unix-users"])
    assert outcome.selected == ["crontabs", "sites"]
    record = node.record()
    assert record is not None and record.applied_revision == outcome.revision >= put


def test_a_run_takes_what_it_was_asked_plus_every_type_written_since_the_last_run(
    node: Node, store: ObjectStore
) -> None:
    alice_and_bob(store)
    cron(store)  # before the first run: applied by it
    node.run.run()
    assert node.run.run(["unix-users"]).selected == ["sites"]
    assert node.run.run([]).selected == []
    cron(store)  # a write this node did not hear of
    assert node.run.run(["unix-users"]).selected == ["crontabs", "sites"]
    assert node.run.run(["unix-users"]).selected == ["sites"]  # applied now


def test_a_node_whose_first_run_failed_still_owes_a_full_run(
    node: Node, store: ObjectStore
) -> None:
    alice_and_bob(store)
    break_check(node.root)
    assert node.run.run().result == "failed"
    record = node.record()
    assert record is not None and record.applied_revision == 0
    node.run.halt.clear()
    break_check(node.root, broken=False)
    assert node.run.run([]).selected == ["crontabs", "sites"]


@pytest.mark.parametrize(("types", "full"), [([], True), (["*"], False)])
def test_a_full_run_runs_every_configuration(
    node: Node, store: ObjectStore, types: list[str], full: bool
) -> None:
    alice_and_bob(store)
    node.run.run()
    assert node.run.run(types, full=full).selected == ["crontabs", "sites"]


def test_a_run_with_nothing_to_run_records_the_revision_it_read(
    node: Node, store: ObjectStore
) -> None:
    alice_and_bob(store)
    first = node.run.run()
    node.commands.ran.clear()
    outcome = node.run.run(["mail-accounts"])  # no configuration subscribes to it
    assert outcome.result == "success" and outcome.selected == []
    assert outcome.revision > first.revision
    record = node.record()
    assert record is not None and record.applied_revision == outcome.revision
    assert node.commands.ran == []


def test_a_run_with_nothing_to_run_leaves_a_crashed_runs_unchecked_files_owed(
    node: Node, store: ObjectStore
) -> None:
    """A run that selects nothing does not touch the node: the files a killed run wrote
    but never checked are still checked (and reloaded) by the next run of their
    configuration, although their content does not change again."""
    alice_and_bob(store)
    node.run.run()
    # what a run killed after writing alice's file, before its check, leaves behind
    manifest = Manifest.load(node.run.engine.manifest_path)
    manifest.unverified = {"sites": ["/etc/sites/alice.conf"]}
    manifest.save()
    before = actions(node.root)
    assert node.run.run([]).selected == []
    assert actions(node.root) == before
    assert node.run.run(["unix-users"]).selected == ["sites"]
    assert actions(node.root)[len(before) :] == ["check", "reload sites", "probe sites"]


def test_missed_types_are_those_written_after_the_applied_revision() -> None:
    revisions = {"unix-users": 5, "crons": 9, "fpm-pools": 10}
    assert missed_types(revisions, 9) == {"fpm-pools"}
    assert missed_types(revisions, 4) == set(revisions)
    assert missed_types(revisions, 10) == set()


# -- the halt flag, the lock ----------------------------------------------------------------


def test_a_node_turned_away_by_the_halt_flag_applies_and_records_nothing(
    node: Node, store: ObjectStore
) -> None:
    alice_and_bob(store)
    halt = HaltRecord("web09", "sites", "boom", 3, "2024-01-01T00:00:00.000Z")
    node.run.halt.set(halt)
    outcome = node.run.run()
    assert outcome.result == "halted" and outcome.halt == halt
    assert outcome.selected == [] and outcome.revision == 0
    assert node.record() is None and node.history() == []
    assert node.commands.ran == [] and not site(node.root, "alice").exists()
    assert node.lock_queue() == []


def test_the_lock_is_released_after_every_run(node: Node, store: ObjectStore) -> None:
    alice_and_bob(store)
    assert node.run.run().result == "success"
    assert node.lock_queue() == []
    store.put("unix-users", [{"id": 3, "username": "carol"}])
    break_check(node.root)
    assert node.run.run(full=True).result == "failed"
    assert node.lock_queue() == []
    assert node.run.run().result == "halted"
    assert node.lock_queue() == []


def test_a_run_gives_up_waiting_for_the_lock_at_its_timeout(
    node: Node, store: ObjectStore, etcd_client: EtcdClient
) -> None:
    alice_and_bob(store)
    other = ClusterLock(etcd_client, store.prefix, "web02", ttl=30).acquire()
    try:
        with pytest.raises(LockTimeout):
            node.run.run(lock_timeout=0)
    finally:
        other.release()
    assert node.record() is None and not site(node.root, "alice").exists()


def test_a_stop_during_the_run_restores_it_and_halts_nobody(node: Node, store: ObjectStore) -> None:
    alice_and_bob(store)
    cancel = threading.Event()
    node.commands.on("broken", cancel.set)  # SIGTERM while the check runs
    with pytest.raises(RunCancelled, match="stopping; the run was rolled back"):
        node.run.run(cancel=cancel)
    assert not site(node.root, "alice").exists()
    assert node.run.halt.get() is None and node.record() is None
    assert node.lock_queue() == []


def test_a_run_that_fails_while_stopping_is_a_stop_not_a_halt(
    node: Node, store: ObjectStore
) -> None:
    """A SIGTERM cancels a long playbook, which then fails: that is no failure to halt on."""
    alice_and_bob(store)
    break_check(node.root)
    cancel = threading.Event()
    node.commands.on("broken", cancel.set)
    with pytest.raises(RunCancelled, match="stopping; the run was rolled back"):
        node.run.run(cancel=cancel)
    assert node.run.halt.get() is None and node.record() is None


def test_a_stop_asked_before_the_lock_is_taken_runs_nothing(node: Node, store: ObjectStore) -> None:
    alice_and_bob(store)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(LockCancelled):
        node.run.run(cancel=cancel)
    assert node.commands.ran == [] and node.lock_queue() == []


# -- what a run records ---------------------------------------------------------------------


def test_a_success_records_the_revision_times_changes_actions_and_refusals(
    node: Node, store: ObjectStore
) -> None:
    site(node.root, "bob").parent.mkdir(parents=True)
    site(node.root, "bob").write_text("made by hand\n")
    alice_and_bob(store)
    started = node.clock.wall()
    node.commands.on("reload", lambda: node.clock.advance(5.0))
    outcome = node.run.run()
    assert outcome.result == "success"
    record = node.record()
    assert record is not None and record.applied_revision == outcome.revision
    refused = {
        "unix-users/2": outcome.report.refused["unix-users/2"].configuration
        + ": "
        + outcome.report.refused["unix-users/2"].reason
    }
    assert record.last_run == LastRun(
        timestamp(started),
        timestamp(started + timedelta(seconds=5)),
        "success",
        ["/etc/sites/alice.conf"],
        refused=refused,
    )
    assert "refusing to overwrite" in refused["unix-users/2"]
    (run,) = node.history()
    assert (run.node, run.revision, run.result) == ("web01", outcome.revision, "success")
    assert (run.started, run.finished) == (record.last_run.started, record.last_run.finished)
    assert run.changed == ["/etc/sites/alice.conf"] and run.refused == refused
    assert run.actions == outcome.report.actions and len(run.actions) == 3
    assert outcome.report.changed_paths == ["/etc/sites/alice.conf"]
    history = RunHistory(node.client, node.keys.prefix)
    assert keys_under(node.client, node.keys.history) == [
        node.keys.history_of("web01") + history.run_id(started, outcome.revision)
    ]
    failure = node.client.get(node.keys.failure("unix-users/2", "web01"))
    assert failure is not None
    assert json.loads(failure.value) == {
        "node": "web01",
        "configuration": "sites",
        "error": outcome.report.refused["unix-users/2"].reason,
        "revision": outcome.revision,
        "at": record.last_run.finished,
    }


def test_a_failure_sets_the_halt_records_it_and_releases_the_lock_in_one_transaction(
    node: Node, store: ObjectStore, etcd_client: EtcdClient
) -> None:
    alice_and_bob(store)
    first = node.run.run()
    store.put("unix-users", [{"id": 3, "username": "carol"}])
    break_check(node.root)
    node.clock.advance(60)
    outcome = node.run.run(["unix-users"])
    assert outcome.result == "failed" and outcome.error is not None
    assert outcome.selected == ["sites"]
    halt = node.run.halt.get()
    assert halt == outcome.halt
    assert halt == HaltRecord(
        "web01", "sites", str(outcome.error), outcome.revision, timestamp(node.clock.wall())
    )
    assert "sites: broken config" in halt.error
    record = node.record()
    assert record is not None and record.applied_revision == first.revision  # kept
    assert record.last_run == LastRun(
        timestamp(node.clock.wall()), timestamp(node.clock.wall()), "failed", [], str(outcome.error)
    )
    failed = node.history()[0]
    assert (failed.result, failed.error, failed.revision) == ("failed", halt.error, halt.revision)
    assert (failed.node, failed.started, failed.finished) == (
        "web01",
        record.last_run.started,
        record.last_run.finished,
    )
    run_id = RunHistory(etcd_client, node.keys.prefix).run_id(node.clock.wall(), halt.revision)
    assert node.keys.history_of("web01") + run_id in keys_under(etcd_client, node.keys.history)
    # the halt and the lock's release are one transaction: the same revision
    halt_kv = etcd_client.get(node.keys.halt)
    assert halt_kv is not None
    with etcd_client.watch_prefix(node.keys.lock, start_revision=halt_kv.mod_revision) as watch:
        batch = watch.get(timeout=5)
    assert batch is not None
    assert [(e.type, e.mod_revision) for e in batch.events][:1] == [
        ("delete", halt_kv.mod_revision)
    ]


def test_a_halt_that_cannot_be_recorded_is_retried_until_etcd_is_back(
    tmp_path: Path, private_etcd_server: EtcdServer
) -> None:
    """The halt must reach etcd before anyone else applies: the failing node keeps
    trying through an outage (its history entry may be lost, the halt is not)."""
    etcd = EtcdSettings(endpoints=(private_etcd_server.endpoint,), prefix="/ccm", timeout=2.0)
    with EtcdClient.from_settings(etcd) as client:
        node = Node(tmp_path, etcd, client, backoff={"initial": 0.1, "max": 0.2})
        alice_and_bob(ObjectStore(client, "/ccm", writer="tests"))
        break_check(node.root)
        node.commands.on("broken", private_etcd_server.kill)  # etcd dies as the check fails
        outcomes: list[Any] = []
        with capture_logs() as logs:
            failing = threading.Thread(target=lambda: outcomes.append(node.run.run()), daemon=True)
            failing.start()
            deadline = time.monotonic() + 20
            while not any(e["event"] == "cannot record the halt yet; retrying" for e in logs):
                assert time.monotonic() < deadline and failing.is_alive(), "no retry"
                time.sleep(0.05)
        private_etcd_server.start()
        failing.join(20)
        assert not failing.is_alive()
        assert [o.result for o in outcomes] == ["failed"]
        halt = node.run.halt.get()
        assert halt is not None and "sites: broken config" in halt.error
        record = node.record()
        assert record is not None and record.last_run is not None
        assert record.last_run.result == "failed"
        assert node.history() == []  # read while etcd was away: only the halt was kept


# -- the canary's soak ------------------------------------------------------------------------


def test_the_first_node_of_a_change_set_is_its_canary_and_starts_the_soak(
    tmp_path: Path, etcd_settings: EtcdSettings, etcd_client: EtcdClient, store: ObjectStore
) -> None:
    rollout = {"canary": 1, "soak": 30.0, "probe_timeout": 0.0}
    canary = Node(tmp_path, etcd_settings, etcd_client, "web01", rollout=rollout)
    other = Node(tmp_path, etcd_settings, etcd_client, "web02", rollout=rollout)
    change_set = alice_and_bob(store)
    outcome = canary.run.run()
    assert outcome.result == "success" and outcome.soak_left == 30.0
    soak = SoakRecord(etcd_client, store.prefix).get()
    assert soak is not None
    assert (soak.revision, soak.canaries) == (change_set, ["web01"])
    assert soak.until == timestamp(canary.clock.wall() + timedelta(seconds=30))

    again = canary.run.run(full=True)  # the canary itself, during its soak
    assert again.result == "success" and again.soak_left is None

    other.clock.advance(10)
    waiting = other.run.run()
    assert (waiting.result, waiting.revision, waiting.soak_left) == ("soaking", change_set, 20.0)
    assert other.record() is None and not site(other.root, "alice").exists()
    assert other.lock_queue() == []
    other.clock.advance(20)
    assert other.run.run().result == "success"
    assert site(other.root, "alice").exists()


def test_a_soak_starts_with_the_last_of_its_canaries(
    tmp_path: Path, etcd_settings: EtcdSettings, etcd_client: EtcdClient, store: ObjectStore
) -> None:
    rollout = {"canary": 2, "soak": 30.0, "probe_timeout": 0.0}
    first = Node(tmp_path, etcd_settings, etcd_client, "web01", rollout=rollout)
    second = Node(tmp_path, etcd_settings, etcd_client, "web02", rollout=rollout)
    alice_and_bob(store)
    assert first.run.run().soak_left is None  # canaries still to come
    second.clock.advance(5)
    assert second.run.run().soak_left == 30.0
    soak = SoakRecord(etcd_client, store.prefix).get()
    assert soak is not None and soak.canaries == ["web01", "web02"]


def test_without_canaries_no_soak_is_read_or_written(
    node: Node, store: ObjectStore, etcd_client: EtcdClient
) -> None:
    alice_and_bob(store)
    assert node.run.run().soak_left is None
    assert SoakRecord(etcd_client, store.prefix).get() is None


# -- a canary's health during its soak ------------------------------------------------------


def test_a_healthy_canary_sets_no_halt(node: Node, store: ObjectStore) -> None:
    alice_and_bob(store)
    node.run.run()
    assert node.run.check_health() is True
    assert node.run.halt.get() is None


def test_an_unhealthy_canary_halts_the_fleet_with_the_probes_output(
    node: Node, store: ObjectStore, etcd_client: EtcdClient
) -> None:
    alice_and_bob(store)
    node.run.run()
    make_unhealthy(node.root)
    node.clock.advance(7)
    assert node.run.check_health() is False
    halt = node.run.halt.get()
    assert halt is not None
    assert (halt.node, halt.configuration) == ("web01", "sites")
    assert halt.error.startswith("canary web01: probe 'sh -c ")
    assert halt.error.endswith("failed during the soak:\nsites: no answer")
    assert halt.revision == etcd_client.current_revision() - 1  # read just before the put
    assert halt.at == timestamp(node.clock.wall())


# -- new settings (SIGHUP) ------------------------------------------------------------------


def test_new_settings_change_the_lock_ttl_and_the_history_kept(
    node: Node, store: ObjectStore, etcd_client: EtcdClient
) -> None:
    alice_and_bob(store)
    settings = node.settings.model_copy(
        update={
            "lock": node.settings.lock.model_copy(update={"ttl": 50}),
            "history": node.settings.history.model_copy(update={"keep": 2}),
        }
    )
    ttls: list[int] = []
    node.commands.on(
        "reload",
        lambda: ttls.append(
            etcd_client.lease_ttl(lock_queue(etcd_client, store.prefix)[0].lease_id)
        ),
    )
    holders: list[str] = []
    node.commands.on("check", lambda: holders.append(lock_queue(etcd_client, store.prefix)[0].node))
    node.run.reconfigure(settings, engine_with(node.commands, Sites)(settings))
    for _ in range(3):
        node.run.run(full=True)
    assert ttls and ttls[0] > 30
    assert holders == ["web01"]  # still in the node's name
    assert len(node.history()) == 2
    assert node.run.run(full=True).selected == ["sites"]  # the new engine

    other = ClusterLock(etcd_client, store.prefix, "web02", ttl=30).acquire()
    raised: list[BaseException] = []

    def wait() -> None:
        try:
            node.run.run(lock_timeout=3600)
        except BaseException as error:
            raised.append(error)

    waiting = threading.Thread(target=wait, daemon=True)
    try:
        waiting.start()
        deadline = time.monotonic() + 10
        while len(lock_queue(etcd_client, store.prefix)) < 2:
            assert time.monotonic() < deadline, "web01 never queued"
            time.sleep(0.02)
        node.clock.advance(3600)  # the new lock still runs on the node's clock
        waiting.join(10)
    finally:
        other.release()
    assert [type(error) for error in raised] == [LockTimeout]


def test_with_canaries_and_nothing_written_yet_the_first_node_still_goes_first(
    tmp_path: Path, etcd_settings: EtcdSettings, etcd_client: EtcdClient
) -> None:
    rollout = {"canary": 1, "soak": 30.0, "probe_timeout": 0.0}
    first = Node(tmp_path, etcd_settings, etcd_client, "web01", rollout=rollout)
    second = Node(tmp_path, etcd_settings, etcd_client, "web02", rollout=rollout)
    assert first.run.run().soak_left == 30.0
    waiting = second.run.run()
    assert (waiting.result, waiting.revision) == ("soaking", 0)


def test_a_run_for_one_type_leaves_the_configurations_of_others_as_they_are(
    node: Node, store: ObjectStore
) -> None:
    alice_and_bob(store)
    node.run.run()
    site(node.root, "alice").write_text("edited by hand\n")
    cron(store)
    assert node.run.run(["crons"]).selected == ["crontabs"]
    assert site(node.root, "alice").read_text() == "edited by hand\n"
    node.run.run(full=True)
    assert site(node.root, "alice").read_text() == "alice\n"


class Packages(Configuration):
    name = "packages"
    subscribes = ("clusters",)

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return [Playbook("packages.yml", {"versions": ["8.2"]})]


def test_a_full_run_runs_the_playbooks_again_and_a_types_run_does_not(
    node: Node, tmp_path: Path, etcd_client: EtcdClient
) -> None:
    playbooks_dir = tmp_path / "playbooks"
    playbooks_dir.mkdir()
    (playbooks_dir / "packages.yml").write_text("- hosts: localhost\n")
    playbooks = MarkerPlaybooks(node.root, playbooks_dir)
    engine = Engine(Registry([Sites, Packages]), node.settings, playbooks=playbooks)
    node.run = NodeRun(node.settings, etcd_client, engine, clock=node.clock)
    node.run.run()  # the first run is a full one
    assert len(playbooks.runs()) == 1
    node.run.run(["clusters"])
    assert len(playbooks.runs()) == 1  # the same inputs: not again
    node.run.run(full=True)
    assert len(playbooks.runs()) == 2  # a reconcile runs it anyway


# -- between the snapshot and the work: what a run decides from one revision --------------


class WriteAfterSnapshot(ObjectStore):
    """The node's store, with something happening right after the run read its snapshot
    (the window between the snapshot and the rest of the run, made deterministic)."""

    then: Any = None

    def snapshot(self, revision: int | None = None) -> Snapshot:
        taken = super().snapshot(revision)
        if self.then is not None:
            then, self.then = self.then, None
            then()
        return taken


def with_store_hook(node: Node, then: Any) -> None:
    store = WriteAfterSnapshot(node.client, node.keys.prefix, writer=node.name)
    store.then = then
    node.run.store = store


def test_the_types_selected_are_those_written_up_to_the_snapshot_read(
    node: Node, store: ObjectStore
) -> None:
    """A write that lands after the snapshot is not in it: its type waits for its own
    event (planning it from the older snapshot would apply nothing of it)."""
    alice_and_bob(store)
    node.run.run()
    with_store_hook(node, lambda: cron(store))
    outcome = node.run.run(["unix-users"])
    assert outcome.selected == ["sites"]
    assert node.run.run(["unix-users"]).selected == ["crontabs", "sites"]  # its turn now


class Unplannable(Configuration):
    name = "unplannable"
    subscribes = ("unix-users",)

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        raise ValueError("cannot plan")


def test_a_node_that_knows_its_lock_is_lost_before_planning_halts_nobody(
    tmp_path: Path, etcd_settings: EtcdSettings, etcd_client: EtcdClient, store: ObjectStore
) -> None:
    """The lock is checked before any work: a node whose lease was lost (and whose
    keep-alive saw it) while it read the snapshot stops with ``LockLost``, not with the
    plan error that would halt the fleet."""
    node = Node(tmp_path, etcd_settings, etcd_client, lock={"ttl": 2})
    engine = engine_with(node.commands, Sites, Unplannable)(node.settings)
    node.run = NodeRun(node.settings, etcd_client, engine, clock=node.clock)
    alice_and_bob(store)
    with capture_logs() as logs:

        def lose_the_lock() -> None:
            revoke_lock_lease(etcd_client, store.prefix)()
            deadline = time.monotonic() + 10  # the keep-alive refreshes every ttl/3 s
            while not any(e["event"] == "cluster lock lost" for e in logs):
                assert time.monotonic() < deadline, "the keep-alive never saw the loss"
                time.sleep(0.02)

        with_store_hook(node, lose_the_lock)
        with pytest.raises(LockLost):
            node.run.run()
    assert node.run.halt.get() is None and node.record() is None


def test_a_success_reaches_the_recorded_crash_point_after_its_record(
    node: Node, store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CCM_CRASH_AT", "nowhere")  # armed for a step no run reaches
    monkeypatch.setattr(faults, "trail", [])
    alice_and_bob(store)
    node.run.run()
    assert faults.trail[-1] == "recorded"
    assert faults.trail.count("recorded") == 1


def test_a_stop_ends_the_retries_of_a_halt_that_cannot_be_recorded(
    tmp_path: Path, private_etcd_server: EtcdServer
) -> None:
    """SIGTERM while etcd is away: the node stops trying (its lease expires, the next
    node finds the same revisions to apply) rather than hang in the retries."""
    etcd = EtcdSettings(endpoints=(private_etcd_server.endpoint,), prefix="/ccm", timeout=2.0)
    with EtcdClient.from_settings(etcd) as client:
        node = Node(tmp_path, etcd, client, backoff={"initial": 0.1, "max": 0.2})
        alice_and_bob(ObjectStore(client, "/ccm", writer="tests"))
        break_check(node.root)
        node.commands.on("broken", private_etcd_server.kill)
        cancel = threading.Event()
        raised: list[BaseException] = []

        def run() -> None:
            try:
                node.run.run(cancel=cancel)
            except BaseException as error:
                raised.append(error)

        with capture_logs() as logs:
            failing = threading.Thread(target=run, daemon=True)
            failing.start()
            deadline = time.monotonic() + 20
            while not any(e["event"] == "cannot record the halt yet; retrying" for e in logs):
                assert time.monotonic() < deadline and failing.is_alive(), "no retry"
                time.sleep(0.05)
        cancel.set()
        failing.join(20)
        assert not failing.is_alive(), "the retries went on after the stop"
        assert [type(error).__name__ for error in raised] == ["EtcdUnavailable"]


def test_the_lock_is_held_in_the_nodes_name_with_its_ttl_and_history_keeps_its_bound(
    tmp_path: Path, etcd_settings: EtcdSettings, etcd_client: EtcdClient, store: ObjectStore
) -> None:
    node = Node(tmp_path, etcd_settings, etcd_client, lock={"ttl": 20}, history={"keep": 2})
    alice_and_bob(store)
    held: list[tuple[str, int]] = []

    def holder() -> None:
        entry = lock_queue(etcd_client, store.prefix)[0]
        held.append((entry.node, etcd_client.lease_ttl(entry.lease_id)))

    node.commands.on("reload", holder)
    for _ in range(3):
        node.run.run(full=True)
    ((name, ttl),) = held
    assert name == "web01" and 15 < ttl <= 20
    assert len(node.history()) == 2


def test_a_lock_wait_ends_at_its_timeout_on_the_nodes_clock(
    node: Node, store: ObjectStore, etcd_client: EtcdClient
) -> None:
    alice_and_bob(store)
    other = ClusterLock(etcd_client, store.prefix, "web02", ttl=30).acquire()
    raised: list[BaseException] = []

    def wait() -> None:
        try:
            node.run.run(lock_timeout=3600)
        except BaseException as error:
            raised.append(error)

    waiting = threading.Thread(target=wait, daemon=True)
    try:
        waiting.start()
        deadline = time.monotonic() + 10
        while len(lock_queue(etcd_client, store.prefix)) < 2:
            assert time.monotonic() < deadline, "web01 never queued"
            time.sleep(0.02)
        node.clock.advance(3600)  # an hour on the node's clock
        waiting.join(10)
    finally:
        other.release()
    assert not waiting.is_alive()
    assert [type(error) for error in raised] == [LockTimeout]


def test_new_settings_bring_canaries(
    node: Node, store: ObjectStore, etcd_client: EtcdClient
) -> None:
    alice_and_bob(store)
    rollout = node.settings.rollout.model_copy(update={"canary": 1, "soak": 30.0})
    settings = node.settings.model_copy(update={"rollout": rollout})
    node.run.reconfigure(settings, engine_with(node.commands, Sites)(settings))
    assert node.run.run().soak_left == 30.0
    assert SoakRecord(etcd_client, store.prefix).get() is not None


def test_a_run_that_changes_more_than_a_record_holds_is_recorded_with_a_count(
    node: Node, store: ObjectStore
) -> None:
    """1,200 files changed: the node record and the history list the first 1,000 and
    count the rest (at 100,000 objects the full lists made a transaction etcd refused)."""
    users = [{"id": i, "username": f"user{i:04d}"} for i in range(1, 1201)]
    for offset in range(0, len(users), 500):
        store.put("unix-users", users[offset : offset + 500])
    outcome = node.run.run(full=True)
    assert outcome.result == "success" and len(outcome.report.changed_paths) == 1200
    record = node.record()
    assert record is not None and record.last_run is not None
    assert record.last_run.changed == outcome.report.changed_paths[:1000]
    assert record.last_run.omitted == {"changed": 200}
    (run,) = node.history()
    assert run.changed == outcome.report.changed_paths[:1000]
    assert run.omitted == {"changed": 200}
