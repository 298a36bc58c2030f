"""The cluster lock against a real etcd: mutual exclusion, FIFO order, leases, fencing.

Contenders run on threads, each with its own ``EtcdClient`` (as separate nodes would).
Nothing sleeps and hopes: tests wait on events, or poll a condition until a deadline.
Every thread is cancelled and joined, and every hold released, even when a test fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ccm.cluster.clock import Clock, ManualClock
from ccm.cluster.etcd import EtcdClient, Put, Watch, WatchBatch, WatchDisconnected
from ccm.cluster.lock import (
    ClusterLock,
    LockCancelled,
    LockHold,
    LockTimeout,
    lock_key_prefix,
    lock_queue,
)
from ccm.cluster.status import cluster_status
from ccm.errors import ClusterError, LockLost
from ccm.settings import EtcdSettings
from ccm.testing.etcd import EtcdServer

REPO = Path(__file__).resolve().parent.parent


#: What a hold says when its lease expired without a refresh (the operator reads it).
EXPIRED = "was lost: the lease expired: no refresh succeeded within its TTL$"


def wait_for(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.005)


class Contender:
    """One node's ``acquire`` on a thread of its own; ``on_acquired`` runs while holding."""

    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        node: str,
        *,
        ttl: int = 10,
        timeout: float | None = None,
        clock: Clock | None = None,
        on_acquired: Callable[[Contender, LockHold], None] | None = None,
    ) -> None:
        self.client = client
        self.node = node
        self.lock = ClusterLock(client, prefix, node, ttl, clock)
        self.timeout = timeout
        self.on_acquired = on_acquired
        self.cancel = threading.Event()
        self.done = threading.Event()
        self.hold: LockHold | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"contender-{node}", daemon=True)

    def _run(self) -> None:
        try:
            hold = self.lock.acquire(timeout=self.timeout, cancel=self.cancel)
            self.hold = hold
            if self.on_acquired is not None:
                self.on_acquired(self, hold)
        except BaseException as error:  # reported by result()
            self.error = error
        finally:
            self.done.set()

    def finish(self, timeout: float = 10.0) -> None:
        assert self.done.wait(timeout), f"{self.node} did not finish in {timeout} s"
        if self.error is not None:
            raise self.error

    def result(self, timeout: float = 10.0) -> LockHold:
        self.finish(timeout)
        assert self.hold is not None
        return self.hold


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    """After each test (and its fixtures' teardown), none of our threads is left."""
    yield
    deadline = time.monotonic() + 5
    while left := [
        t.name for t in threading.enumerate() if t.name.startswith("ccm-lock-keepalive")
    ]:
        assert time.monotonic() < deadline, f"threads left running: {left}"
        time.sleep(0.01)


@pytest.fixture
def clients(etcd_settings: EtcdSettings) -> Iterator[Callable[[], EtcdClient]]:
    """A factory of clients (one per simulated node), all closed at the end."""
    made: list[EtcdClient] = []

    def make() -> EtcdClient:
        client = EtcdClient.from_settings(etcd_settings)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def spawn(
    clients: Callable[[], EtcdClient], etcd_settings: EtcdSettings
) -> Iterator[Callable[..., Contender]]:
    """Start a Contender with a client of its own; all are cancelled and joined at the end."""
    started: list[Contender] = []

    def start(node: str, client: EtcdClient | None = None, **options: Any) -> Contender:
        contender = Contender(client or clients(), etcd_settings.prefix, node, **options)
        started.append(contender)
        contender.thread.start()
        return contender

    yield start
    for contender in started:
        contender.cancel.set()
    for contender in started:
        contender.thread.join(10)
        assert not contender.thread.is_alive(), f"{contender.node} did not stop"
        if contender.hold is not None:
            contender.hold.release()


@pytest.fixture
def holds() -> Iterator[list[LockHold]]:
    """Holds taken on the test's own thread: released at the end whatever happens."""
    taken: list[LockHold] = []
    yield taken
    for hold in taken:
        hold.release()


class BrokenWatch:
    """A watch whose stream breaks at once (as when etcd drops it), every time."""

    def __init__(self, key: str) -> None:
        self.prefix = key
        self.done = False

    def get(self, timeout: float | None = None) -> WatchBatch | None:
        self.done = True
        raise WatchDisconnected(f"watch {self.prefix}: stream to etcd broke (test)")

    def cancel(self) -> None:
        self.done = True

    def __enter__(self) -> BrokenWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()


class Spy:
    """Records what one client's lock code asks of etcd: the keys it watches, its txns.
    With ``broken``, every watch it opens breaks at once."""

    def __init__(
        self, client: EtcdClient, monkeypatch: pytest.MonkeyPatch, *, broken: bool = False
    ) -> None:
        self.watched: list[str] = []
        self.txns = 0
        real_watch, real_txn = client.watch_prefix, client.txn

        def watch_prefix(key: str, start_revision: int | None = None) -> Watch | BrokenWatch:
            self.watched.append(key)
            return BrokenWatch(key) if broken else real_watch(key, start_revision)

        def txn(*args: Any, **kwargs: Any) -> Any:
            self.txns += 1
            return real_txn(*args, **kwargs)

        monkeypatch.setattr(client, "watch_prefix", watch_prefix)
        monkeypatch.setattr(client, "txn", txn)


