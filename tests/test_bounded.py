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
