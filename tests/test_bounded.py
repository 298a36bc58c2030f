"""A run's records in etcd stay within what etcd takes, however much the run did
(``ccm.cluster.bounded``): checked against a real etcd, whose request limit refused
the records of a first run at 100,000 objects."""

from __future__ import annotations

from ccm.cluster.bounded import RECORDED_BYTES, RECORDED_ITEMS, bounded, bounded_map
from ccm.cluster.clock import timestamp
from ccm.cluster.etcd import EtcdClient
from ccm.cluster.history import RunHistory, RunRecord
from ccm.cluster.nodes import LastRun, NodeRecord, NodeRecords
from ccm.settings import EtcdSettings
from ccm.testing.node import CcmNode


def test_short_lists_are_kept_whole() -> None:
    assert bounded(["a", "b"]) == (["a", "b"], 0)
    assert bounded([]) == ([], 0)
    assert bounded_map({"x": "y"}) == ({"x": "y"}, 0)
    exactly = [f"/p{i}" for i in range(RECORDED_ITEMS)]
    assert bounded(exactly) == (exactly, 0)


def test_long_lists_keep_their_first_entries_by_count_and_by_size() -> None:
    many = [f"/p{i}" for i in range(RECORDED_ITEMS + 5)]
    assert bounded(many) == (many[:RECORDED_ITEMS], 5)
    big = ["x" * 4096] * 100  # 400 KiB of paths
    kept, left = bounded(big)
    assert len(kept) == RECORDED_BYTES // 4096 and left == 100 - len(kept)
    reasons = {f"unix-users/{i}": "r" * 2000 for i in range(200)}
    shown, more = bounded_map(reasons)
    assert list(shown) == list(reasons)[: len(shown)] and more == 200 - len(shown)
    assert sum(len(k) + len(v) for k, v in shown.items()) <= RECORDED_BYTES


def test_a_first_run_of_60000_paths_fits_in_one_etcd_transaction(
    etcd_client: EtcdClient, etcd_settings: EtcdSettings
) -> None:
    from datetime import UTC, datetime

    changed = [f"/etc/nginx/sites-enabled/{'s' * 70}{i:06d}.conf" for i in range(60000)]
    refused = {f"fpm-pools/{i}": "no php 9.9 here " * 8 for i in range(20000)}
    now = datetime.now(UTC)
    record = RunRecord.bounded(
        "web01",
        7,
        timestamp(now),
        timestamp(now),
        "success",
        changed,
        ["reload nginx"],
        refused=refused,
    )
    last = LastRun.bounded(timestamp(now), timestamp(now), "success", changed, refused=refused)
    history = RunHistory(etcd_client, etcd_settings.prefix)
    nodes = NodeRecords(etcd_client, etcd_settings.prefix)
    result = etcd_client.txn(
        [], [nodes.put_op("web01", NodeRecord(7, last)), *history.record_ops(record, now)]
    )
    assert result.succeeded
    (stored,) = history.read("web01")
    assert stored.changed == changed[:RECORDED_ITEMS]
    assert stored.omitted["changed"] == 60000 - RECORDED_ITEMS
    assert stored.omitted["refused"] == 20000 - len(stored.refused)
    assert "actions" not in stored.omitted
    read = nodes.read("web01")
    assert read is not None and read.last_run is not None
    assert read.last_run.omitted["changed"] == 60000 - RECORDED_ITEMS


def test_20000_refusals_are_recorded_a_bounded_share_per_run_until_all_are(
    etcd_client: EtcdClient, etcd_settings: EtcdSettings
) -> None:
    from datetime import UTC, datetime

    from ccm.cluster.bounded import WRITES_BUDGET
    from ccm.cluster.failures import ObjectFailures
    from ccm.plan.operations import Refusal

    failures = ObjectFailures(etcd_client, etcd_settings.prefix)
    why = Refusal("php-fpm", "php 9.9 is not installed on this node " + "x" * 60)
    refused = {f"fpm-pools/{i}": why for i in range(1, 20001)}
    now = datetime.now(UTC)
    rounds = 0
    while True:
        ops = failures.sync_ops("web01", refused, {"php-fpm"}, 7, now)
        if not ops:
            break
        assert sum(op.size for op in ops) <= WRITES_BUDGET + 1024 and len(ops) <= 1000
        assert etcd_client.txn([], ops).succeeded  # each run's share fits in one request
        rounds += 1
    recorded = {failure.object for failure in failures.all()}
    assert recorded == set(refused) and 1 < rounds < 40
    # all applied again: the records go, a bounded share per run as well
    rounds = 0
    while ops := failures.sync_ops("web01", {}, {"php-fpm"}, 8, now):
        assert etcd_client.txn([], ops).succeeded
        rounds += 1
    assert failures.all() == [] and rounds >= 20


def test_within_budget_keeps_at_least_one_op_and_stops_at_the_budget() -> None:
    from ccm.cluster.bounded import within_budget
    from ccm.cluster.etcd import Delete, Put

    big = [Put("k1", b"x" * 100), Put("k2", b"y")]
    assert within_budget(big, 10) == big[:1]  # alone over budget: still written
    assert within_budget(big, 105) == big  # 2 + 100 + 2 + 1 bytes
    assert within_budget(big, 104) == big[:1]
    assert within_budget([Delete("abc")], 3) == [Delete("abc")]
    assert within_budget([], 10) == []


def test_ccm_history_counts_what_a_record_left_out(ccm_node: CcmNode) -> None:
    from datetime import UTC, datetime

    changed = [f"/etc/sites/site{i:05d}.conf" for i in range(1500)]
    now = datetime.now(UTC)
    record = RunRecord.bounded("web01", 3, timestamp(now), timestamp(now), "success", changed)
    settings = ccm_node.settings.etcd
    with EtcdClient.from_settings(settings) as client:
        history = RunHistory(client, settings.prefix)
        assert client.txn([], history.record_ops(record, now)).succeeded
    shown = ccm_node.ccm("history", check=True).stdout
    assert "1500 change(s)" in shown
    assert "… and 500 more changed not recorded (the node's log has them)" in shown
    assert shown.count("/etc/sites/site") == 1000
