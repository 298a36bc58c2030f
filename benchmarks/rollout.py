"""Rollout benchmark: N real ``ccm daemon`` processes, one real etcd, real ``ccm objects put``.

Starts a local etcd and N daemons (default 5; ``quiet`` 0.5 s) through
``tests/cluster_harness.py``, then makes several rollouts, each one ``ccm objects put``
of a changed vhost (so every node writes a file, checks it and reloads nginx — harmless
real commands under a temporary root). For each rollout it measures:

* **rollout time**: from the moment the write is committed (the instant a watch of
  ``{prefix}/events/virtual-hosts`` in this process sees it: about a millisecond after
  the commit, well before the CLI process has exited) until every node's
  ``nodes/<node>`` record says it applied the write (etcd polled every 10 ms); the
  CLI's own wall time (start-up included) is printed apart;
* **one node's apply time**: ``last_run.finished - last_run.started`` from the records,
  and the lock hold (``cluster lock acquired`` → ``cluster lock released`` in the
  daemon's log) — the part of a rollout that is serialised;
* **lock hand-off**: from one node's last step before it releases the lock (its ``run
  succeeded`` log line, written just before the release) to the next node's ``cluster
  lock acquired`` line: the revoke, etcd's delete notification to the one waiter behind,
  its check of the queue. All daemons run on this machine, so their log clocks agree.

Targets (2 cores): median hand-off ≤ 20 ms; rollout ≤ quiet + N × one node's apply
time + 1 s.

    .venv/bin/python benchmarks/rollout.py [--nodes 5] [--rollouts 6] [--quiet 0.5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from cluster_harness import Cluster, parse_time  # noqa: E402

from ccm.testing.etcd import EtcdServer  # noqa: E402


@dataclass
class LockSession:
    """One node's hold of the cluster lock, from its log."""

    node: str
    acquired: datetime
    succeeded: datetime | None = None  # the last step before the release (a success)
    released: datetime | None = None


def sessions(cluster: Cluster) -> list[LockSession]:
    found = []
    for node in cluster.nodes.values():
        current: LockSession | None = None
        for event in node.log_events():
            what = event.get("event")
            at = parse_time(event["timestamp"]) if "timestamp" in event else None
            if at is None:
                continue
            if what == "cluster lock acquired":
                current = LockSession(node.name, at)
                found.append(current)
            elif current is not None and what == "run succeeded":
                current.succeeded = at
            elif current is not None and what == "cluster lock released":
                current.released = at
                current = None
    return sorted(found, key=lambda session: session.acquired)


def vhost(alias: str) -> dict[str, object]:
    return {
        "id": 1,
        "domain": "bench.example.org",
        "server_aliases": [alias],
        "unix_user_id": 1,
        "document_root": "/home/bench/www",
    }


class CommitClock:
    """Watches one key from a thread and notes when each new revision of it arrives."""

    def __init__(self, cluster: Cluster, key: str) -> None:
        self.seen: dict[int, float] = {}  # mod revision → time.monotonic() on arrival
        self._stop = threading.Event()
        self._watch = cluster.client.watch_prefix(key, cluster.client.current_revision() + 1)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._watch.get(timeout=0.2)
            now = time.monotonic()
            if batch is not None:
                for event in batch.events:
                    self.seen.setdefault(event.mod_revision, now)

    def at(self, revision: int, timeout: float = 5.0) -> float:
        deadline = time.monotonic() + timeout
        while revision not in self.seen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the watch never saw revision {revision}")
            time.sleep(0.005)
        return self.seen[revision]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self._watch.cancel()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--rollouts", type=int, default=6)
    parser.add_argument("--quiet", type=float, default=0.5)
    args = parser.parse_args()

    with EtcdServer() as server, tempfile.TemporaryDirectory(prefix="ccm-rollout-") as base:
        cluster = Cluster(server, Path(base), quiet=args.quiet, max_wait=10 * args.quiet, ttl=10)
        try:
            return run(cluster, args.nodes, args.rollouts, args.quiet)
        except BaseException:
            print(cluster.report(), file=sys.stderr)
            raise
        finally:
            cluster.close()


def run(cluster: Cluster, nodes: int, rollouts: int, quiet: float) -> int:
    started = time.monotonic()
    cluster.start_nodes(nodes)
    print(f"{nodes} daemons READY in {time.monotonic() - started:.1f} s")
    cluster.put("unix-users", {"id": 1, "username": "bench"})
    cluster.wait_applied(cluster.put("virtual-hosts", vhost("warm-up.example.org")))
    time.sleep(2 * quiet)  # nothing pending anywhere before the first measurement

    commits = CommitClock(cluster, f"{cluster.prefix}/events/virtual-hosts")
    rollout_times: list[float] = []
    cli_times: list[float] = []
    apply_times: list[float] = []
    windows: list[tuple[datetime, datetime]] = []
    for number in range(1, rollouts + 1):
        before_cli = time.monotonic()
        window_start = datetime.now().astimezone()
        revision = cluster.put_cli("virtual-hosts", vhost(f"r{number}.example.org"))
        cli_times.append(time.monotonic() - before_cli)
        records = cluster.wait_applied(revision, timeout=60, interval=0.01)
        rollout_times.append(time.monotonic() - commits.at(revision))
        for record in records.values():
            last = record.last_run
            if last is not None and last.result == "success":
                apply_times.append(
                    (parse_time(last.finished) - parse_time(last.started)).total_seconds()
                )
        time.sleep(2 * quiet)  # let every daemon settle: the next rollout starts clean
        windows.append((window_start, datetime.now().astimezone()))
        print(
            f"rollout {number}: revision {revision}, all {nodes} nodes applied "
            f"{rollout_times[-1]:.3f} s after the commit (the CLI took "
            f"{cli_times[-1]:.2f} s)"
        )

    commits.close()
    handoffs: list[float] = []
    holds: list[float] = []
    runs_per_rollout: list[int] = []
    every = sessions(cluster)
    for start, end in windows:
        inside = [s for s in every if start <= s.acquired < end]
        runs_per_rollout.append(len(inside))
        for first, second in zip(inside, inside[1:], strict=False):
            if first.succeeded is not None:
                handoffs.append((second.acquired - first.succeeded).total_seconds())
        holds.extend(
            (s.released - s.acquired).total_seconds() for s in inside if s.released is not None
        )

    apply_median = statistics.median(apply_times)
    hold_median = statistics.median(holds)
    handoff_median = statistics.median(handoffs)
    rollout_median = statistics.median(rollout_times)
    budget = quiet + nodes * hold_median + 1.0
    print()
    print(f"nodes {nodes}, rollouts {rollouts}, quiet {quiet} s")
    print(f"lock runs per rollout: {runs_per_rollout} (one per node expected)")
    print(f"one node's apply (last_run):  median {ms(apply_median)}, max {ms(max(apply_times))}")
    print(f"one node's lock hold:         median {ms(hold_median)}, max {ms(max(holds))}")
    print(
        f"lock hand-off:                median {ms(handoff_median)}, "
        f"min {ms(min(handoffs))}, max {ms(max(handoffs))} ({len(handoffs)} hand-offs)"
        f"  [target <= 20 ms: {'met' if handoff_median <= 0.020 else 'MISSED'}]"
    )
    print(
        f"put -> all {nodes} applied:      median {rollout_median:.3f} s, "
        f"max {max(rollout_times):.3f} s"
        f"  [target <= quiet + {nodes} x hold + 1 s = {budget:.3f} s: "
        f"{'met' if rollout_median <= budget else 'MISSED'}]"
    )
    print(f"ccm objects put (the CLI process): median {statistics.median(cli_times):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
