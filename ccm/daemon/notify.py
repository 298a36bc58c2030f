"""Talk to systemd: readiness, status line, watchdog pings, reload and stop notices.

The daemon runs as a ``Type=notify`` (or ``notify-reload``) unit, so ``systemctl start``
returns only once the node has joined the cluster and caught up, ``systemctl status``
shows what the node is doing, and a daemon whose loop hangs (a stuck etcd call, a
deadlock) is killed and restarted by the watchdog instead of silently holding work.

This is the whole ``sd_notify(3)`` protocol, without a dependency: systemd passes a
socket address in ``NOTIFY_SOCKET`` — a filesystem path, or ``@name`` for a Linux
abstract socket — and the service sends it ``KEY=value`` lines as one ``AF_UNIX``
datagram. When ``NOTIFY_SOCKET`` is unset (run from a shell, in tests, under another
supervisor) every call is a no-op, so callers never ask whether systemd is there.

Like ``sd_notify``, sending is best effort: a message that cannot be delivered is logged
and reported by a False return, never raised, because telling systemd about a state must
not be what stops the daemon. A malformed ``NOTIFY_SOCKET`` or ``WATCHDOG_USEC`` is
different: it is a broken unit, refused when the :class:`Notifier` is built.

The environment is injected (``env=``), as is the clock that stamps ``RELOADING=1``, so
tests point a notifier at a socket of their own.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

from ccm.cluster.clock import Clock, SystemClock

__all__ = ["Notifier", "watchdog_interval"]

log = logging.getLogger(__name__)


class Notifier:
    """Sends state changes to the socket named by ``NOTIFY_SOCKET``, or nothing at all.

    ``env`` defaults to :data:`os.environ`, read once here. ``clock.monotonic()`` must
    be ``CLOCK_MONOTONIC`` in production (it is, for :class:`SystemClock`): systemd
    compares the ``MONOTONIC_USEC`` sent with ``RELOADING=1`` against its own.
    """

    def __init__(self, env: Mapping[str, str] | None = None, clock: Clock | None = None) -> None:
        self._env: Mapping[str, str] = os.environ if env is None else env
        self._clock: Clock = SystemClock() if clock is None else clock
        self._address = _address(self._env.get("NOTIFY_SOCKET", ""))
        self._watchdog = watchdog_interval(self._env)

    @property
    def enabled(self) -> bool:
        """True when a notify socket is configured (the service runs under systemd)."""
        return self._address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields as one datagram; True when systemd got it.

        False when disabled or when delivery failed (logged).
        """
        if self._address is None or not fields:
            return False
        for field in fields:
            if "=" not in field or "\n" in field:
                raise ValueError(f"a notify field is one KEY=value line, not {field!r}")
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # never block: a notify socket nobody reads must not wedge the main loop
                sock.setblocking(False)
                sock.sendto(message, self._address)
        except OSError as error:
            log.warning("systemd notify to %r failed: %s", self._printable_address, error)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """The daemon is up (joined the cluster, caught up); optionally with a status."""
        return self.notify("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        """Set the one-line status shown by ``systemctl status``."""
        return self.notify(*_status(text))

    def watchdog(self) -> bool:
        """Ping the watchdog; nothing is sent when systemd set no watchdog for us."""
        if self.watchdog_interval() is None:
            return False
        return self.notify("WATCHDOG=1")

    def reloading(self, status: str | None = None) -> bool:
        """The daemon starts reloading its settings; send :meth:`ready` when done.

        Carries ``MONOTONIC_USEC``, which ``Type=notify-reload`` requires.
        """
        usec = round(self._clock.monotonic() * 1_000_000)
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        """The daemon is shutting down (finishing or abandoning the current run)."""
        return self.notify("STOPPING=1", *_status(status))

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings for this process, or None (see the function)."""
        return self._watchdog

    @property
    def _printable_address(self) -> str:
        return self._env.get("NOTIFY_SOCKET", "")

    def __repr__(self) -> str:
        return f"Notifier(NOTIFY_SOCKET={self._printable_address!r})"


def watchdog_interval(
    env: Mapping[str, str] | None = None, *, pid: int | None = None
) -> float | None:
    """How often to ping the watchdog: half of ``WATCHDOG_USEC``, in seconds.

    None when the watchdog is off: ``WATCHDOG_USEC`` unset or 0, or ``WATCHDOG_PID`` set
    to another process (a child that inherited the environment must not ping for its
    parent). Pinging at half the timeout is what ``sd_watchdog_enabled(3)`` recommends:
    one late ping is not yet a kill. ``pid`` defaults to :func:`os.getpid`.
    """
    env = os.environ if env is None else env
    raw_usec = env.get("WATCHDOG_USEC", "")
    if not raw_usec:
        return None
    usec = _non_negative_int(raw_usec, "WATCHDOG_USEC")
    raw_pid = env.get("WATCHDOG_PID", "")
    if raw_pid:
        watched = _non_negative_int(raw_pid, "WATCHDOG_PID")
        if watched != (os.getpid() if pid is None else pid):
            return None
    if usec == 0:
        return None
    return usec / 2_000_000


def _address(value: str) -> str | bytes | None:
    """The ``sendto`` address for a ``NOTIFY_SOCKET`` value; None when unset."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # Linux abstract namespace
    if value.startswith("/"):
        return value
    raise ValueError(f"NOTIFY_SOCKET must be an absolute path or an @abstract name, not {value!r}")


def _status(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    # One line: systemd splits the datagram on newlines.
    return ("STATUS=" + " ".join(text.splitlines()),)


def _non_negative_int(value: str, name: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
    return int(value)
