"""The daemon's ACME hooks: every running daemon answers challenges from etcd, and a
``certificate-managers`` event wakes the renewal at once; a failing order is recorded
and leaves the daemon applying (no halt)."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from daemon_node import Commands, Sites, engine_with, new_root, settings_for
from structlog.testing import capture_logs

from ccm.cluster.acme_challenges import ChallengeAnswers
from ccm.cluster.acme_records import ManagerStates
from ccm.cluster.acme_renewal import CertificateRenewal, TickReport
from ccm.cluster.clock import ManualClock
from ccm.cluster.etcd import EtcdClient
from ccm.cluster.halt import HaltFlag
from ccm.cluster.keys import Keys
from ccm.daemon.acme_service import AcmeService
from ccm.daemon.loop import Daemon
from ccm.daemon.metrics import Metrics
from ccm.daemon.notify import Notifier
from ccm.engine.registry import Registry
from ccm.errors import ClusterError
from ccm.settings import EtcdSettings

DEADLINE = 10.0
UNREACHABLE = "https://127.0.0.1:9/dir"


def until(condition: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_running_daemon_answers_challenges_and_orders_on_a_manager_event(
    tmp_path: Path, etcd_settings: EtcdSettings, etcd_client: EtcdClient
) -> None:
    prefix = etcd_settings.prefix
    settings = settings_for(
        new_root(tmp_path),
        etcd_settings,
        acme={"directory_url": UNREACHABLE, "responder_listen": "127.0.0.1:0"},
    )
    wall = datetime.now(UTC).replace(microsecond=0)
    daemon = Daemon(
        settings,
        Registry([Sites]),
        clock=ManualClock(wall=wall),
        notifier=Notifier(env={}),
        engine_factory=engine_with(Commands()),
    )
    running = threading.Thread(target=daemon.run, daemon=True)
    running.start()
    try:
        until(lambda: daemon.ready, "the first run")
        assert daemon.acme is not None and daemon.acme.responder_address is not None
        _, port = daemon.acme.responder_address
        token = "T" * 43
        ChallengeAnswers(etcd_client, prefix).publish(token, f"{token}.{'k' * 43}", ttl=60)
        url = f"http://127.0.0.1:{port}/.well-known/acme-challenge/{token}"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.read() == f"{token}.{'k' * 43}".encode()

        # the Cluster API writes a manager (object + thin event): the renewal looks at once
        manager = {"id": 2, "common_names": ["shop.example"]}
        etcd_client.put(
            Keys(prefix).object("certificate-managers", 2), json.dumps(manager).encode()
        )
        etcd_client.put(Keys(prefix).event("certificate-managers"), b'{"at": "", "by": "tests"}')
        states = ManagerStates(etcd_client, prefix)
        # first the certificate id is reserved, then the attempt's outcome recorded
        until(lambda: (s := states.all().get(2)) and s.last_attempt, "the order's outcome")
        state = states.all()[2]
        assert state.failures == 1 and "127.0.0.1:9/dir" in state.last_error
        assert state.last_attempt == wall  # the daemon's clock
        sample = daemon.metrics.registry.get_sample_value
        until(
            lambda: sample("ccm_certificate_manager_failures", {"manager": "2"}) == 1.0,
            "the metric",
        )
        assert HaltFlag(etcd_client, prefix).get() is None
        assert not daemon.halted
    finally:
        daemon.stop()
        running.join(DEADLINE)
    assert not running.is_alive()
    assert daemon.acme.responder is None  # stopped with the daemon
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_a_taken_responder_port_is_logged_and_the_renewal_still_runs(
    tmp_path: Path, etcd_settings: EtcdSettings, etcd_client: EtcdClient
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = settings_for(
            new_root(tmp_path),
            etcd_settings,
            acme={"directory_url": UNREACHABLE, "responder_listen": f"127.0.0.1:{port}"},
        )
        service = AcmeService(etcd_client, settings, Metrics(), ManualClock(wall=datetime.now(UTC)))
        with capture_logs() as logs:
            service.start()
            try:
                assert service.responder is None
                assert [e["listen"] for e in logs if e["log_level"] == "error"] == [
                    f"127.0.0.1:{port}"
                ]
                assert service.tick().ordering  # the thread's look works all the same
            finally:
                service.stop()


# -- the service's own schedule and lifecycle ---------------------------------------------


def service_for(
    tmp_path: Path,
    etcd_settings: EtcdSettings,
    etcd_client: EtcdClient,
    clock: ManualClock,
    **acme: Any,
) -> AcmeService:
    settings = settings_for(
        new_root(tmp_path),
        etcd_settings,
        acme={"directory_url": UNREACHABLE, "responder_listen": "", **acme},
        backoff={"initial": 0.01, "max": 0.05},
    )
    return AcmeService(etcd_client, settings, Metrics(), clock)


def test_the_wait_is_the_check_interval_the_next_due_look_or_soon_after_a_failure(
    tmp_path: Path, etcd_settings: EtcdSettings, etcd_client: EtcdClient
) -> None:
    clock = ManualClock(wall=datetime.now(UTC))
    service = service_for(tmp_path, etcd_settings, etcd_client, clock, check_interval=600.0)
    report = service.tick()
    assert report.next_check is None
    wait = service._seconds_to_wait
    assert wait(report) == 600.0
    assert wait(None) == 0.05  # the look failed: again after the back-off's longest wait
    soon = dataclasses.replace(report, next_check=clock.wall() + timedelta(seconds=42))
    assert wait(soon) == 42.0
    late = dataclasses.replace(report, next_check=clock.wall() + timedelta(hours=2))
    assert wait(late) == 600.0
    past = dataclasses.replace(report, next_check=clock.wall() - timedelta(seconds=5))
    assert wait(past) == 1.0  # overdue: once a second, never a busy loop
    brief = service_for(tmp_path / "b", etcd_settings, etcd_client, clock, check_interval=0.01)
    assert brief._seconds_to_wait(None) == 0.01


class FailingFirst(CertificateRenewal):
    """The real renewal, whose first look fails as with etcd away."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.looks = 0

    def tick(self) -> TickReport:
        self.looks += 1
        if self.looks == 1:
            raise ClusterError("etcd at 127.0.0.1:2379: connection refused")
        return super().tick()