def queue_nodes(client: EtcdClient, prefix: str) -> list[str]:
    return [entry.node for entry in lock_queue(client, prefix)]


def wait_queue_length(client: EtcdClient, prefix: str, length: int) -> None:
    wait_for(
        lambda: len(lock_queue(client, prefix)) == length,
        what=f"{length} entries in the lock queue",
    )


# -- mutual exclusion and order ------------------------------------------------------------


def test_one_holder_at_a_time_across_threads(
    spawn: Callable[..., Contender], etcd_settings: EtcdSettings
) -> None:
    intervals: list[tuple[float, float, str]] = []
    inside = 0
    most_inside = 0
    guard = threading.Lock()
    rounds = 5

    def work(node: str) -> Callable[[Contender, LockHold], None]:
        def on_acquired(contender: Contender, hold: LockHold) -> None:
            nonlocal inside, most_inside
            for round_ in range(rounds):
                if round_:
                    hold = contender.lock.acquire(timeout=20)
                with hold:
                    start = time.monotonic()
                    with guard:
                        inside += 1
                        most_inside = max(most_inside, inside)
                    hold.check()
                    assert contender.client.txn([hold.fence()], []).succeeded
                    with guard:
                        inside -= 1
                    end = time.monotonic()
                    intervals.append((start, end, node))

        return on_acquired

    contenders = [spawn(f"node{i}", timeout=20, on_acquired=work(f"node{i}")) for i in range(4)]
    for contender in contenders:
        contender.finish(30)
    assert most_inside == 1
    assert len(intervals) == 4 * rounds
    ordered = sorted(intervals)
    for (_, end, first), (start, _, second) in zip(ordered, ordered[1:], strict=False):
        assert end <= start, f"{first} and {second} held the lock at the same time"


def test_waiters_acquire_in_the_order_they_queued(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    spawn: Callable[..., Contender],
    holds: list[LockHold],
) -> None:
    prefix = etcd_settings.prefix
    order: list[str] = []

    def record(contender: Contender, hold: LockHold) -> None:
        order.append(contender.node)
        hold.release()

    for round_ in range(3):
        order.clear()
        first = ClusterLock(etcd_client, prefix, f"first{round_}", 10).acquire(timeout=5)
        holds.append(first)
        names = [f"r{round_}-w{i}" for i in range(5)]
        contenders = []
        for position, name in enumerate(names):
            contenders.append(spawn(name, timeout=20, on_acquired=record))
            wait_queue_length(etcd_client, prefix, position + 2)
        assert queue_nodes(etcd_client, prefix) == [f"first{round_}", *names]
        first.release()
        for contender in contenders:
            contender.finish()
        assert order == names
        assert lock_queue(etcd_client, prefix) == []


def test_lock_queue_lists_the_holder_then_the_waiters(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    spawn: Callable[..., Contender],
    holds: list[LockHold],
) -> None:
    prefix = etcd_settings.prefix
    clock = ManualClock(wall=datetime.fromisoformat("2024-05-01T12:00:00+00:00"))
    holder = ClusterLock(etcd_client, prefix, "web01", 10, clock).acquire()
    holds.append(holder)
    spawn("web02")
    wait_queue_length(etcd_client, prefix, 2)
    spawn("web03")
    wait_queue_length(etcd_client, prefix, 3)

    queue = lock_queue(etcd_client, prefix)
    assert [entry.node for entry in queue] == ["web01", "web02", "web03"]
    assert [entry.create_revision for entry in queue] == sorted(e.create_revision for e in queue)
    assert queue[0].key == holder.key == f"{lock_key_prefix(prefix)}{holder.lease_id:016x}"
    assert queue[0].create_revision == holder.create_revision
    assert queue[0].lease_id == holder.lease_id
    assert queue[0].since == clock.wall() == holder.since
    assert holder.node == "web01"
    assert all(entry.since is not None for entry in queue)
    stored = etcd_client.get(holder.key)
    assert stored is not None
    assert json.loads(stored.value) == {"node": "web01", "since": "2024-05-01T12:00:00.000Z"}


def test_a_stranger_key_in_the_queue_is_listed_not_fatal(
    etcd_client: EtcdClient, etcd_settings: EtcdSettings
) -> None:
    directory = lock_key_prefix(etcd_settings.prefix)
    etcd_client.put(f"{directory}0000000000000001", b"not json")
    etcd_client.put(f"{directory}0000000000000002", b'{"since": "2024-05-01T12:00:00Z"}')
    etcd_client.put(f"{directory}0000000000000003", b'{"node": "web09"}')
    etcd_client.put(f"{directory}0000000000000004", b'["web10"]')
    queue = lock_queue(etcd_client, etcd_settings.prefix)
    assert [(entry.node, entry.since) for entry in queue] == [
        ("?", None),
        ("?", datetime.fromisoformat("2024-05-01T12:00:00+00:00")),
        ("web09", None),
        ("?", None),
    ]


