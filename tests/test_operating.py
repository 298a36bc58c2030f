"""Operating the fleet (issue 10): rollout progress, run history, metrics.

Real daemons against a real etcd (``cluster_harness``); the metrics are scraped with a
real HTTP GET; ``ccm rollout --wait`` and ``ccm objects put --wait`` are the real CLI.
The waiting logic itself is tested with an injected clock.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import BROKEN_MARK, Cluster, wait_until

from ccm.cluster.clock import ManualClock
from ccm.cluster.etcd import EtcdClient
from ccm.cluster.history import RunHistory, RunRecord
from ccm.cluster.rollout import Rollout, rollout, wait_for
from ccm.testing.etcd import EtcdServer


@pytest.fixture
def cluster(private_etcd_server: EtcdServer, tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(
        private_etcd_server, tmp_path / "cluster"
    ) as harness:  # stopped, and its logs printed, whatever happens
        yield harness


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def scrape(port: int) -> dict[str, float]:
    """``/metrics`` over HTTP: sample name with labels → value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def user(id: int, name: str) -> dict[str, Any]:
    return {"id": id, "username": name}


def vhost(id: int, domain: str) -> dict[str, Any]:
    return {"id": id, "domain": domain, "unix_user_id": 1, "document_root": "/home/alice/www"}


@pytest.mark.slow
def test_rollout_history_and_metrics_of_a_two_node_rollout(cluster: Cluster) -> None:
    port = free_port()
    first = cluster.add("node1", metrics={"listen": f"127.0.0.1:{port}"}).wait_ready()
    cluster.add("node2").wait_ready()

    put = cluster.ccm(
        "objects", "put", "--wait", "--timeout", "60", "unix-users", "-",
        input=json.dumps([user(1, "alice")]),
    )  # fmt: skip
    revision = int(put.stdout.split("revision ", 1)[1].split()[0])
    assert "applied on every live node" in put.stdout, put.stdout
    assert all(applied >= revision for applied in cluster.applied(["node1", "node2"]).values())

    shown = json.loads(cluster.ccm("rollout", "--revision", str(revision), "--json").stdout)
    assert shown["done"] is True
    assert {n["node"]: n["state"] for n in shown["nodes"]} == {
        "node1": "applied",
        "node2": "applied",
    }

    runs = json.loads(cluster.ccm("history", "--json", "--node", "node1").stdout)
    latest = runs[0]
    assert latest["node"] == "node1" and latest["result"] == "success"
    assert latest["revision"] >= revision
    assert any("account:alice" in run["changed"] for run in runs)
    assert all("content" not in json.dumps(run) for run in runs)  # paths, never contents

    samples = scrape(port)
    assert samples['ccm_runs_total{result="success"}'] >= 2  # catch-up, then alice
    assert samples["ccm_applied_revision"] >= revision
    assert samples["ccm_halted"] == 0
    assert samples["ccm_lock_wait_seconds_count"] >= 2
    assert samples["ccm_debounce_delay_seconds_count"] >= 1
    assert samples["ccm_files_changed_total"] >= 2  # the home and the account
    assert samples['ccm_actions_total{kind="reload"}'] >= 1
    assert samples["ccm_last_success_timestamp_seconds"] > 1.7e9
    assert first.running

    # a bad change stops the rollout: --wait exits 1 and names the halt
    failed = cluster.ccm(
        "objects", "put", "--wait", "--timeout", "60", "virtual-hosts", "-",
        input=json.dumps([vhost(1, f"{BROKEN_MARK}.example.org")]), check=False,
    )  # fmt: skip
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "halted by" in failed.stderr
    assert cluster.halt() is not None
    # node1 failed the run or found the flag set: either way its gauge says halted
    wait_until(lambda: scrape(port)["ccm_halted"] == 1, 20, "node1 to report the halt")


@pytest.mark.slow
def test_rollout_wait_times_out_on_a_node_that_does_not_apply(cluster: Cluster) -> None:
    cluster.add("node1").wait_ready()
    cluster.add("slow", debounce={"quiet": 3600, "max_wait": 3600}).wait_ready()
    revision = cluster.put("unix-users", user(1, "alice"))
    cluster.wait_applied(revision, ["node1"])
    waited = cluster.ccm(
        "rollout", "--wait", "--timeout", "1", "--revision", str(revision), check=False
    )
    assert waited.returncode == 3, waited.stdout + waited.stderr
    assert "not applied yet: slow" in waited.stdout
    states = json.loads(cluster.ccm("rollout", "--json").stdout)["nodes"]
    assert {n["node"]: n["state"] for n in states} == {"node1": "applied", "slow": "behind"}


def test_history_keeps_the_newest_runs_per_node(etcd_client: EtcdClient, store: Any) -> None:
    history = RunHistory(etcd_client, store.prefix, keep=3)
    clock = ManualClock()
    for revision in range(1, 6):
        clock.advance(1)
        record = RunRecord("web1", revision, "s", "f", "success", [f"/etc/{revision}"])
        etcd_client.txn([], history.record_ops(record, clock.wall()))
    other = RunRecord("web2", 9, "s", "f", "failed", error="boom")
    etcd_client.txn([], history.record_ops(other, clock.wall()))
    assert [run.revision for run in history.read("web1")] == [5, 4, 3]
    assert [run.revision for run in history.read(limit=2)] == [9, 5]
    assert history.read("web2")[0].error == "boom"


def test_wait_for_reports_changes_and_times_out_by_the_clock(
    etcd_client: EtcdClient, store: Any
) -> None:
    clock = ManualClock()
    reports: list[Rollout] = []
    etcd_client.put(f"{store.prefix}/alive/web1", b"{}")
    outcome, final = wait_for(
        etcd_client,
        store.prefix,
        5,
        timeout=10,
        clock=clock,
        sleep=clock.advance,
        report=reports.append,
        interval=1,
    )
    assert outcome == "timeout" and final.remaining == ["web1"]
    assert clock.monotonic() == 10
    assert len(reports) == 1 and reports[0].nodes[0].state == "behind"
    assert rollout(etcd_client, store.prefix, 5).summary() == "revision 5: 1 behind"