def test_a_failed_look_is_retried_after_the_backoff_and_every_report_is_passed_on(
    tmp_path: Path, etcd_settings: EtcdSettings, etcd_client: EtcdClient
) -> None:
    clock = ManualClock(wall=datetime.now(UTC))
    plain = service_for(tmp_path, etcd_settings, etcd_client, clock)
    renewal = FailingFirst(etcd_client, plain.settings, clock=clock)
    reports: list[TickReport] = []
    service = AcmeService(
        etcd_client, plain.settings, Metrics(), clock, renewal=renewal, on_tick=reports.append
    )
    with capture_logs() as logs:
        service.start()
        try:
            until(lambda: reports, "a second look after the failed first")
        finally:
            service.stop()
    assert renewal.looks >= 2 and reports and all(isinstance(r, TickReport) for r in reports)
    assert [e["event"] for e in logs if e["log_level"] == "warning"][:1] == [
        "certificate managers not looked at; retrying"
    ]


def test_start_runs_daemon_threads_and_stop_ends_them_and_is_idempotent(
    tmp_path: Path, etcd_settings: EtcdSettings, etcd_client: EtcdClient
) -> None:
    clock = ManualClock(wall=datetime.now(UTC))
    idle = service_for(tmp_path, etcd_settings, etcd_client, clock)
    idle.stop()  # never started: nothing to stop
    service = service_for(
        tmp_path / "s", etcd_settings, etcd_client, clock, responder_listen="127.0.0.1:0"
    )
    service.start()
    try:
        # daemon threads, by name: a stuck order never keeps the process from exiting
        threads = {t.name: t.daemon for t in threading.enumerate()}
        assert threads.get("ccm-acme") is True
        assert threads.get("ccm-acme-responder") is True
        assert service.responder_address is not None
        port = service.responder_address[1]
    finally:
        service.stop()
    assert "ccm-acme" not in {t.name for t in threading.enumerate()}
    assert service.responder is None
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    service.stop()  # twice: harmless
    assert "ccm-acme-responder" not in {t.name for t in threading.enumerate()}


def test_after_a_good_look_the_next_waits_for_the_check_interval(
    tmp_path: Path, etcd_settings: EtcdSettings, etcd_client: EtcdClient
) -> None:
    """The back-off's short wait is for failed looks only: a look that worked waits
    the check interval (an hour here), so no second look comes in the window."""
    clock = ManualClock(wall=datetime.now(UTC))
    reports: list[TickReport] = []
    plain = service_for(tmp_path, etcd_settings, etcd_client, clock, check_interval=3600.0)
    service = AcmeService(etcd_client, plain.settings, Metrics(), clock, on_tick=reports.append)
    service.start()
    try:
        until(lambda: reports, "the first look")
        window = threading.Event()
        window.wait(0.5)  # ten back-off waits (0.05 s) would fit in it
        assert len(reports) == 1
        service.wake()
        until(lambda: len(reports) == 2, "the look asked for by wake()")
    finally:
        service.stop()
