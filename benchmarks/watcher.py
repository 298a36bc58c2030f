"""Event watcher benchmark: what an etcd outage and a stalled watch cost, on a real etcd.

The tests (tests/test_watcher.py) assert what the watcher does; these figures are
printed here, because wall-clock and CPU bounds flake on a loaded machine:

* **outage**: CPU used by the whole process while etcd is down for 2 s, and the number
  of re-watch attempts (backing off 0.2, 0.4, 0.8, 1.0 s). Target: < 0.5 s of CPU.
* **stop during backoff**: how long ``stop()`` takes while the watcher sleeps before
  its next attempt (a 30 s backoff). Target: < 0.5 s.
* **stall**: from a write to its report when the first watch never delivers (a probe
  every 0.2 s notices, the re-watch catches up). Target: < 1 s.

    .venv/bin/python benchmarks/watcher.py
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from ccm.cluster.etcd import EtcdClient, Put, Watch  # noqa: E402
from ccm.cluster.watcher import EventWatcher  # noqa: E402
from ccm.errors import ClusterError  # noqa: E402
from ccm.log import configure_logging  # noqa: E402
from ccm.settings import EtcdSettings  # noqa: E402
from ccm.testing.etcd import EtcdServer  # noqa: E402


class Seen:
    def __init__(self) -> None:
        self.revision = 0
        self.changed = threading.Condition()

    def on_types(self, types: set[str], revision: int) -> None:
        with self.changed:
            self.revision = max(self.revision, revision)
            self.changed.notify_all()

    def on_full(self, reason: str) -> None:
        pass

    def wait(self, revision: int, timeout: float = 15) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: self.revision >= revision, timeout):
                raise SystemExit(f"revision {revision} never reported")


def write_event(client: EtcdClient, prefix: str) -> int:
    return client.txn([], [Put(f"{prefix}/events/crons", b"{}")]).revision


def outage() -> None:
    with EtcdServer() as server:
        settings = EtcdSettings(endpoints=(server.endpoint,), prefix="/ccm", timeout=2.0)
        client = EtcdClient.from_settings(settings)
        attempts = 0
        real_watch = client.watch_prefix

        def watch_prefix(prefix: str, start_revision: int | None = None) -> Watch:
            nonlocal attempts
            attempts += 1
            return real_watch(prefix, start_revision)

        client.watch_prefix = watch_prefix  # type: ignore[method-assign]
        seen = Seen()
        watcher = EventWatcher(
            client,
            "/ccm",
            client.current_revision() + 1,
            seen.on_types,
            seen.on_full,
            backoff_initial=0.2,
            backoff_max=1.0,
        )
        watcher.start()
        seen.wait(write_event(client, "/ccm"))
        server.kill()
        cpu, wall = time.process_time(), time.monotonic()
        time.sleep(2.0)
        used, took = time.process_time() - cpu, time.monotonic() - wall
        print(
            f"outage of {took:.1f} s: {used:.3f} s CPU (whole process), "
            f"{attempts - 1} re-watch attempts  (target: < 0.5 s CPU)"
        )
        watcher.stop(timeout=10)
        client.close()


def stop_during_backoff() -> None:
    with socket.socket() as sock:  # a port where no etcd listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = EtcdClient.from_settings(
        EtcdSettings(endpoints=(f"http://127.0.0.1:{port}",), timeout=1.0)
    )
    seen = Seen()
    watcher = EventWatcher(
        client, "/ccm", 1, seen.on_types, seen.on_full, backoff_initial=30.0, backoff_max=30.0
    )
    watcher.start()
    time.sleep(1.0)  # the first attempt failed: the watcher sleeps 30 s
    started = time.monotonic()
    watcher.stop(timeout=10)
    print(
        f"stop() during a 30 s backoff took {time.monotonic() - started:.3f} s  (target: < 0.5 s)"
    )
    client.close()


def stall() -> None:
    with EtcdServer() as server:
        settings = EtcdSettings(endpoints=(server.endpoint,), prefix="/ccm", timeout=2.0)
        client = EtcdClient.from_settings(settings)
        real_watch = client.watch_prefix
        first = True

        def watch_prefix(prefix: str, start_revision: int | None = None) -> Watch:
            nonlocal first
            if first:  # a real, open watch on keys nobody writes: it never delivers
                first = False
                return real_watch(f"{prefix}stalled-nothing-here/", None)
            return real_watch(prefix, start_revision)

        client.watch_prefix = watch_prefix  # type: ignore[method-assign]
        seen = Seen()
        watcher = EventWatcher(
            client,
            "/ccm",
            client.current_revision() + 1,
            seen.on_types,
            seen.on_full,
            probe_interval=0.2,
        )
        watcher.start()
        time.sleep(0.1)
        started = time.monotonic()
        revision = write_event(client, "/ccm")
        seen.wait(revision)
        print(
            f"stalled watch: the write was reported after {time.monotonic() - started:.2f} s "
            "(probe every 0.2 s)  (target: < 1 s)"
        )
        watcher.stop(timeout=10)
        client.close()


def main() -> None:
    configure_logging(level=logging.CRITICAL)
    try:
        outage()
        stop_during_backoff()
        stall()
    except ClusterError as error:
        raise SystemExit(f"etcd error: {error}") from error


if __name__ == "__main__":
    main()
