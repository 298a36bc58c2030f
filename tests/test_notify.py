"""The systemd notify client against real AF_UNIX datagram sockets standing in for systemd."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccm.cluster.clock import ManualClock
from ccm.daemon.notify import Notifier, watchdog_interval

# sun_path holds 108 bytes; a deep pytest basetemp could exceed it.
MAX_SOCKET_PATH = 100


class Systemd:
    """The receiving end: a bound datagram socket and the NOTIFY_SOCKET that names it."""

    def __init__(self, sock: socket.socket, notify_socket: str) -> None:
        self.sock = sock
        self.env = {"NOTIFY_SOCKET": notify_socket}

    def receive(self) -> str:
        return self.sock.recv(4096).decode()

    def nothing_received(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            return True
        finally:
            self.sock.setblocking(True)
        return False


def _bound(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    sock.bind(address)
    return sock


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[Systemd]:
    path = tmp_path / "notify"
    with tempfile.TemporaryDirectory(prefix="ccm-") as short:
        if len(str(path)) > MAX_SOCKET_PATH:
            path = Path(short) / "notify"
        with _bound(str(path)) as sock:
            yield Systemd(sock, str(path))


@pytest.fixture
def abstract_systemd() -> Iterator[Systemd]:
    name = f"ccm-test-{uuid.uuid4().hex}"
    with _bound(b"\0" + name.encode()) as sock:
        yield Systemd(sock, "@" + name)


# --- messages ---------------------------------------------------------------------------


def test_ready_with_a_status_is_one_datagram(systemd: Systemd) -> None:
    notifier = Notifier(env=systemd.env)
    assert notifier.enabled
    assert notifier.ready("caught up at revision 42")
    assert systemd.receive() == "READY=1\nSTATUS=caught up at revision 42"
    assert systemd.nothing_received()


def test_each_state_sends_its_message(systemd: Systemd) -> None:
    assert not Notifier(env=systemd.env).watchdog(), "no WATCHDOG_USEC: no pings"
    notifier = Notifier(env={**systemd.env, "WATCHDOG_USEC": "30000000"})
    assert notifier.ready()
    assert notifier.status("waiting for the cluster lock")
    assert notifier.watchdog()
    assert notifier.stopping()
    assert notifier.stopping("finishing run at revision 7")
    assert [systemd.receive() for _ in range(5)] == [
        "READY=1",
        "STATUS=waiting for the cluster lock",
        "WATCHDOG=1",
        "STOPPING=1",
        "STOPPING=1\nSTATUS=finishing run at revision 7",
    ]


def test_reloading_carries_the_monotonic_time_in_microseconds(systemd: Systemd) -> None:
    notifier = Notifier(env=systemd.env, clock=ManualClock(monotonic=12345.678901))
    assert notifier.reloading("reloading settings")
    assert systemd.receive() == (
        "RELOADING=1\nMONOTONIC_USEC=12345678901\nSTATUS=reloading settings"
    )


def test_a_multi_line_status_becomes_one_line(systemd: Systemd) -> None:
    Notifier(env=systemd.env).status("halted by node-2:\nnginx -t failed")
    assert systemd.receive() == "STATUS=halted by node-2: nginx -t failed"


def test_custom_fields_are_sent_as_given(systemd: Systemd) -> None:
    assert Notifier(env=systemd.env).notify("EXTEND_TIMEOUT_USEC=90000000")
    assert systemd.receive() == "EXTEND_TIMEOUT_USEC=90000000"


@pytest.mark.parametrize("field", ["READY", "STATUS=a\nREADY=1"])
def test_a_field_that_is_not_one_key_value_line_is_refused(systemd: Systemd, field: str) -> None:
    with pytest.raises(ValueError, match="KEY=value"):
        Notifier(env=systemd.env).notify(field)
    assert systemd.nothing_received()


def test_an_abstract_socket_receives_the_messages(abstract_systemd: Systemd) -> None:
    notifier = Notifier(env={**abstract_systemd.env, "WATCHDOG_USEC": "30000000"})
    assert notifier.ready("up")
    assert notifier.watchdog()
    assert abstract_systemd.receive() == "READY=1\nSTATUS=up"
    assert abstract_systemd.receive() == "WATCHDOG=1"


def test_the_process_environment_is_the_default(
    systemd: Systemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.env["NOTIFY_SOCKET"])
    assert Notifier().ready()
    assert systemd.receive() == "READY=1"


# --- without systemd --------------------------------------------------------------------


@pytest.mark.parametrize("env", [{}, {"NOTIFY_SOCKET": ""}])
def test_without_notify_socket_every_call_is_a_no_op(env: dict[str, str]) -> None:
    notifier = Notifier(env=env)
    assert not notifier.enabled
    assert not notifier.ready("up")
    assert not notifier.status("x")
    assert not notifier.watchdog()
    assert not notifier.reloading()
    assert not notifier.stopping()
    assert notifier.watchdog_interval() is None


def test_a_relative_notify_socket_is_refused() -> None:
    with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
        Notifier(env={"NOTIFY_SOCKET": "run/notify"})


def test_an_undeliverable_message_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with caplog.at_level(logging.WARNING, logger="ccm.daemon.notify"):
        assert not notifier.ready()
    assert "systemd notify" in caplog.text
    assert "gone" in caplog.text


# --- the watchdog interval --------------------------------------------------------------


@pytest.mark.parametrize(
    ("usec", "interval"),
    [("30000000", 15.0), ("3000000", 1.5), ("1", 0.0000005), ("0", None), ("", None)],
)
def test_the_watchdog_is_pinged_at_half_its_timeout(usec: str, interval: float | None) -> None:
    assert watchdog_interval({"WATCHDOG_USEC": usec}) == interval


def test_no_watchdog_without_watchdog_usec() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_PID": str(os.getpid())}) is None


def test_watchdog_pid_must_be_this_process() -> None:
    env = {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "4242"}
    assert watchdog_interval(env, pid=4242) == 10.0
    assert watchdog_interval(env, pid=4243) is None


def test_watchdog_pid_defaults_to_this_process() -> None:
    mine = {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(mine) == 10.0
    assert Notifier(env=mine).watchdog_interval() == 10.0
    parents = {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert watchdog_interval(parents) is None
    assert Notifier(env=parents).watchdog_interval() is None


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"WATCHDOG_USEC": "ten"}, "WATCHDOG_USEC"),
        ({"WATCHDOG_USEC": "-1"}, "WATCHDOG_USEC"),
        ({"WATCHDOG_USEC": "1.5"}, "WATCHDOG_USEC"),
        ({"WATCHDOG_USEC": "10", "WATCHDOG_PID": "me"}, "WATCHDOG_PID"),
    ],
)
def test_a_malformed_watchdog_setting_is_refused_naming_the_variable(
    env: dict[str, str], named: str
) -> None:
    refusal = f"^{named} must be a non-negative integer, not "
    with pytest.raises(ValueError, match=refusal):
        watchdog_interval(env)
    with pytest.raises(ValueError, match=refusal):
        Notifier(env=env)


def test_the_watchdog_interval_reads_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "8000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 4.0