# -- release, leases, loss ------------------------------------------------------------------


def test_release_deletes_the_key_and_revokes_the_lease(
    etcd_client: EtcdClient, etcd_settings: EtcdSettings
) -> None:
    lock = ClusterLock(etcd_client, etcd_settings.prefix, "web01", 10)
    leases = []
    for _ in range(5):
        with lock.acquire(timeout=5) as hold:
            stored = etcd_client.get(hold.key)
            assert stored is not None and stored.lease == hold.lease_id
            assert stored.create_revision == hold.create_revision
            assert etcd_client.lease_ttl(hold.lease_id) > 0
            hold.check()
            leases.append(hold.lease_id)
        assert etcd_client.get(hold.key) is None
        assert etcd_client.lease_ttl(hold.lease_id) == -1
        assert hold.released and not hold.lost.is_set()
        hold.release()  # idempotent
        with pytest.raises(LockLost, match="released"):
            hold.check()
    assert [etcd_client.lease_ttl(lease) for lease in leases] == [-1] * 5  # none leaked
    assert lock_queue(etcd_client, etcd_settings.prefix) == []


def test_the_keep_alive_holds_the_lease_beyond_its_ttl(
    etcd_client: EtcdClient, etcd_settings: EtcdSettings, holds: list[LockHold]
) -> None:
    hold = ClusterLock(etcd_client, etcd_settings.prefix, "web01", 2).acquire()
    holds.append(hold)
    until = time.monotonic() + 3.0  # 1.5 TTLs: the lease would be gone without refreshes
    while time.monotonic() < until:
        hold.check()
        assert etcd_client.get(hold.key) is not None
        time.sleep(0.1)
    assert etcd_client.lease_ttl(hold.lease_id) > 0


def test_a_revoked_lease_hands_the_lock_on_and_the_old_hold_is_lost(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    spawn: Callable[..., Contender],
    holds: list[LockHold],
) -> None:
    prefix = etcd_settings.prefix
    old = ClusterLock(etcd_client, prefix, "web01", 2).acquire()
    holds.append(old)
    waiter = spawn("web02")
    wait_queue_length(etcd_client, prefix, 2)

    etcd_client.revoke_lease(old.lease_id)  # as if its node vanished and the lease expired
    new = waiter.result(timeout=2)  # within the TTL
    assert old.lost.wait(timeout=3), "the keep-alive did not notice the lost lease"
    with pytest.raises(LockLost, match="lost: etcd says the lease is gone"):
        old.check()
    new.check()
    # The old holder's fenced writes fail; the new holder's succeed.
    assert not etcd_client.txn([old.fence()], [Put(f"{prefix}/x", b"old")]).succeeded
    assert etcd_client.txn([new.fence()], [Put(f"{prefix}/x", b"new")]).succeeded
    old.release()  # harmless
    assert etcd_client.get(new.key) is not None


_DOOMED = """
import sys
from ccm.cluster.etcd import EtcdClient
from ccm.cluster.lock import ClusterLock
from ccm.settings import EtcdSettings
client = EtcdClient(EtcdSettings(endpoints=(sys.argv[1],), timeout=5))
hold = ClusterLock(client, sys.argv[2], "doomed", 2).acquire(timeout=10)
print("HELD", hold.create_revision, flush=True)
sys.stdin.read()
"""


def test_a_holder_whose_process_dies_loses_the_lock_within_its_ttl(
    etcd_client: EtcdClient, etcd_settings: EtcdSettings, spawn: Callable[..., Contender]
) -> None:
    prefix = etcd_settings.prefix
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    doomed = subprocess.Popen(
        [sys.executable, "-c", _DOOMED, etcd_settings.endpoints[0], prefix],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=REPO,
    )
    try:
        assert doomed.stdout is not None
        for line in doomed.stdout:  # structlog lines may come first
            if line.startswith(b"HELD"):
                break
        else:
            pytest.fail("the doomed process never held the lock")
        waiter = spawn("web02")
        wait_queue_length(etcd_client, prefix, 2)
        assert queue_nodes(etcd_client, prefix) == ["doomed", "web02"]
        assert not waiter.done.is_set()
        doomed.kill()  # SIGKILL: no release, no revoke; only the TTL frees the lock
        doomed.wait()
        hold = waiter.result(timeout=10)  # how soon: benchmarks/lock.py
        assert queue_nodes(etcd_client, prefix) == ["web02"]
        hold.check()
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait()
        if doomed.stdout is not None:
            doomed.stdout.close()
        if doomed.stdin is not None:
            doomed.stdin.close()


