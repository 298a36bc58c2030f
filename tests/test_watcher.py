"""The event watcher against a real etcd: reports, outages, compaction, stalls.

Outage and compaction tests run on a private etcd (``private_etcd_server``): killing or
compacting the session's etcd would disturb other tests. Nothing sleeps and hopes: the
tests wait on a condition variable until a deadline. The one fixed wait is the outage
window over which re-watch attempts are counted. Figures (CPU during an outage, how
soon a stall is noticed) are printed by benchmarks/watcher.py, not asserted here.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ccm.cluster.clock import ManualClock
from ccm.cluster.etcd import (
    Compare,
    Delete,
    EtcdClient,
    Put,
    RevisionCompacted,
    Watch,
    WatchBatch,
    WatchDisconnected,
)
from ccm.cluster.watcher import EventWatcher
from ccm.errors import ClusterError
from ccm.settings import EtcdSettings
from ccm.testing.etcd import EtcdServer


class Reports:
    """What a watcher reported, with a condition to wait on."""

    def __init__(self) -> None:
        self.batches: list[tuple[set[str], int]] = []
        self.full: list[str] = []
        self._changed = threading.Condition()

    def on_types(self, types: set[str], revision: int) -> None:
        with self._changed:
            self.batches.append((set(types), revision))
            self._changed.notify_all()

    def on_full(self, reason: str) -> None:
        with self._changed:
            self.full.append(reason)
            self._changed.notify_all()

    def wait(self, condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
        with self._changed:
            if not self._changed.wait_for(condition, timeout):
                pytest.fail(f"timed out after {timeout} s waiting for {what}: {self.batches}")

    def wait_revision(self, revision: int, timeout: float = 5.0) -> None:
        self.wait(
            lambda: any(rev >= revision for _, rev in self.batches),
            timeout,
            f"a report of revision {revision}",
        )

    def types_after(self, revision: int) -> set[str]:
        with self._changed:
            return {t for types, rev in self.batches if rev > revision for t in types}


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    """After each test (and its fixtures' teardown), none of our threads is left."""
    yield
    deadline = time.monotonic() + 5
    while left := [t.name for t in threading.enumerate() if t.name.startswith("ccm-event-watcher")]:
        assert time.monotonic() < deadline, f"threads left running: {left}"
        time.sleep(0.01)


@pytest.fixture
def reports() -> Reports:
    return Reports()


@pytest.fixture
def watchers() -> Iterator[Callable[..., EventWatcher]]:
    """Start EventWatchers; all are stopped (and their threads joined) at the end."""
    started: list[EventWatcher] = []

    def start(
        client: EtcdClient, prefix: str, start_revision: int, reports: Reports, **options: Any
    ) -> EventWatcher:
        watcher = EventWatcher(
            client, prefix, start_revision, reports.on_types, reports.on_full, **options
        )
        started.append(watcher)
        watcher.start()
        return watcher

    yield start
    for watcher in started:
        watcher.stop(timeout=10)
        assert not watcher.running, "a watcher thread did not stop"


class CountingWatches:
    """Wraps a client's watch_prefix: counts calls, can hand out a watch that never
    delivers (a stalled stream), and can fail every attempt."""

    def __init__(self, client: EtcdClient, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.stall_next = 0
        self.lock = threading.Lock()
        self._real = client.watch_prefix
        monkeypatch.setattr(client, "watch_prefix", self.watch_prefix)

    def watch_prefix(self, prefix: str, start_revision: int | None = None) -> Watch:
        with self.lock:
            self.calls += 1
            stall = self.stall_next > 0
            self.stall_next -= stall
        if stall:  # a real, open watch on keys nobody writes: it never delivers
            return self._real(f"{prefix}stalled-nothing-here/", None)
        return self._real(prefix, start_revision)


def write_event(client: EtcdClient, prefix: str, type_name: str) -> int:
    """An object write with its thin event, as the Cluster API makes it."""
    return client.txn(
        [],
        [Put(f"{prefix}/objects/{type_name}/1", b"{}"), Put(f"{prefix}/events/{type_name}", b"{}")],
    ).revision


def eventually(call: Callable[[], int], timeout: float = 10.0) -> int:
    """``call()``'s first result that does not raise ``ClusterError``, within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except ClusterError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- reports -------------------------------------------------------------------------------


def test_writes_are_reported_with_types_and_revisions(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    reports: Reports,
    watchers: Callable[..., EventWatcher],
) -> None:
    prefix = etcd_settings.prefix
    start = etcd_client.current_revision() + 1
    watcher = watchers(etcd_client, prefix, start, reports)
    assert watcher.last_revision == start - 1

    first = write_event(etcd_client, prefix, "unix-users")
    reports.wait_revision(first)
    both = etcd_client.txn(
        [], [Put(f"{prefix}/events/crons", b"{}"), Put(f"{prefix}/events/fpm-pools", b"{}")]
    ).revision
    reports.wait_revision(both)
    etcd_client.put(f"{prefix}/objects/crons/2", b"{}")  # not an event: not reported
    deleted = etcd_client.txn([], [Delete(f"{prefix}/events/crons")]).revision
    reports.wait_revision(deleted)

    assert reports.batches == [
        ({"unix-users"}, first),
        ({"crons", "fpm-pools"}, both),
        ({"crons"}, deleted),
    ]
    assert watcher.last_revision == deleted
    assert reports.full == []


def test_a_start_revision_in_the_past_replays_the_events_since(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    reports: Reports,
    watchers: Callable[..., EventWatcher],
) -> None:
    prefix = etcd_settings.prefix
    before = write_event(etcd_client, prefix, "clusters")
    missed = write_event(etcd_client, prefix, "virtual-hosts")
    latest = write_event(etcd_client, prefix, "mail-accounts")
    watcher = watchers(etcd_client, prefix, missed, reports)
    reports.wait_revision(latest)
    assert reports.types_after(before) == {"virtual-hosts", "mail-accounts"}
    assert all(rev > before for _, rev in reports.batches)
    assert watcher.last_revision == latest


def test_a_failing_callback_does_not_stop_the_watcher(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    reports: Reports,
    watchers: Callable[..., EventWatcher],
) -> None:
    prefix = etcd_settings.prefix
    failed = threading.Event()

    def on_types(types: set[str], revision: int) -> None:
        if not failed.is_set():
            failed.set()
            raise RuntimeError("a bug in the daemon")
        reports.on_types(types, revision)

    watcher = EventWatcher(
        etcd_client, prefix, etcd_client.current_revision() + 1, on_types, reports.on_full
    )
    watcher.start()
    try:
        write_event(etcd_client, prefix, "crons")
        assert failed.wait(5)
        revision = write_event(etcd_client, prefix, "unix-users")
        reports.wait_revision(revision)
        assert reports.batches == [({"unix-users"}, revision)]
    finally:
        watcher.stop(timeout=10)
    assert not watcher.running


# -- outages --------------------------------------------------------------------------------


def test_recovers_after_an_etcd_restart_and_sleeps_while_it_is_down(
    private_etcd_server: EtcdServer,
    reports: Reports,
    watchers: Callable[..., EventWatcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = private_etcd_server
    settings = EtcdSettings(endpoints=(server.endpoint,), prefix="/ccm", timeout=2.0)
    with (
        EtcdClient.from_settings(settings) as client,
        EtcdClient.from_settings(settings) as writer,
    ):
        counting = CountingWatches(client, monkeypatch)
        start = client.current_revision() + 1
        watcher = watchers(client, "/ccm", start, reports, backoff_initial=0.2, backoff_max=1.0)
        before = write_event(writer, "/ccm", "unix-users")
        reports.wait_revision(before)
        assert counting.calls == 1

        server.kill()
        threading.Event().wait(2.0)  # the outage window (its CPU: benchmarks/watcher.py)
        outage_attempts = counting.calls - 1
        assert 1 <= outage_attempts <= 8  # backing off: 0.2, 0.4, 0.8, 1.0 s…, not spinning

        server.restart()
        # Written before the watcher is back: the re-watch from last + 1 must find them.
        after = eventually(lambda: write_event(writer, "/ccm", "crons"))
        later = write_event(writer, "/ccm", "fpm-pools")
        reports.wait_revision(later, timeout=10)
        assert reports.types_after(before) == {"crons", "fpm-pools"}
        assert watcher.last_revision == later > after > before
        assert reports.full == []
        watcher.stop(timeout=10)  # before its client closes


def test_stop_interrupts_the_backoff_sleep(
    reports: Reports, watchers: Callable[..., EventWatcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a port where no etcd listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = EtcdSettings(endpoints=(f"http://127.0.0.1:{port}",), timeout=1.0)
    with EtcdClient.from_settings(settings) as client:
        counting = CountingWatches(client, monkeypatch)
        # the first failed attempt is followed by a 60 s wait: only an interrupted wait
        # lets the watcher stop within the 5 s below (how soon: benchmarks/watcher.py)
        watcher = watchers(client, "/ccm", 1, reports, backoff_initial=60.0, backoff_max=60.0)
        deadline = time.monotonic() + 5
        while counting.calls < 1:
            assert time.monotonic() < deadline, "the watcher did not try to watch"
            time.sleep(0.01)
        watcher.stop(timeout=5)
        assert not watcher.running
        assert counting.calls == 1


# -- compaction -----------------------------------------------------------------------------


def test_a_compacted_start_revision_asks_for_a_full_run(
    private_etcd_server: EtcdServer, reports: Reports, watchers: Callable[..., EventWatcher]
) -> None:
    settings = EtcdSettings(endpoints=(private_etcd_server.endpoint,), prefix="/ccm")
    with EtcdClient.from_settings(settings) as client:
        old = write_event(client, "/ccm", "unix-users")
        write_event(client, "/ccm", "crons")
        compacted = write_event(client, "/ccm", "fpm-pools")
        client.compact(compacted)

        watcher = watchers(client, "/ccm", old, reports)
        reports.wait(lambda: reports.full == ["compacted"], what="a full run")
        assert watcher.last_revision >= compacted
        assert reports.batches == []  # the lost history is not reported piecemeal

        revision = write_event(client, "/ccm", "virtual-hosts")
        reports.wait_revision(revision)
        assert reports.batches == [({"virtual-hosts"}, revision)]
        assert reports.full == ["compacted"]
        watcher.stop(timeout=10)  # before its client closes


# -- stalls ---------------------------------------------------------------------------------


def test_a_stalled_watch_is_re_established(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    reports: Reports,
    watchers: Callable[..., EventWatcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = etcd_settings.prefix
    counting = CountingWatches(etcd_client, monkeypatch)
    counting.stall_next = 1  # the first watch opens fine but never delivers
    start = etcd_client.current_revision() + 1
    watcher = EventWatcher(
        etcd_client, prefix, start, reports.on_types, reports.on_full, probe_interval=0.2
    )
    slept: list[float] = []
    monkeypatch.setattr(watcher, "_sleep", slept.append)  # observed: no backoff expected
    watcher.start()
    try:
        first = write_event(etcd_client, prefix, "unix-users")
        second = write_event(etcd_client, prefix, "crons")
        reports.wait_revision(second, timeout=5)  # how soon: benchmarks/watcher.py
        assert counting.calls == 2
        assert reports.types_after(start - 1) == {"unix-users", "crons"}
        # The re-watch catches up from the first missed revision (perhaps in one batch).
        assert reports.batches[0][1] >= first
        assert reports.batches[-1][1] == second
        assert slept == []  # a stall is re-watched at once, not after a backoff
    finally:
        watcher.stop(timeout=10)


def test_a_healthy_watch_is_not_re_established_by_the_probe(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    reports: Reports,
    watchers: Callable[..., EventWatcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = etcd_settings.prefix
    counting = CountingWatches(etcd_client, monkeypatch)
    watchers(etcd_client, prefix, etcd_client.current_revision() + 1, reports, probe_interval=0.05)
    until = time.monotonic() + 0.6  # a dozen probes, with writes between them
    written = 0
    while time.monotonic() < until:
        revision = etcd_client.txn(
            [Compare.missing(f"{prefix}/nothing")], [Put(f"{prefix}/events/crons", b"{}")]
        ).revision
        written += 1
        reports.wait_revision(revision)
    assert counting.calls == 1
    assert len(reports.batches) == written


class HeldWatch:
    """A real watch whose deliveries can be held back (a stall) and released: batches
    that arrive while ``open`` is clear are kept, and delivered once it is set."""

    def __init__(self, real: Watch, open_: threading.Event) -> None:
        self.real = real
        self.open = open_
        self.kept: list[WatchBatch] = []

    @property
    def done(self) -> bool:
        return self.real.done and not self.kept

    def get(self, timeout: float | None = None) -> WatchBatch | None:
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.open.is_set() and self.kept:
                return self.kept.pop(0)
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return None
            batch = self.real.get(0.02 if left is None else min(0.02, left))
            if batch is not None:
                self.kept.append(batch)
            elif self.real.done and not self.kept:
                return None

    def cancel(self) -> None:
        self.real.cancel()

    def __enter__(self) -> HeldWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()


class HeldWatches:
    """Every watch the client opens is a ``HeldWatch``; ``hold()`` stalls them all."""

    def __init__(self, client: EtcdClient, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.open = threading.Event()
        self.open.set()
        real = client.watch_prefix

        def watch_prefix(prefix: str, start_revision: int | None = None) -> HeldWatch:
            self.calls += 1
            return HeldWatch(real(prefix, start_revision), self.open)

        monkeypatch.setattr(client, "watch_prefix", watch_prefix)

    def hold(self) -> None:
        self.open.clear()

    def release(self) -> None:
        self.open.set()


class Probes:
    """Counts the watcher's probes (its only txns) on a client, and when each began."""

    def __init__(self, client: EtcdClient, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.began: list[float] = []  # of the probes that have finished
        real = client.txn

        def txn(*args: Any, **kwargs: Any) -> Any:
            began = time.monotonic()
            result = real(*args, **kwargs)
            self.began.append(began)
            self.count += 1
            return result

        monkeypatch.setattr(client, "txn", txn)

    def wait_for_one_since(self, since: float, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(began >= since for began in self.began):
            assert time.monotonic() < deadline, f"no probe in {timeout} s"
            time.sleep(0.005)

    def wait_for_more(self, more: int, timeout: float = 10.0) -> None:
        target = self.count + more
        deadline = time.monotonic() + timeout
        while self.count < target:
            assert time.monotonic() < deadline, f"fewer than {more} probes in {timeout} s"
            time.sleep(0.01)


def test_a_stall_is_judged_by_the_newest_event_not_the_first_key(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    reports: Reports,
    watchers: Callable[..., EventWatcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = etcd_settings.prefix
    old = write_event(etcd_client, prefix, "virtual-hosts")  # the oldest, and last by key
    watches = HeldWatches(etcd_client, monkeypatch)
    writer = EtcdClient.from_settings(etcd_settings)
    try:
        watchers(etcd_client, prefix, old + 1, reports, probe_interval=0.2)
        first = write_event(writer, prefix, "crons")
        reports.wait_revision(first)
        watches.hold()  # the watch stops delivering
        second = write_event(writer, prefix, "unix-users")
        deadline = time.monotonic() + 10
        while watches.calls < 2:  # the probe sees `second`, newer than `first`: re-watch
            assert time.monotonic() < deadline, "the stall was never noticed"
            time.sleep(0.01)
        watches.release()
        reports.wait_revision(second)
        assert reports.types_after(first) == {"unix-users"}
    finally:
        writer.close()


def test_a_watch_that_catches_up_with_the_probe_is_kept(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    reports: Reports,
    watchers: Callable[..., EventWatcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An event in flight when the probe reads etcd is not a stall once it arrives."""
    prefix = etcd_settings.prefix
    watches = HeldWatches(etcd_client, monkeypatch)
    probes = Probes(etcd_client, monkeypatch)
    writer = EtcdClient.from_settings(etcd_settings)
    try:
        watchers(etcd_client, prefix, etcd_client.current_revision() + 1, reports, probe_interval=1)
        watches.hold()
        written = time.monotonic()
        revision = write_event(writer, prefix, "crons")
        probes.wait_for_one_since(written)  # it saw `revision`: the watch is behind
        watches.release()  # within the 1 s grace, the watch delivers exactly `revision`
        reports.wait_revision(revision)
        probes.wait_for_more(2)  # past the grace
        assert watches.calls == 1
    finally:
        writer.close()


def test_probing_an_empty_event_directory_is_not_a_stall(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    reports: Reports,
    watchers: Callable[..., EventWatcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = etcd_settings.prefix  # a fresh prefix: no event was ever written under it
    counting = CountingWatches(etcd_client, monkeypatch)
    probes = Probes(etcd_client, monkeypatch)
    # from now, not from 1: another test may have compacted the session's etcd
    start = etcd_client.current_revision() + 1
    watchers(etcd_client, prefix, start, reports, probe_interval=0.05)
    probes.wait_for_more(5)
    assert counting.calls == 1
    revision = write_event(etcd_client, prefix, "crons")
    reports.wait_revision(revision)
    assert counting.calls == 1


def thread_cpu_seconds(thread: threading.Thread) -> float:
    """CPU time (user + system) of one thread of this process, from /proc."""
    stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_an_idle_watcher_sleeps_on_its_watch_and_probes_on_schedule(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    reports: Reports,
    watchers: Callable[..., EventWatcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = etcd_settings.prefix
    counting = CountingWatches(etcd_client, monkeypatch)
    probes = Probes(etcd_client, monkeypatch)
    watchers(etcd_client, prefix, etcd_client.current_revision() + 1, reports, probe_interval=0.1)
    revision = write_event(etcd_client, prefix, "crons")
    reports.wait_revision(revision)
    [thread] = [t for t in threading.enumerate() if t.name == "ccm-event-watcher"]
    assert thread.daemon  # never keeps the daemon's process alive on its own
    before, probed = thread_cpu_seconds(thread), probes.count
    threading.Event().wait(0.5)  # the window: waiting in its watch, not spinning
    # one-sided bounds: a busy loop uses the whole window and probes without pause; load
    # only makes a spinner use less
    assert thread_cpu_seconds(thread) - before < 0.2
    assert 1 <= probes.count - probed <= 8  # every 0.1 s
    assert counting.calls == 1  # up to date with etcd: never re-watched


def test_probes_follow_the_injected_clock(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    reports: Reports,
    watchers: Callable[..., EventWatcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = ManualClock()
    probes = Probes(etcd_client, monkeypatch)
    watchers(etcd_client, etcd_settings.prefix, 1, reports, probe_interval=0.2, clock=clock)
    threading.Event().wait(0.6)  # three intervals of real time: none on the clock
    assert probes.count == 0
    clock.advance(0.2)
    probes.wait_for_more(1)


def test_the_event_directory_key_itself_is_no_type(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    reports: Reports,
    watchers: Callable[..., EventWatcher],
) -> None:
    prefix = etcd_settings.prefix
    watchers(etcd_client, prefix, etcd_client.current_revision() + 1, reports)
    etcd_client.put(f"{prefix}/events/", b"{}")
    revision = write_event(etcd_client, prefix, "crons")
    reports.wait_revision(revision)
    assert [types for types, _ in reports.batches] == [{"crons"}]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"start_revision": 0}, "etcd revisions start at 1, not 0"),
        ({"backoff_initial": 0.0}, "need 0 < backoff_initial <= backoff_max, not 0.0, 10.0"),
        ({"backoff_initial": 2.0, "backoff_max": 1.0}, "not 2.0, 1.0"),
        ({"probe_interval": 0.0}, "probe_interval must be > 0, not 0.0"),
    ],
)
def test_bad_settings_are_refused(
    etcd_client: EtcdClient, reports: Reports, options: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"start_revision": 1, **options}
    start = arguments.pop("start_revision")
    with pytest.raises(ValueError, match=re.escape(message)):
        EventWatcher(etcd_client, "/ccm", start, reports.on_types, reports.on_full, **arguments)


def test_a_watcher_starts_once(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    reports: Reports,
    watchers: Callable[..., EventWatcher],
) -> None:
    watcher = watchers(etcd_client, etcd_settings.prefix, 1, reports)
    with pytest.raises(RuntimeError, match="^an EventWatcher starts only once$"):
        watcher.start()


def test_backoff_doubles_from_initial_up_to_max(
    reports: Reports, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a port where no etcd listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = EtcdSettings(endpoints=(f"http://127.0.0.1:{port}",), timeout=1.0)
    with EtcdClient.from_settings(settings) as client:
        counting = CountingWatches(client, monkeypatch)
        watcher = EventWatcher(
            client,
            "/ccm",
            1,
            reports.on_types,
            reports.on_full,
            backoff_initial=0.01,
            backoff_max=0.04,
        )
        slept: list[float] = []
        real_sleep = watcher._sleep

        def sleep(seconds: float) -> None:  # observed, then slept for real
            slept.append(seconds)
            real_sleep(seconds)

        monkeypatch.setattr(watcher, "_sleep", sleep)
        watcher.start()
        try:
            deadline = time.monotonic() + 10
            while len(slept) < 5:
                assert time.monotonic() < deadline, f"the watcher did not retry: {slept}"
                time.sleep(0.01)
        finally:
            watcher.stop(timeout=10)
        assert [round(s, 3) for s in slept[:5]] == [0.01, 0.02, 0.04, 0.04, 0.04]
        assert counting.calls >= 5


def test_stop_before_start_and_stop_with_a_timeout(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    reports: Reports,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    never = EventWatcher(etcd_client, etcd_settings.prefix, 1, reports.on_types, reports.on_full)
    never.stop(timeout=1)  # never started: nothing to stop
    assert not never.running

    stuck, release = threading.Event(), threading.Event()

    def watch_prefix(prefix: str, start_revision: int | None = None) -> Watch:
        stuck.set()  # an etcd call that hangs (until the client's timeout, here the test's)
        release.wait(20)
        raise ClusterError("etcd did not answer (test)")

    monkeypatch.setattr(etcd_client, "watch_prefix", watch_prefix)
    watcher = EventWatcher(etcd_client, etcd_settings.prefix, 1, reports.on_types, reports.on_full)
    watcher.start()
    try:
        assert stuck.wait(5)
        watcher.stop(timeout=0.2)  # returns, although the thread is still in etcd
        assert watcher.running
    finally:
        release.set()
        watcher.stop(timeout=10)
    assert not watcher.running


class BreakableWatch:
    """A real watch that the test can break (``WatchDisconnected``, as when etcd drops
    the stream)."""

    def __init__(self, real: Watch) -> None:
        self.real = real
        self.broken = threading.Event()

    @property
    def done(self) -> bool:
        return self.real.done

    def get(self, timeout: float | None = None) -> WatchBatch | None:
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.broken.is_set():
                self.real.cancel()
                raise WatchDisconnected("watch: stream to etcd broke (test)")
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return None
            batch = self.real.get(0.02 if left is None else min(0.02, left))
            if batch is not None or self.real.done:
                return batch

    def cancel(self) -> None:
        self.real.cancel()

    def __enter__(self) -> BreakableWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()


def test_a_watch_that_worked_is_reopened_at_once_one_that_never_did_backs_off(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    reports: Reports,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = etcd_settings.prefix
    opened: list[BreakableWatch] = []
    real_watch = etcd_client.watch_prefix

    def watch_prefix(key: str, start_revision: int | None = None) -> BreakableWatch:
        opened.append(BreakableWatch(real_watch(key, start_revision)))
        return opened[-1]

    monkeypatch.setattr(etcd_client, "watch_prefix", watch_prefix)
    watcher = EventWatcher(
        etcd_client,
        prefix,
        etcd_client.current_revision() + 1,
        reports.on_types,
        reports.on_full,
        backoff_initial=0.3,
        backoff_max=30.0,
    )
    slept: list[float] = []
    real_sleep = watcher._sleep

    def sleep(seconds: float) -> None:  # observed, then slept for real
        slept.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(watcher, "_sleep", sleep)
    watcher.start()
    try:
        first = write_event(etcd_client, prefix, "crons")
        reports.wait_revision(first)
        opened[0].broken.set()  # it had delivered: re-opened at once, no backoff
        wait_for_watches = time.monotonic() + 10
        while len(opened) < 2:
            assert time.monotonic() < wait_for_watches, "not re-watched"
            time.sleep(0.005)
        assert slept == []
        opened[1].broken.set()  # delivered nothing, opened just now: back off first
        while len(opened) < 3:
            assert time.monotonic() < wait_for_watches, "not re-watched after the backoff"
            time.sleep(0.005)
        assert slept == [0.3]
        second = write_event(etcd_client, prefix, "unix-users")
        reports.wait_revision(second)  # nothing lost across the breaks
        assert reports.types_after(first) == {"unix-users"}
    finally:
        watcher.stop(timeout=10)


def test_a_compacted_revision_when_the_watch_is_created_asks_for_a_full_run(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    reports: Reports,
    watchers: Callable[..., EventWatcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = etcd_settings.prefix
    real_watch = etcd_client.watch_prefix
    refused: list[int | None] = []

    def watch_prefix(key: str, start_revision: int | None = None) -> Watch:
        if not refused:
            refused.append(start_revision)
            raise RevisionCompacted("watch: revision compacted (test)", 5)
        return real_watch(key, start_revision)

    monkeypatch.setattr(etcd_client, "watch_prefix", watch_prefix)
    start = etcd_client.current_revision() + 1
    watcher = watchers(etcd_client, prefix, 2, reports)
    reports.wait(lambda: reports.full == ["compacted"], what="a full run")
    assert refused == [2]
    assert watcher.last_revision >= start - 1  # resumes from the current revision
    revision = write_event(etcd_client, prefix, "crons")
    reports.wait_revision(revision)


def test_an_unexpected_error_is_survived(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    reports: Reports,
    watchers: Callable[..., EventWatcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = etcd_settings.prefix
    real_watch = etcd_client.watch_prefix
    failed: list[str] = []

    def watch_prefix(key: str, start_revision: int | None = None) -> Watch:
        if not failed:
            failed.append(key)
            raise RuntimeError("a bug below the watcher (test)")
        return real_watch(key, start_revision)

    monkeypatch.setattr(etcd_client, "watch_prefix", watch_prefix)
    watchers(
        etcd_client,
        prefix,
        etcd_client.current_revision() + 1,
        reports,
        backoff_initial=0.05,
        backoff_max=0.1,
    )
    revision = write_event(etcd_client, prefix, "crons")
    reports.wait_revision(revision)  # re-watched after backoff_max, not never
    assert failed == [f"{prefix}/events/"]
