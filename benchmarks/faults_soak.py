"""Soak ccm under etcd faults and print the figures issue 10 asks for.

Real ``ccm daemon`` processes (3 by default) against a real 3-member etcd (stock raft
timing: heartbeat 100 ms, election 1 s), every endpoint in every setting. Rounds of:

* **leader kill**: a write, a node in the middle of its run, the etcd leader SIGKILLed:
  seconds from the kill until every node applied the write (target <= 5 s);
* **frozen member**: a member SIGSTOPped (leader and followers in turn), a write through
  the CLI at once, the member thawed after the lock's TTL + 1 s: failed writes (target
  0) and seconds from the freeze until every node applied the write (target <= 3 s);
* **writer failover**: while one member is frozen, ``ObjectStore.put`` from fresh
  clients and from long-lived clients: latency (target: within one request timeout);
* **storm**: ``--storm`` writes from 4 writers while daemons restart and the leader is
  killed twice: failed writes, time to converge, equal trees.

And from the daemons' own records: reloads per run, lock hand-off (the gap between one
node's run and the next node's run of the same rollout).

    .venv/bin/python benchmarks/faults_soak.py [--rounds 5] [--storm 1000] [--ttl 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from cluster_harness import Cluster, parse_time  # noqa: E402
from test_faults import (  # noqa: E402
    alice_objects,
    config_tree,
    put_all,
    reload_overlaps,
    reloads,
    run_overlaps,
    storm,
    user,
    vhost,
)

from ccm.cluster.etcd import EtcdClient  # noqa: E402
from ccm.cluster.store import ObjectStore  # noqa: E402
from ccm.testing.etcd import EtcdCluster  # noqa: E402


def figures(name: str, values: list[float], unit: str = "s") -> str:
    if not values:
        return f"{name}: no samples"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return (
        f"{name}: n={len(values)} median {statistics.median(values):.2f} {unit}, "
        f"p90 {p90:.2f}, max {max(values):.2f}"
    )


def all_applied(cluster: Cluster, revision: int, timeout: float = 120.0) -> float:
    """Wait until every node applied ``revision``; the monotonic instant it was seen."""
    cluster.wait_applied(revision, timeout=timeout, interval=0.02)
    return time.monotonic()


def leader_kills(etcd: EtcdCluster, cluster: Cluster, rounds: int) -> list[float]:
    times = []
    for round_ in range(rounds):
        revision = cluster.put(
            "virtual-hosts",
            vhost(2, "shop.example.org", 1, "/home/alice", f"k{round_}.shop.example.org"),
        )
        deadline = time.monotonic() + 20
        while not cluster.lock_queue() and time.monotonic() < deadline:
            time.sleep(0.01)  # a node is in its run (it holds the lock)
        leader = etcd.leader()
        leader.kill()
        killed = time.monotonic()
        times.append(all_applied(cluster, revision) - killed)
        leader.start()
        etcd.wait_healthy()
        time.sleep(1.0)
    return times


def frozen_members(etcd: EtcdCluster, cluster: Cluster, rounds: int) -> tuple[list[float], int]:
    times, failed = [], 0
    for round_ in range(rounds):
        member = etcd.members[round_ % len(etcd.members)]
        member.freeze()
        frozen = time.monotonic()
        try:
            result = cluster.ccm(
                "objects",
                "put",
                "unix-users",
                "-",
                input=f'[{{"id": {20 + round_}, "username": "f{round_}"}}]',
                check=False,
            )
            if result.returncode != 0:
                failed += 1
                print(f"  FAILED WRITE: {result.stdout}{result.stderr}", flush=True)
                continue
            revision = int(result.stdout.rsplit("revision", 1)[1].split()[0])
            times.append(all_applied(cluster, revision) - frozen)
            time.sleep(max(0.0, frozen + cluster.ttl + 1 - time.monotonic()))
        finally:
            member.thaw()
        etcd.wait_healthy()
        time.sleep(0.5)
    return times, failed


def writer_failover(etcd: EtcdCluster, cluster: Cluster, rounds: int) -> tuple[list[float], int]:
    settings = cluster.etcd_settings()
    latencies: list[float] = []
    failed = 0
    lock = threading.Lock()
    for round_ in range(rounds):
        clients = [EtcdClient.from_settings(settings) for _ in range(6)]
        for client in clients:
            client.current_revision()  # connected, to one member or another
        member = etcd.members[round_ % len(etcd.members)]
        member.freeze()

        def put(client: EtcdClient, index: int) -> None:
            nonlocal failed
            started = time.monotonic()
            try:
                ObjectStore(client, cluster.prefix, writer="soak").put(
                    "unix-users", [user(50 + index, f"wf{index}")]
                )
            except Exception as error:
                with lock:
                    failed += 1
                print(f"  FAILED WRITE: {error}", flush=True)
                return
            with lock:
                latencies.append(time.monotonic() - started)

        try:
            threads = [
                threading.Thread(target=put, args=(client, i)) for i, client in enumerate(clients)
            ]
            fresh = [EtcdClient.from_settings(settings) for _ in range(6)]
            threads += [
                threading.Thread(target=put, args=(client, 10 + i))
                for i, client in enumerate(fresh)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            member.thaw()
            for client in clients + fresh:
                client.close()
        etcd.wait_healthy()
    return latencies, failed


def hand_offs(cluster: Cluster) -> list[float]:
    runs = sorted(
        (
            (parse_time(r.started), parse_time(r.finished), n)
            for n, rs in cluster.run_history().items()
            for r in rs
        ),
    )
    gaps = []
    for (_, end_a, node_a), (start_b, _, node_b) in zip(runs, runs[1:], strict=False):
        gap = (start_b - end_a).total_seconds()
        if node_a != node_b and 0 <= gap < 2.0:  # the next node of the same rollout
            gaps.append(gap * 1000)
    return gaps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--storm", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--ttl", type=int, default=5, help="lock lease TTL (issue: 5)")
    parser.add_argument("--timeout", type=float, default=5.0, help="etcd request timeout")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ccm-faults-soak-") as scratch, EtcdCluster(3) as etcd:
        cluster = Cluster(
            etcd[0],
            Path(scratch) / "cluster",
            ttl=args.ttl,
            etcd_extra={"endpoints": etcd.endpoints, "timeout": args.timeout},
        )
        try:
            print(
                f"{args.nodes} daemons, 3-member etcd, quiet {cluster.quiet} s, lock TTL "
                f"{args.ttl} s, request timeout {args.timeout} s",
                flush=True,
            )
            nodes = cluster.start_nodes(args.nodes)
            put_all(cluster, alice_objects())
            all_applied(cluster, cluster.latest_event_revision())

            kills = leader_kills(etcd, cluster, args.rounds)
            print(figures("leader killed -> converged", kills) + "   (target <= 5 s)", flush=True)
            frozen, frozen_failed = frozen_members(etcd, cluster, args.rounds)
            print(
                figures("member frozen -> converged", frozen)
                + f", failed writes {frozen_failed}   (target 0 and <= 3 s)",
                flush=True,
            )
            latencies, writer_failed = writer_failover(etcd, cluster, args.rounds)
            print(
                figures("writer put latency, one member frozen", latencies)
                + f", failed {writer_failed}   (target <= {args.timeout:g} s, 0)",
                flush=True,
            )

            killed: list[Any] = []

            def kill_leader() -> None:
                leader = etcd.leader()
                leader.kill()
                killed.append(leader)

            def restart_member() -> None:
                killed.pop().start()

            def restart(node_index: int) -> Callable[[], None]:
                node = nodes[node_index % len(nodes)]

                def again() -> None:
                    node.kill()
                    node.start()

                return again

            failures, took, unavailable = storm(
                cluster,
                writes=args.storm,
                writers=4,
                faults=[
                    (2.0, kill_leader),
                    (4.0, restart(0)),
                    (6.0, restart_member),
                    (9.0, kill_leader),
                    (11.0, restart(1)),
                    (13.0, restart_member),
                ],
                pause=0.06,
            )
            etcd.wait_healthy()
            stormed = time.monotonic()
            final = cluster.latest_event_revision()
            converge = all_applied(cluster, final) - stormed
            reference = cluster.add("reference")
            reference.wait_ready()
            cluster.wait_applied(final, ["reference"], timeout=120)
            expected = config_tree(reference)
            differences = {
                node.name: sorted(
                    path
                    for path in set(expected) | set(config_tree(node))
                    if expected.get(path) != config_tree(node).get(path)
                )
                for node in nodes
            }
            equal = not any(differences.values())
            print(
                f"storm: {args.storm} writes from 4 writers in {took:.1f} s with 2 leader kills "
                f"and 2 daemon restarts: failed writes {len(failures)} (sent again after etcd "
                f"could not serve them within the timeout: {unavailable}), converged "
                f"{converge:.2f} s after the last write, trees equal to a clean node: {equal}",
                flush=True,
            )
            for failure in failures[:5]:
                print(f"  {failure}")
            for name, paths in differences.items():
                if paths:
                    print(f"  {name} differs from the clean node at: {paths[:10]}")

            history = cluster.run_history()
            runs = sum(len(rs) for name, rs in history.items() if name != "reference")
            reload_count = sum(len(reloads(n)) for n in nodes)
            print(
                f"runs {runs}, reloads {reload_count}: {reload_count / max(runs, 1):.2f} "
                "reloads per run",
                flush=True,
            )
            print(figures("lock hand-off", hand_offs(cluster), "ms"), flush=True)
            overlaps = run_overlaps(cluster) + reload_overlaps(nodes)
            print(f"overlapping runs or reloads: {len(overlaps)}", flush=True)
            for line in overlaps[:5]:
                print(f"  {line}")
            print(f"halt: {cluster.halt()}")
        finally:
            cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