def test_a_hold_whose_keep_alive_stopped_is_lost_once_its_lease_expires(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    spawn: Callable[..., Contender],
    holds: list[LockHold],
) -> None:
    prefix = etcd_settings.prefix
    old = ClusterLock(etcd_client, prefix, "web01", 2).acquire()
    holds.append(old)
    waiter = spawn("web02")
    wait_queue_length(etcd_client, prefix, 2)
    old._keepalive.stop()  # a hung node: nothing refreshes its lease
    new = waiter.result(timeout=4)
    with pytest.raises(LockLost, match=EXPIRED):
        old.check()
    assert old.lost.is_set()
    new.check()


def test_refreshes_failing_past_the_expiry_mark_the_hold_lost(
    private_etcd_server: EtcdServer,
) -> None:
    server = private_etcd_server
    settings = EtcdSettings(endpoints=(server.endpoint,), prefix="/ccm", timeout=2.0)
    clock = ManualClock()
    with EtcdClient.from_settings(settings) as client:
        hold = ClusterLock(client, settings.prefix, "web01", 2, clock).acquire()
        try:
            hold.check()
            server.kill()
            hold.check()  # etcd being down is not yet losing the lock...
            clock.advance(2.5)  # ...but no refresh can succeed past the lease's expiry
            assert hold.lost.wait(timeout=3), "the keep-alive did not give the lease up"
            with pytest.raises(LockLost, match=EXPIRED):
                hold.check()
            hold.release()  # etcd is down: logged, not raised
            assert hold.released
        finally:
            hold.release()


# -- fencing --------------------------------------------------------------------------------


def test_fence_fails_once_the_lock_changed_hands(
    etcd_client: EtcdClient, etcd_settings: EtcdSettings, holds: list[LockHold]
) -> None:
    prefix = etcd_settings.prefix
    record = f"{prefix}/nodes/web01"
    first = ClusterLock(etcd_client, prefix, "web01", 10).acquire()
    holds.append(first)
    assert etcd_client.txn([first.fence()], [Put(record, b"1")]).succeeded
    first.release()
    second = ClusterLock(etcd_client, prefix, "web02", 10).acquire(timeout=5)
    holds.append(second)
    assert not etcd_client.txn([first.fence()], [Put(record, b"2")]).succeeded
    stored = etcd_client.get(record)
    assert stored is not None and stored.value == b"1"

    # release_ops: the halt record and the release in one txn.
    halt = f"{prefix}/halt"
    result = etcd_client.txn([second.fence()], [Put(halt, b"{}"), *second.release_ops()])
    assert result.succeeded
    assert etcd_client.get(second.key) is None
    third = ClusterLock(etcd_client, prefix, "web03", 10).acquire(timeout=0)  # free at once
    holds.append(third)
    second.release()  # still revokes the lease
    assert etcd_client.lease_ttl(second.lease_id) == -1
    third.check()


# -- giving up --------------------------------------------------------------------------------


def test_a_timeout_removes_the_waiters_key_and_lease(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    spawn: Callable[..., Contender],
    holds: list[LockHold],
) -> None:
    prefix = etcd_settings.prefix
    holder = ClusterLock(etcd_client, prefix, "web01", 10).acquire()
    holds.append(holder)
    clock = ManualClock()
    waiter = spawn("web02", timeout=30, clock=clock)
    wait_queue_length(etcd_client, prefix, 2)
    lease = lock_queue(etcd_client, prefix)[1].lease_id
    assert not waiter.done.is_set()
    clock.advance(29)
    assert not waiter.done.wait(0.3)  # 29 s are not 30 s
    clock.advance(1)
    with pytest.raises(LockTimeout, match="web02: the cluster lock was not free in time") as raised:
        waiter.result(timeout=2)
    assert not isinstance(raised.value, LockCancelled)
    assert queue_nodes(etcd_client, prefix) == ["web01"]
    assert etcd_client.lease_ttl(lease) == -1

    # With the real clock, a short timeout gives up (how soon: benchmarks/lock.py).
    with pytest.raises(LockTimeout):
        ClusterLock(etcd_client, prefix, "web03", 10).acquire(timeout=0.2)
    with pytest.raises(LockTimeout):
        ClusterLock(etcd_client, prefix, "web03", 10).acquire(timeout=0)
    assert queue_nodes(etcd_client, prefix) == ["web01"]


def test_cancel_removes_the_waiter_promptly(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    spawn: Callable[..., Contender],
    holds: list[LockHold],
) -> None:
    prefix = etcd_settings.prefix
    holds.append(ClusterLock(etcd_client, prefix, "web01", 10).acquire())
    waiter = spawn("web02")
    wait_queue_length(etcd_client, prefix, 2)
    waiter.cancel.set()
    with pytest.raises(LockCancelled, match="web02: waiting for the cluster lock was cancelled"):
        waiter.result(timeout=1)
    assert queue_nodes(etcd_client, prefix) == ["web01"]
    already = threading.Event()
    already.set()
    with pytest.raises(LockCancelled, match="web03: waiting for the cluster lock was cancelled"):
        ClusterLock(etcd_client, prefix, "web03", 10).acquire(cancel=already)


