"""One locked run on a node (``NodeRun``): a real etcd, a real temporary root, a manual clock.

What a run promises the fleet: it applies only under the lock and records its success
only while the lock is still its own (the fence); a failure sets the halt flag, records
the failed run and releases the lock in one transaction; a node turned away by the halt
flag or by a canary's soak applies nothing; the work a run selects is derived from
revisions, so nothing a node missed is lost.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from daemon_node import (
    Commands,
    break_check,
    engine_with,
    new_root,
    revoke_lock_lease,
    settings_for,
    site,
)

from ccm.cluster.clock import ManualClock
from ccm.cluster.etcd import EtcdClient
from ccm.cluster.keys import Keys
from ccm.cluster.store import ObjectStore
from ccm.daemon.node_run import NodeRun
from ccm.errors import LockLost
from ccm.settings import EtcdSettings


def alice_and_bob(store: ObjectStore) -> int:
    return store.put("unix-users", [{"id": 1, "username": "alice"}, {"id": 2, "username": "bob"}])


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
