"""Many small clusters on one etcd: ``--clusters`` key prefixes × 2 ``ccm daemon``s each
(50 × 2 = 100 daemons by default), every one a real process with its own root.

It prints:

* **idle**: each daemon's CPU (% of one core) and RSS over ``--idle`` seconds with no
  writes (median, p99, max), and etcd's CPU and open watches in that time;
* **under load**: a steady ``--rate`` puts per second spread over all prefixes (a cron's
  schedule changed) for ``--load`` seconds: p50 / p99 / max seconds from a put until both
  nodes of its cluster recorded it applied; etcd's CPU meanwhile.

Targets (issue "a new node ready in seconds"): idle CPU ≤ 0.2 % per daemon, p99 put →
applied ≤ quiet + 2 s (quiet is the debounce's, ``--quiet``).

    .venv/bin/python benchmarks/many_clusters.py [--clusters 50] [--idle 60] [--load 60]
        [--rate 5] [--quiet 0.3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from cluster_harness import Cluster, NodeProcess, wait_until  # noqa: E402

from ccm.testing.etcd import EtcdServer  # noqa: E402


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def etcd_watches(server: EtcdServer) -> int:
    """Open watches, from etcd's own metrics."""
    text = urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith("etcd_debugging_mvcc_watcher_total "):
            return int(float(line.split()[1]))
    return -1


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def cron(id: int, schedule: str) -> dict[str, object]:
    return {
        "id": id,
        "unix_user_id": 1,
        "name": f"job{id}",
        "schedule": schedule,
        "command": "php /home/alice/job.php",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=50)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--load", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=5.0, help="puts per second, in all")
    parser.add_argument("--quiet", type=float, default=0.3, help="the debounce's quiet time")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ccm-many-") as tmp, EtcdServer() as server:
        clusters = [
            Cluster(server, Path(tmp) / f"c{i}", prefix=f"/c{i}", quiet=args.quiet, ttl=10)
            for i in range(args.clusters)
        ]
        try:
            started = time.perf_counter()
            for cluster in clusters:
                cluster.put("unix-users", {"id": 1, "username": "alice"})
                cluster.put("crons", cron(1, "0 * * * *"))
            nodes: list[NodeProcess] = []
            for cluster in clusters:
                nodes += cluster.start_nodes(2)
            for node in nodes:
                node.wait_ready(timeout=600)
            print(
                f"{len(nodes)} daemons on {args.clusters} prefixes READY in "
                f"{time.perf_counter() - started:.0f} s ({os.cpu_count()} cores)",
                flush=True,
            )
            time.sleep(5)  # the start-up's last records and lock releases settle

            # -- idle ------------------------------------------------------------------------
            etcd_pid = server.pid
            assert etcd_pid is not None
            before = {node.name + node.cluster.prefix: process_cpu(node.pid) for node in nodes}
            etcd_before = process_cpu(etcd_pid)
            watches = etcd_watches(server)
            time.sleep(args.idle)
            cpu = [
                100 * (process_cpu(node.pid) - before[node.name + node.cluster.prefix]) / args.idle
                for node in nodes
            ]
            rss = [rss_mb(node.pid) for node in nodes]
            etcd_idle = 100 * (process_cpu(etcd_pid) - etcd_before) / args.idle
            print(f"\nidle for {args.idle:.0f} s:")
            print(f"{'':<22}{'median':>10}{'p99':>10}{'max':>10}")
            print(
                f"{'daemon CPU %':<22}{statistics.median(cpu):>10.3f}"
                f"{percentile(cpu, 0.99):>10.3f}{max(cpu):>10.3f}   (target ≤ 0.2)"
            )
            print(
                f"{'daemon RSS MB':<22}{statistics.median(rss):>10.1f}"
                f"{percentile(rss, 0.99):>10.1f}{max(rss):>10.1f}"
            )
            print(f"{'etcd CPU %':<22}{etcd_idle:>10.2f}")
            print(f"{'etcd watches':<22}{watches:>10}   ({len(nodes)} daemons)")

            # -- a steady write load ---------------------------------------------------------
            latencies: list[float] = []
            lock = threading.Lock()
            threads: list[threading.Thread] = []

            def follow(cluster: Cluster, revision: int, put_at: float) -> None:
                wait_until(
                    lambda: all(r >= revision for r in cluster.applied(cluster.nodes).values()),
                    120,
                    f"{cluster.prefix} to apply {revision}",
                    interval=0.02,
                )
                with lock:
                    latencies.append(time.perf_counter() - put_at)

            etcd_before = process_cpu(etcd_pid)
            load_started = time.perf_counter()
            n = 0
            while time.perf_counter() - load_started < args.load:
                cluster = clusters[n % len(clusters)]
                put_at = time.perf_counter()
                revision = cluster.put("crons", cron(1, f"{n % 60} * * * *"))
                thread = threading.Thread(target=follow, args=(cluster, revision, put_at))
                thread.start()
                threads.append(thread)
                n += 1
                time.sleep(max(0.0, load_started + n / args.rate - time.perf_counter()))
            for thread in threads:
                thread.join()
            etcd_load = (
                100 * (process_cpu(etcd_pid) - etcd_before) / (time.perf_counter() - load_started)
            )
            print(f"\n{n} puts at {args.rate:g}/s over {args.load:.0f} s:")
            print(
                f"{'put → applied s':<22}{statistics.median(latencies):>10.2f}"
                f"{percentile(latencies, 0.99):>10.2f}{max(latencies):>10.2f}"
                f"   (p99 target ≤ {args.quiet + 2:.1f})"
            )
            print(f"{'etcd CPU %':<22}{etcd_load:>10.2f}")
        finally:
            for cluster in clusters:
                cluster.close()


if __name__ == "__main__":
    main()
