"""The cluster lock: one node applies at a time, first come, first served.

This is etcd's own mutex algorithm (Go's ``clientv3/concurrency.Mutex``), built on the
adapter in :mod:`ccm.cluster.etcd`; no client library's ``Lock`` class is used (they are
not fair, leak leases and keep nothing alive, see DESIGN.md):

1. grant a lease of ``ttl`` seconds and keep it alive from a background thread
   (a refresh every ``ttl / 3``);
2. put ``{prefix}/lock/{lease_id:016x}`` = ``{"node", "since"}`` under that lease, in a
   txn guarded by "the key is missing"; the key's create revision is my place in the
   queue — and, once I hold the lock, my **fencing token**;
3. read the key with the highest create revision below mine (one Range: sort by create
   revision, descending, limit 1, ``max_create_revision = mine - 1``). None: I hold the
   lock. Otherwise watch **only that key** from the Range's revision + 1 until it is
   deleted, then read again: the key ahead may have left the queue without ever holding
   the lock (a cancelled or timed-out waiter, a dead node), and the next read finds the
   one ahead of it. Each release therefore wakes exactly one waiter (no thundering herd)
   and the order is the order of the create revisions.

The same read also checks that my own key still exists: a waiter whose lease was lost
(etcd restarted past the TTL, the lease revoked from outside) has no place in the queue
any more and gets ``LockLost`` instead of a lock it does not hold.

A :class:`LockHold` is what a holder works with. ``lost`` is set when the keep-alive
cannot keep the lease (etcd says it is gone, or refreshes failed past its expiry), and
``check()`` raises ``LockLost`` then: a node checks before each change and records no
success. ``fence()`` is the compare that makes a write succeed only while the lock is
still mine (the success record, the halt record); ``release_ops()`` releases the lock in
the same txn as another write. ``release()`` revokes the lease, which deletes the key at
the same revision and hands the lock to the next waiter; it never raises, because a
lease that cannot be revoked while etcd is down expires by itself.

Giving up: ``acquire(timeout=...)`` raises :class:`LockTimeout` and
``acquire(cancel=event)`` raises :class:`LockCancelled` (a ``LockTimeout``, so one
``except`` handles both "did not get it" cases); either way the waiter's key and lease
are removed first, so the waiters behind it move up at once. Every other error while
waiting (etcd unavailable, the lease lost) also removes them (best effort) and is raised.

Time: deadlines and the lease's expiry estimate are read from an injected
:class:`~ccm.cluster.clock.Clock`; the thread waits themselves are real (a watch read
bounded by a short slice, an ``Event.wait`` in the keep-alive), so a test moving a
:class:`~ccm.cluster.clock.ManualClock` sees a timeout within one slice.

:func:`lock_queue` lists the holder and the waiters for ``ccm status``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Final

from ccm.cluster.clock import Clock, SystemClock
from ccm.cluster.etcd import (
    Compare,
    Delete,
    EtcdClient,
    Get,
    KeyValue,
    LeaseNotFound,
    Op,
    Put,
    RevisionCompacted,
    WatchDisconnected,
)
from ccm.errors import ClusterError, LockCancelled, LockLost, LockTimeout
from ccm.log import get_logger

__all__ = [
    "ClusterLock",
    "LockCancelled",
    "LockEntry",
    "LockHold",
    "LockTimeout",
    "lock_key_prefix",
    "lock_queue",
]

#: How long a waiter blocks on its watch before it looks at its deadline, its cancel
#: event and its lease again: the worst-case reaction time to a timeout or a cancel.
WAIT_SLICE: Final = 0.1
#: After a failed refresh, the keep-alive tries again this often (at most).
REFRESH_RETRY: Final = 0.5


def lock_key_prefix(prefix: str) -> str:
    """The directory of the lock's keys: ``{prefix}/lock/``."""
    return f"{prefix}/lock/"