def test_a_waiter_whose_predecessor_left_still_gets_the_lock(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    spawn: Callable[..., Contender],
    holds: list[LockHold],
) -> None:
    prefix = etcd_settings.prefix
    holder = ClusterLock(etcd_client, prefix, "web01", 10).acquire()
    holds.append(holder)
    leaving = spawn("web02")
    wait_queue_length(etcd_client, prefix, 2)
    last = spawn("web03")  # watches web02's key
    wait_queue_length(etcd_client, prefix, 3)
    leaving.cancel.set()
    with pytest.raises(LockCancelled):
        leaving.result()
    wait_queue_length(etcd_client, prefix, 2)
    assert not last.done.wait(0.3), "web03 took the lock while web01 held it"
    holder.release()
    last.result(timeout=2).check()


# -- each waiter watches only the one ahead of it -------------------------------------------


def test_each_waiter_watches_only_the_key_just_ahead_and_one_release_wakes_one(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    clients: Callable[[], EtcdClient],
    spawn: Callable[..., Contender],
    holds: list[LockHold],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = etcd_settings.prefix
    holder = ClusterLock(etcd_client, prefix, "web00", 10).acquire()
    holds.append(holder)
    spies, waiters = [], []
    for i in range(1, 5):
        client = clients()
        spies.append(Spy(client, monkeypatch))
        waiters.append(spawn(f"web0{i}", client=client))
        wait_queue_length(etcd_client, prefix, i + 1)
    wait_for(lambda: all(spy.watched for spy in spies), what="every waiter watching")
    queue = lock_queue(etcd_client, prefix)
    assert [spy.watched for spy in spies] == [[entry.key] for entry in queue[:-1]]

    holder.release()
    for i, waiter in enumerate(waiters):
        hold = waiter.result()
        hold.check()
        assert queue_nodes(etcd_client, prefix) == [w.node for w in waiters[i:]]
        hold.release()
    # Each waiter was woken once, by the release of the key just ahead of it: one txn to
    # queue, one read before its watch, one after it. A waiter woken by every release
    # (a thundering herd) would have read the queue again each time.
    assert [spy.watched for spy in spies] == [[entry.key] for entry in queue[:-1]]
    assert [spy.txns for spy in spies] == [3, 3, 3, 3]


def test_the_queue_is_ordered_by_create_revision_not_by_key(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    clients: Callable[[], EtcdClient],
    spawn: Callable[..., Contender],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Go's ``concurrency.Mutex`` (``etcdctl lock``) names its keys by the lease id in
    unpadded hex: key order is not queue order, create revisions are."""
    prefix = etcd_settings.prefix
    directory = lock_key_prefix(prefix)
    leases = [etcd_client.grant_lease(30) for _ in range(2)]
    first, second = f"{directory}ffff", f"{directory}1"  # created first, sorted last
    for key, node, lease in ((first, "ops-a", leases[0]), (second, "ops-b", leases[1])):
        value = {"node": node, "since": "2024-05-01T12:00:00.000Z"}
        etcd_client.put(key, json.dumps(value).encode(), lease)
    client = clients()
    spy = Spy(client, monkeypatch)
    waiter = spawn("web03", client=client)
    wait_queue_length(etcd_client, prefix, 3)

    queue = lock_queue(etcd_client, prefix)
    assert [entry.node for entry in queue] == ["ops-a", "ops-b", "web03"]
    assert [entry.key for entry in queue[:2]] == [first, second]
    assert cluster_status(etcd_client, prefix)["lock"] == {
        "holder": "ops-a",
        "waiting": ["ops-b", "web03"],
    }
    wait_for(lambda: bool(spy.watched), what="the waiter watching")
    assert spy.watched == [second]  # the one just ahead by create revision

    etcd_client.revoke_lease(leases[0])  # the holder leaves: ops-b holds now
    etcd_client.revoke_lease(leases[1])
    waiter.result().check()
    assert spy.watched == [second]  # never woken by the holder's key


# -- a waiter that lost its place -----------------------------------------------------------


def test_a_waiter_whose_key_is_deleted_gets_lock_lost_not_the_lock(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    spawn: Callable[..., Contender],
    holds: list[LockHold],
) -> None:
    prefix = etcd_settings.prefix
    holder = ClusterLock(etcd_client, prefix, "web01", 10).acquire()
    holds.append(holder)
    ghost = spawn("web02")
    wait_queue_length(etcd_client, prefix, 2)
    behind = spawn("web03")
    wait_queue_length(etcd_client, prefix, 3)
    lost = lock_queue(etcd_client, prefix)[1]
    etcd_client.delete(lost.key)  # an operator (or a bug) removed web02's place
    assert queue_nodes(etcd_client, prefix) == ["web01", "web03"]

    holder.release()
    with pytest.raises(LockLost, match="lost the place"):
        ghost.result()
    assert ghost.hold is None
    hold = behind.result()  # the one behind moved up, and holds alone
    hold.check()
    assert queue_nodes(etcd_client, prefix) == ["web03"]
    assert etcd_client.lease_ttl(lost.lease_id) == -1  # the ghost gave its lease up


def test_a_waiter_whose_lease_is_revoked_gets_lock_lost_while_the_holder_holds(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    spawn: Callable[..., Contender],
    holds: list[LockHold],
) -> None:
    prefix = etcd_settings.prefix
    holder = ClusterLock(etcd_client, prefix, "web01", 10).acquire()
    holds.append(holder)
    waiter = spawn("web02", ttl=3)  # refreshes every second
    wait_queue_length(etcd_client, prefix, 2)
    etcd_client.revoke_lease(lock_queue(etcd_client, prefix)[1].lease_id)
    # the keep-alive learns the lease is gone at its next refresh; the waiter stops
    # waiting then, without waiting for the holder
    with pytest.raises(LockLost, match="lost the place"):
        waiter.result(timeout=10)
    assert waiter.hold is None
    holder.check()
    assert queue_nodes(etcd_client, prefix) == ["web01"]


def test_a_waiter_past_its_estimated_lease_expiry_never_takes_the_lock(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    clients: Callable[[], EtcdClient],
    spawn: Callable[..., Contender],
    holds: list[LockHold],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refreshes fail (etcd unreachable from this node) past the lease's estimated
    expiry: the waiter must assume its lease gone, even while etcd still lists its key."""
    prefix = etcd_settings.prefix
    holder = ClusterLock(etcd_client, prefix, "web01", 30).acquire()
    holds.append(holder)
    clock = ManualClock()
    client = clients()
    failed = threading.Event()

    def refresh_lease(lease_id: int) -> int:
        failed.set()
        raise ClusterError("etcd cannot be reached (test)")

    monkeypatch.setattr(client, "refresh_lease", refresh_lease)
    waiter = spawn("web02", client=client, ttl=3, clock=clock)  # a refresh every second
    wait_queue_length(etcd_client, prefix, 2)
    assert failed.wait(5), "the keep-alive never tried to refresh"
    clock.advance(3)  # the estimated expiry: granted at 0 with a TTL of 3
    holder.release()  # the lock is free, and etcd still has the waiter's key
    with pytest.raises(LockLost):
        waiter.result()
    assert waiter.hold is None


# -- the lease's expiry estimate --------------------------------------------------------------


def test_the_expiry_estimate_counts_from_before_the_lease_was_granted(
    clients: Callable[[], EtcdClient],
    etcd_settings: EtcdSettings,
    holds: list[LockHold],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = ManualClock()
    client = clients()
    real_grant = client.grant_lease

    def slow_grant(ttl: int) -> int:
        clock.advance(1.5)  # the grant took 1.5 s: etcd started counting within it
        return real_grant(ttl)

    monkeypatch.setattr(client, "grant_lease", slow_grant)
    hold = ClusterLock(client, etcd_settings.prefix, "web01", 30, clock).acquire()
    holds.append(hold)
    hold._keepalive.stop()  # hung: no refresh (the first would come 10 s from now)
    clock.set(monotonic=30 - 0.001)
    hold.check()
    clock.set(monotonic=30)  # the request was sent at 0: the lease may be gone now
    with pytest.raises(LockLost, match=EXPIRED):
        hold.check()


def test_the_expiry_estimate_counts_a_refresh_from_when_it_was_sent(
    clients: Callable[[], EtcdClient],
    etcd_settings: EtcdSettings,
    holds: list[LockHold],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = ManualClock()
    client = clients()
    real_refresh = client.refresh_lease
    refreshed: list[tuple[float, int]] = []  # (sent at, TTL granted)
    go, done = threading.Event(), threading.Event()

    def slow_refresh(lease_id: int) -> int:
        if refreshed:  # one refresh only; later ones fail and change no estimate
            raise ClusterError("etcd cannot be reached (test)")
        go.wait(5)
        sent = clock.monotonic()
        granted = real_refresh(lease_id)
        clock.advance(2.0)  # the answer took 2 s to arrive
        refreshed.append((sent, granted))
        done.set()
        return granted

    monkeypatch.setattr(client, "refresh_lease", slow_refresh)
    hold = ClusterLock(client, etcd_settings.prefix, "web01", 3, clock).acquire()
    holds.append(hold)
    clock.advance(1.0)
    go.set()  # the first refresh is sent at 1.0
    assert done.wait(5), "the keep-alive never refreshed"
    hold._keepalive.stop()  # joins: the estimate is updated
    [(sent, granted)] = refreshed
    assert (sent, granted) == (1.0, 3)
    clock.set(monotonic=sent + granted - 0.001)  # 3.999: received + TTL would be 6.0
    hold.check()
    clock.set(monotonic=sent + granted)
    with pytest.raises(LockLost, match=EXPIRED):
        hold.check()


def test_a_waiter_sleeps_on_its_watch_instead_of_polling(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    clients: Callable[[], EtcdClient],
    spawn: Callable[..., Contender],
    holds: list[LockHold],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = etcd_settings.prefix
    holder = ClusterLock(etcd_client, prefix, "web01", 10).acquire()
    holds.append(holder)
    client = clients()
    spy = Spy(client, monkeypatch)
    waiter = spawn("web02", client=client)
    wait_for(lambda: bool(spy.watched), what="the waiter watching")
    threading.Event().wait(0.5)  # a window to observe in: five watch slices go by
    assert (spy.txns, spy.watched) == (2, [holder.key])  # queued, read once, watching
    holder.release()
    waiter.result().check()
    assert (spy.txns, spy.watched) == (3, [holder.key])


@pytest.mark.parametrize("with_cancel", [True, False])
def test_a_waiter_whose_watch_keeps_breaking_reads_again_without_spinning(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    clients: Callable[[], EtcdClient],
    holds: list[LockHold],
    monkeypatch: pytest.MonkeyPatch,
    with_cancel: bool,
) -> None:
    prefix = etcd_settings.prefix
    holder = ClusterLock(etcd_client, prefix, "web01", 10).acquire()
    holds.append(holder)
    client = clients()
    spy = Spy(client, monkeypatch, broken=True)
    lock = ClusterLock(client, prefix, "web02", 10)
    cancel = threading.Event() if with_cancel else None
    got: list[LockHold | BaseException] = []

    def wait() -> None:
        try:
            got.append(lock.acquire(timeout=30, cancel=cancel))
        except BaseException as error:
            got.append(error)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(spy.watched) >= 2, what="the waiter watching again")
        before = spy.txns
        threading.Event().wait(0.5)  # the window: a pause between reads, not a busy loop
        assert spy.txns - before <= 10, f"{spy.txns - before} reads in 0.5 s"
        assert not got, "the waiter took the lock while web01 held it"
        holder.release()
        thread.join(10)
        assert not thread.is_alive(), "the waiter never noticed the lock was free"
    finally:
        if cancel is not None:
            cancel.set()
        thread.join(10)
    [hold] = got
    assert isinstance(hold, LockHold), hold
    holds.append(hold)
    hold.check()
    assert queue_nodes(etcd_client, prefix) == ["web02"]


def test_a_hold_given_up_is_never_reported_lost(
    clients: Callable[[], EtcdClient], etcd_settings: EtcdSettings
) -> None:
    clock = ManualClock()
    hold = ClusterLock(clients(), etcd_settings.prefix, "web01", 3, clock).acquire()
    described = f"LockHold(node='web01', key={hold.key!r}, revision={hold.create_revision}"
    assert repr(hold) == f"{described}, held)"
    hold.release()
    assert repr(hold) == f"{described}, released)"
    clock.advance(60)  # far past the lease's expiry, with no keep-alive running
    assert not hold._keepalive.check()
    assert not hold.lost.is_set()
    with pytest.raises(LockLost, match="released"):
        hold.check()


def test_a_lost_hold_says_so(
    etcd_client: EtcdClient, etcd_settings: EtcdSettings, holds: list[LockHold]
) -> None:
    hold = ClusterLock(etcd_client, etcd_settings.prefix, "web01", 3).acquire()
    holds.append(hold)
    etcd_client.revoke_lease(hold.lease_id)
    assert hold.lost.wait(5)
    assert repr(hold) == (
        f"LockHold(node='web01', key={hold.key!r}, revision={hold.create_revision}, lost)"
    )


# -- the keep-alive -------------------------------------------------------------------------


def keepalive_threads() -> dict[str, threading.Thread]:
    return {t.name: t for t in threading.enumerate() if t.name.startswith("ccm-lock-keepalive")}


def test_each_hold_has_a_named_daemon_keep_alive_that_release_stops(
    etcd_client: EtcdClient, etcd_settings: EtcdSettings, holds: list[LockHold]
) -> None:
    hold = ClusterLock(etcd_client, etcd_settings.prefix, "web01", 10).acquire()
    holds.append(hold)
    name = f"ccm-lock-keepalive-{hold.lease_id:x}"
    thread = keepalive_threads()[name]  # named: a thread dump says what it is
    assert thread.daemon  # a process may exit holding the lock: the lease then expires
    hold.release()
    assert not thread.is_alive()  # joined by release()
    assert name not in keepalive_threads()


_EXITS_HOLDING = """
import sys
from ccm.cluster.etcd import EtcdClient
from ccm.cluster.lock import ClusterLock
from ccm.settings import EtcdSettings
client = EtcdClient(EtcdSettings(endpoints=(sys.argv[1],), timeout=5))
hold = ClusterLock(client, sys.argv[2], "leaving", 30).acquire(timeout=10)
print("HELD", hold.lease_id, flush=True)
"""


def test_a_process_may_exit_while_it_holds_the_lock(
    etcd_client: EtcdClient, etcd_settings: EtcdSettings
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _EXITS_HOLDING, etcd_settings.endpoints[0], etcd_settings.prefix],
        capture_output=True,
        text=True,
        timeout=60,  # a keep-alive that kept the interpreter alive would hang here
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    [lease] = [int(line.split()[1]) for line in result.stdout.splitlines() if "HELD" in line]
    assert queue_nodes(etcd_client, etcd_settings.prefix) == ["leaving"]  # until the TTL
    etcd_client.revoke_lease(lease)


def test_a_failed_refresh_is_retried_and_the_lease_kept(
    clients: Callable[[], EtcdClient],
    etcd_settings: EtcdSettings,
    holds: list[LockHold],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = clients()
    real_refresh = client.refresh_lease
    calls: list[str] = []

    def flaky_refresh(lease_id: int) -> int:
        if not calls:
            calls.append("failed")
            raise ClusterError("etcd cannot be reached (test)")
        calls.append("refreshed")
        return real_refresh(lease_id)

    monkeypatch.setattr(client, "refresh_lease", flaky_refresh)
    hold = ClusterLock(client, etcd_settings.prefix, "web01", 2).acquire()
    holds.append(hold)
    until = time.monotonic() + 3.0  # 1.5 TTLs: the lease needs a refresh after the failure
    while time.monotonic() < until:
        hold.check()
        time.sleep(0.1)
    assert calls[0] == "failed" and calls.count("refreshed") >= 2, calls
    assert client.get(hold.key) is not None
    assert client.lease_ttl(hold.lease_id) > 0
    hold.check()


def test_while_refreshes_succeed_the_clock_cannot_lose_the_lock(
    clients: Callable[[], EtcdClient],
    etcd_settings: EtcdSettings,
    holds: list[LockHold],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The expiry estimate decides only when the keep-alive is unhealthy: a clock that
    jumps (or a slow check) does not declare a lease lost that is being refreshed."""
    clock = ManualClock()
    client = clients()
    real_refresh = client.refresh_lease
    refreshed = threading.Event()

    def refresh(lease_id: int) -> int:
        granted = real_refresh(lease_id)
        refreshed.set()
        return granted

    monkeypatch.setattr(client, "refresh_lease", refresh)
    hold = ClusterLock(client, etcd_settings.prefix, "web01", 6, clock).acquire()
    holds.append(hold)
    assert refreshed.wait(5), "the keep-alive never refreshed"  # after 2 s
    # (a private flag, for synchronisation only: the refresh's result has been recorded;
    # the next refresh, which is unhealthy while in flight, comes 2 s later)
    wait_for(lambda: hold._keepalive._healthy, what="the refresh to be recorded")
    clock.advance(100)
    hold.check()
    assert not hold.lost.is_set()


# -- refusals and errors ----------------------------------------------------------------------


def test_a_ttl_below_one_second_is_refused(
    etcd_client: EtcdClient, etcd_settings: EtcdSettings
) -> None:
    with pytest.raises(ValueError, match="TTL must be at least 1 s, not 0"):
        ClusterLock(etcd_client, etcd_settings.prefix, "web01", 0)
    lock = ClusterLock(etcd_client, etcd_settings.prefix, "web01", 1)
    assert (lock.prefix, lock.ttl) == (etcd_settings.prefix, 1)
    with lock.acquire(timeout=5) as hold:
        hold.check()


def test_a_key_that_exists_already_is_never_shared(
    clients: Callable[[], EtcdClient],
    etcd_settings: EtcdSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """etcd never grants the id of a live lease; should it, the second contender must
    not take the first one's key (and so its place) as its own."""
    first_client, second_client = clients(), clients()
    first = ClusterLock(first_client, etcd_settings.prefix, "web01", 10).acquire()
    try:
        monkeypatch.setattr(second_client, "grant_lease", lambda ttl: first.lease_id)
        with pytest.raises(ClusterError, match=f"cannot queue .*{first.key} already exists"):
            ClusterLock(second_client, etcd_settings.prefix, "web02", 10).acquire(timeout=5)
    finally:
        first.release()


def test_a_waiter_gets_a_cluster_error_when_etcd_goes_away(
    private_etcd_server: EtcdServer,
) -> None:
    settings = EtcdSettings(endpoints=(private_etcd_server.endpoint,), prefix="/ccm", timeout=1.0)
    with (
        EtcdClient.from_settings(settings) as holder_client,
        EtcdClient.from_settings(settings) as waiter_client,
    ):
        holder = ClusterLock(holder_client, "/ccm", "web01", 10).acquire()
        waiter = Contender(waiter_client, "/ccm", "web02", timeout=60)
        waiter.thread.start()
        try:
            wait_queue_length(holder_client, "/ccm", 2)
            private_etcd_server.kill()
            assert waiter.done.wait(30), "the waiter did not notice etcd was gone"
            assert isinstance(waiter.error, ClusterError), repr(waiter.error)
            assert waiter.hold is None
        finally:
            waiter.cancel.set()
            waiter.thread.join(30)
            holder.release()
