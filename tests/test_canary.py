"""Canary and soak (issue 10, part 5).

The decisions are pure (a record, a node, a change set, a time): tested exactly. Then
three real daemons: one canary applies, the others wait for the soak and follow; a
canary whose probe turns unhealthy during the soak halts the rest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import Cluster, parse_time, wait_until

from ccm.cluster.canary import Soak, after_canary, decide
from ccm.testing.etcd import EtcdServer

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_the_first_nodes_of_a_change_set_are_its_canaries() -> None:
    assert decide(None, "web1", 10, canaries=2, now=NOW) == "canary"
    first = after_canary(None, "web1", 10, 2, 30, NOW)
    assert first == Soak(10, ["web1"], None)  # one more canary to come
    assert decide(first, "web2", 10, canaries=2, now=NOW) == "canary"
    both = after_canary(first, "web2", 10, 2, 30, NOW)
    assert both == Soak(10, ["web1", "web2"], "2026-11-30T12:00:30.000Z")


def test_the_others_wait_for_the_soak_then_apply() -> None:
    soak = Soak(10, ["web1"], (NOW + timedelta(seconds=30)).isoformat())
    assert decide(soak, "web2", 10, canaries=1, now=NOW) == "wait"
    assert soak.seconds_left(NOW) == 30
    assert decide(soak, "web2", 10, canaries=1, now=NOW + timedelta(seconds=29)) == "wait"
    assert decide(soak, "web2", 10, canaries=1, now=NOW + timedelta(seconds=30)) == "apply"
    assert decide(soak, "web1", 10, canaries=1, now=NOW) == "apply"  # a canary goes on


def test_a_newer_change_set_has_canaries_of_its_own() -> None:
    soak = Soak(10, ["web1"], (NOW + timedelta(seconds=30)).isoformat())
    assert decide(soak, "web2", 11, canaries=1, now=NOW) == "canary"
    assert after_canary(soak, "web2", 11, 1, 5, NOW).canaries == ["web2"]


def test_without_canaries_every_node_applies() -> None:
    assert decide(Soak(10, ["web1"], None), "web2", 10, canaries=0, now=NOW) == "apply"


def test_canaries_still_applying_keep_the_others_waiting() -> None:
    assert decide(Soak(10, ["web1"], None), "web3", 10, canaries=1, now=NOW) == "wait"


# -- three daemons ---------------------------------------------------------------------------


@pytest.fixture
def cluster(private_etcd_server: EtcdServer, tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(
        private_etcd_server, tmp_path / "cluster"
    ) as harness:  # stopped, and its logs printed, whatever happens
        yield harness


def health_probe(root: Path) -> dict[str, list[str]]:
    """Probes that fail once ROOT/unhealthy exists (a service that fell over)."""
    probe = ["sh", "-c", f'test ! -e "{root}/unhealthy" || {{ echo "nginx: down"; exit 1; }}']
    return {"nginx_probe": probe, "php_fpm_probe": probe}


def start(cluster: Cluster, soak: float) -> None:
    for name in ("node1", "node2", "node3"):
        root = cluster.base / "roots" / name  # where the harness seeds the node's root
        probes = health_probe(root)
        cluster.add(name, rollout={"canary": 1, "soak": soak}, probes=probes).wait_ready()


def runs_of(cluster: Cluster, revision: int) -> dict[str, datetime]:
    """When each node finished its first run at ``revision`` or later."""
    history = json.loads(cluster.ccm("history", "--json", "--limit", "100").stdout)
    finished: dict[str, datetime] = {}
    for run in reversed(history):  # oldest first
        if run["revision"] >= revision and run["result"] == "success":
            finished.setdefault(run["node"], parse_time(run["finished"]))
    return finished


def vhost(domain: str) -> dict[str, Any]:
    return {"id": 1, "domain": domain, "unix_user_id": 1, "document_root": "/home/alice/www"}


@pytest.mark.slow
def test_one_canary_applies_the_others_follow_after_the_soak(cluster: Cluster) -> None:
    soak = 3.0
    start(cluster, soak)
    revision = cluster.put("unix-users", {"id": 1, "username": "alice"})
    cluster.wait_applied(revision, timeout=30)
    finished = runs_of(cluster, revision)
    canary = min(finished, key=finished.__getitem__)
    others = [name for name in finished if name != canary]
    assert len(others) == 2
    for name in others:  # nobody followed before the soak was over
        assert (finished[name] - finished[canary]).total_seconds() >= soak, finished
    shown = json.loads(cluster.ccm("rollout", "--json").stdout)
    assert shown["soak"]["canaries"] == [canary]


@pytest.mark.slow
def test_a_canary_that_turns_unhealthy_during_the_soak_halts_the_rest(cluster: Cluster) -> None:
    start(cluster, soak=60)
    before = cluster.put("unix-users", {"id": 1, "username": "alice"})
    soaking = wait_until(lambda: _soak(cluster), 30, "a canary to start the soak")
    canary = soaking["canaries"][0]
    (cluster[canary].root / "unhealthy").touch()
    halt = wait_until(cluster.halt, 20, "the canary to halt the rollout")
    assert halt["node"] == canary and "nginx: down" in halt["error"]
    applied = cluster.applied(["node1", "node2", "node3"])
    followers = [name for name in applied if name != canary]
    assert all(applied[name] < before for name in followers), applied
    progress = cluster.ccm("rollout", check=False).stdout
    assert f"soak: canaries {canary}" in progress and "HALTED" in progress


def _soak(cluster: Cluster) -> dict[str, Any] | None:
    soak: dict[str, Any] | None = json.loads(cluster.ccm("rollout", "--json").stdout)["soak"]
    return soak if soak and soak["seconds_left"] is not None else None