def _format_wall(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- the lease and its keep-alive ---------------------------------------------------------


class _KeepAlive:
    """Keeps one lease alive from a daemon thread; sets ``lost`` when it cannot.

    The lease's expiry is estimated conservatively on the injected clock: the instant a
    refresh was *sent* plus the TTL etcd granted (etcd counts from when it received it,
    which is later). The estimate decides "lost" only when the keep-alive is not healthy
    (the last refresh failed, one is hanging, or the thread is gone); while refreshes
    succeed on schedule the lease is alive whatever the clock says.
    """

    def __init__(
        self, client: EtcdClient, lease_id: int, ttl: int, granted_at: float, clock: Clock
    ) -> None:
        self.lease_id = lease_id
        self.lost = threading.Event()
        self.reason = ""
        self._client = client
        self._clock = clock
        self._interval = ttl / 3
        self._stop = threading.Event()
        self._closed = False
        self._mutex = threading.Lock()
        self._expires_at = granted_at + ttl
        self._healthy = True  # last refresh succeeded and none is in flight
        self._log = get_logger(component="lock", lease=f"{lease_id:016x}")
        self._thread = threading.Thread(
            target=self._run, name=f"ccm-lock-keepalive-{lease_id:x}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop refreshing (the lease then expires within its TTL unless revoked)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def close(self) -> None:
        """Stop refreshing because the lease is being given up: never report it lost."""
        self._closed = True
        self.stop()

    def check(self) -> bool:
        """True when the lease is (or must be assumed) lost; sets ``lost`` then."""
        if self.lost.is_set():
            return True
        with self._mutex:
            suspect = not self._healthy or not self._thread.is_alive()
            expired = self._clock.monotonic() >= self._expires_at
        if suspect and expired:
            self._mark_lost("the lease expired: no refresh succeeded within its TTL")
        return self.lost.is_set()

    def _mark_lost(self, reason: str) -> None:
        if self.lost.is_set() or self._closed:
            return  # given up on purpose: not lost
        self.reason = reason
        self.lost.set()
        self._log.error("cluster lock lost", reason=reason)

    def _run(self) -> None:
        delay = self._interval
        while not self._stop.wait(delay):
            sent = self._clock.monotonic()
            with self._mutex:
                self._healthy = False
            try:
                granted = self._client.refresh_lease(self.lease_id)
            except LeaseNotFound:
                self._mark_lost("etcd says the lease is gone (expired or revoked)")
                return
            except ClusterError as error:
                if self.check():
                    return
                self._log.warning("cannot refresh the lock's lease", error=str(error))
                delay = min(self._interval, REFRESH_RETRY)
                continue
            with self._mutex:
                self._expires_at = sent + granted
                self._healthy = True
            delay = self._interval


# -- the hold -------------------------------------------------------------------------------


class LockHold:
    """The cluster lock, held: fencing token, loss detection and release.

    ``create_revision`` is the fencing token; ``lost`` is set by the keep-alive thread
    when the lease is lost. A context manager: leaving it releases the lock.
    """

    def __init__(
        self,
        client: EtcdClient,
        *,
        key: str,
        node: str,
        create_revision: int,
        since: datetime,
        keepalive: _KeepAlive,
    ) -> None:
        self.key: Final = key
        self.node: Final = node
        self.lease_id: Final = keepalive.lease_id
        self.create_revision: Final = create_revision
        self.since: Final = since
        self.lost: Final = keepalive.lost
        self._client = client
        self._keepalive = keepalive
        self._release_lock = threading.Lock()
        self._released = False
        self._log = get_logger(component="lock", node=node, key=key)

    @property
    def released(self) -> bool:
        return self._released

    def check(self) -> None:
        """Raise ``LockLost`` unless the lock is still held (not lost, not released)."""
        if self._released:
            raise LockLost(f"{self.node}: the cluster lock {self.key} was released")
        if self._keepalive.check():
            raise LockLost(
                f"{self.node}: the cluster lock {self.key} was lost: {self._keepalive.reason}"
            )

    def fence(self) -> Compare:
        """The txn compare "my lock key is still the one I created": holds only while
        the lock is mine (a lost lease deletes the key; a new key has a new revision)."""
        return Compare(self.key, "create", "==", self.create_revision)

    def release_ops(self) -> list[Op]:
        """Operations that release the lock inside another txn (with its other writes).

        ``release()`` must still be called afterwards: it revokes the lease and stops
        the keep-alive.
        """
        return [Delete(self.key)]

    def release(self) -> None:
        """Give the lock up: stop the keep-alive, revoke the lease (deleting the key).

        Idempotent and never raises: when etcd cannot be reached the failure is logged
        and the lease expires by itself within its TTL.
        """
        with self._release_lock:
            if self._released:
                return
            self._released = True
        _discard(self._client, self._keepalive, self.key, self._log)
        self._log.info("cluster lock released", revision=self.create_revision)

    def __enter__(self) -> LockHold:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self._released else "lost" if self.lost.is_set() else "held"
        return (
            f"LockHold(node={self.node!r}, key={self.key!r}, "
            f"revision={self.create_revision}, {state})"
        )


def _discard(client: EtcdClient, keepalive: _KeepAlive, key: str, log: Any) -> None:
    """Stop the keep-alive and revoke the lease; best effort, logs instead of raising."""
    keepalive.close()
    try:
        client.revoke_lease(keepalive.lease_id)
        return
    except ClusterError as error:
        log.warning("cannot revoke the lock's lease; it expires by itself", error=str(error))
    try:  # the key at least, so the next waiter need not wait for the expiry
        client.delete(key)
    except ClusterError:
        pass


# -- the lock ---------------------------------------------------------------------------------


class ClusterLock:
    """A fair, lease-backed mutex under ``{prefix}/lock/``; one per node (thread-safe:
    every ``acquire`` has its own lease and key)."""

    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        node: str,
        ttl: int,
        clock: Clock | None = None,
    ) -> None:
        if ttl < 1:
            raise ValueError(f"the lock's lease TTL must be at least 1 s, not {ttl}")
        self.client = client
        self.prefix = prefix
        self.node = node
        self.ttl = ttl
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.directory = lock_key_prefix(prefix)
        self._log = get_logger(component="lock", node=node)

    def acquire(
        self, timeout: float | None = None, cancel: threading.Event | None = None
    ) -> LockHold:
        """Wait for the lock (first come, first served) and return the hold.

        ``timeout`` (seconds on the clock) raises ``LockTimeout``; setting ``cancel``
        raises ``LockCancelled`` within ``WAIT_SLICE``; a lease lost while waiting raises
        ``LockLost``; etcd errors raise ``ClusterError``. In every such case this
        waiter's key and lease are removed before the error is raised.
        ``timeout=0`` takes the lock only if nobody holds or waits for it.
        """
        clock = self.clock
        deadline = None if timeout is None else clock.monotonic() + timeout
        if cancel is not None and cancel.is_set():
            raise LockCancelled(f"{self.node}: waiting for the cluster lock was cancelled")
        granted_at = clock.monotonic()
        lease_id = self.client.grant_lease(self.ttl)
        keepalive = _KeepAlive(self.client, lease_id, self.ttl, granted_at, clock)
        keepalive.start()
        key = f"{self.directory}{lease_id:016x}"
        log = self._log.bind(key=key)
        since = clock.wall()
        try:
            value = json.dumps(
                {"node": self.node, "since": _format_wall(since)}, separators=(",", ":")
            ).encode()
            result = self.client.txn([Compare.missing(key)], [Put(key, value, lease_id)])
            if not result.succeeded:  # etcd never grants a live lease's id: never share a key
                raise ClusterError(
                    f"{self.node}: cannot queue for the cluster lock: {key} already exists"
                )
            revision = result.revision
            log.debug("queued for the cluster lock", revision=revision)
            self._wait(key, revision, keepalive, deadline, cancel, log)
        except BaseException:
            _discard(self.client, keepalive, key, log)
            raise
        log.info("cluster lock acquired", revision=revision)
        return LockHold(
            self.client,
            key=key,
            node=self.node,
            create_revision=revision,
            since=since,
            keepalive=keepalive,
        )

    def _wait(
        self,
        key: str,
        revision: int,
        keepalive: _KeepAlive,
        deadline: float | None,
        cancel: threading.Event | None,
        log: Any,
    ) -> None:
        """Return once no key older than mine is left; raise when giving up."""
        ahead_of_me = Get(
            self.directory,
            prefix=True,
            sort="create",
            descending=True,
            limit=1,
            max_create_revision=revision - 1,
        )
        while True:
            result = self.client.txn([], [Get(key), ahead_of_me])
            mine, ahead = _kvs(result.responses[0]), _kvs(result.responses[1])
            if not mine or mine[0].create_revision != revision or keepalive.check():
                raise LockLost(
                    f"{self.node}: lost the place in the cluster lock's queue while waiting "
                    f"(the lease of {key} expired or was revoked)"
                )
            if not ahead:
                return
            self._give_up_if_due(deadline, cancel)
            log.debug("waiting for the cluster lock", behind=ahead[0].key)
            self._wait_deleted(ahead[0].key, result.revision + 1, keepalive, deadline, cancel)

    def _wait_deleted(
        self,
        key: str,
        start_revision: int,
        keepalive: _KeepAlive,
        deadline: float | None,
        cancel: threading.Event | None,
    ) -> None:
        """Block until ``key`` is deleted (or its watch ends: the caller reads again)."""
        try:
            # A prefix watch, but lock keys have a fixed width: no other key extends this
            # one. Events are filtered to the exact key all the same.
            watch = self.client.watch_prefix(key, start_revision=start_revision)
        except RevisionCompacted:
            return  # history gone: reading again tells whether it still exists
        with watch:
            while True:
                if keepalive.check():
                    return  # the caller's read raises LockLost
                self._give_up_if_due(deadline, cancel)
                slice_ = WAIT_SLICE
                if deadline is not None:
                    slice_ = min(slice_, max(0.0, deadline - self.clock.monotonic()))
                try:
                    batch = watch.get(timeout=slice_)
                except (WatchDisconnected, RevisionCompacted):
                    # Read again (it raises if etcd is really gone), after a pause so a
                    # watch that keeps breaking cannot turn this into a busy loop.
                    (cancel or threading.Event()).wait(WAIT_SLICE)
                    return
                if batch is None:
                    if watch.done:
                        return
                    continue
                if any(e.key == key and e.type == "delete" for e in batch.events):
                    return

    def _give_up_if_due(self, deadline: float | None, cancel: threading.Event | None) -> None:
        if cancel is not None and cancel.is_set():
            raise LockCancelled(f"{self.node}: waiting for the cluster lock was cancelled")
        if deadline is not None and self.clock.monotonic() >= deadline:
            raise LockTimeout(f"{self.node}: the cluster lock was not free in time")

    def __repr__(self) -> str:
        return f"ClusterLock(node={self.node!r}, directory={self.directory!r}, ttl={self.ttl})"


def _kvs(result: object) -> list[KeyValue]:
    return result if isinstance(result, list) else []


# -- the queue, for ccm status --------------------------------------------------------------


@dataclass(frozen=True)
class LockEntry:
    """One key of the lock's queue: the holder (first) or a waiter."""

    node: str
    create_revision: int
    key: str
    since: datetime | None
    lease_id: int


def lock_queue(client: EtcdClient, prefix: str) -> list[LockEntry]:
    """The holder, then the waiters in the order they will get the lock (one read).

    A value that is not the JSON ccm writes is listed with node ``"?"``: the queue
    still shows that something holds the lock.
    """
    kvs, _ = client.get_prefix(lock_key_prefix(prefix))
    entries = []
    for kv in sorted(kvs, key=lambda kv: kv.create_revision):
        node, since = "?", None
        try:
            data = json.loads(kv.value)
            if isinstance(data, dict):
                node = str(data.get("node", "?"))
                since = datetime.fromisoformat(str(data["since"]))
        except (ValueError, KeyError, TypeError):
            pass
        entries.append(LockEntry(node, kv.create_revision, kv.key, since, kv.lease))
    return entries
