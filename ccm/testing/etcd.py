"""A real, throw-away etcd for tests: free loopback ports, a temporary data dir.

ccm's cluster logic is tested against the real server only (no in-memory fake gets
revisions, leases and compaction right), and so is a plugin's (the ``ccm_etcd_server``
fixture of ``ccm.testing.plugin`` is one of these). ``EtcdServer`` starts Debian's ``/usr/bin/etcd``
as a single member, waits until its ``/health`` endpoint answers (polling, with a
deadline), and is always stopped by its owner (``with EtcdServer(...)`` or a fixture's
teardown): terminate, then kill; should the test process itself be killed, the kernel
kills etcd too (``PR_SET_PDEATHSIG``). ``kill()`` (SIGKILL) and ``restart()`` on the
same ports and data dir let cluster tests exercise an etcd outage.

``EtcdCluster`` runs three (or more) members on loopback the same way, for the fault
tests: ``kill``/``restart`` a member, ``freeze``/``thaw`` one (SIGSTOP/SIGCONT: a member
that still accepts TCP connections but never answers, as in a disk stall), find the
``leader``. Every member is stopped by ``close()`` (a frozen one is thawed first).

It runs with etcd's default limits (``--max-txn-ops 128``, 1.5 MiB requests) on purpose:
the limits a production etcd has are the ones the code must live with. Only the raft
timing is shortened (a restart elects its lone member in ~0.1 s instead of ~1 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

ETCD_BINARY = "/usr/bin/etcd"
START_TIMEOUT = 20.0


class EtcdServerError(RuntimeError):
    """The test etcd could not be started (the message carries its log tail)."""


SETPRIV = shutil.which("setpriv")  # util-linux, on every Debian


def die_with_parent(argv: list[str]) -> list[str]:
    """``argv`` run so that the kernel SIGKILLs it if the test process dies first.

    Done by ``setpriv --pdeathsig`` at exec time, not by a ``preexec_fn``: Python code
    between fork and exec in a process with threads (gRPC, watchers, notify drains) can
    deadlock the fork — seen here as a test hung for minutes in ``Popen``.
    """
    return [SETPRIV, "--pdeathsig", "KILL", "--", *argv] if SETPRIV else argv


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class EtcdTls:
    """Serve clients over https with this certificate; with ``ca_file``, require client
    certificates signed by it."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None
    client_cert_file: Path | None = None  # what the health probe presents
    client_key_file: Path | None = None


class StartedWhileUsed:
    """``with``: started on entry (closed again if the start fails), closed on exit."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class EtcdServer(StartedWhileUsed):
    """One single-member etcd on loopback; ``start()``, then always ``stop()``."""

    def __init__(
        self,
        binary: str = ETCD_BINARY,
        base_dir: Path | None = None,
        *,
        tls: EtcdTls | None = None,
        extra_args: tuple[str, ...] = (),
        name: str = "e1",
    ) -> None:
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            raise EtcdServerError(
                f"{binary} is missing: the tests need a real etcd "
                "(apt-get install -y etcd-server etcd-client)"
            )
        self.binary = binary
        self.tls = tls
        self.extra_args = extra_args
        self.name = name
        self._own_dir = base_dir is None
        self.base_dir = Path(tempfile.mkdtemp(prefix="ccm-etcd-")) if base_dir is None else base_dir
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "etcd.log"
        self.client_port = 0
        self.peer_port = 0
        self._process: subprocess.Popen[bytes] | None = None

    # -- addresses ---------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The client URL, ``http://127.0.0.1:PORT`` (https with TLS)."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start etcd (new free ports on the first start) and wait until it is healthy."""
        if self.running:
            raise EtcdServerError(f"etcd is already running at {self.endpoint}")
        first = self.client_port == 0
        for attempt in range(3):
            if first:
                self.client_port = self.peer_port = _free_port()
                while self.peer_port == self.client_port:
                    self.peer_port = _free_port()
                shutil.rmtree(self.data_dir, ignore_errors=True)
            self._spawn()
            try:
                self.wait_healthy(timeout)
                return
            except EtcdServerError:
                self._terminate()
                # A port grabbed by someone else between probing and binding: try others.
                if not first or attempt == 2:
                    raise

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def _member_args(self) -> list[str]:
        """The cluster flags: a lone member here; ``EtcdCluster``'s members override it."""
        return [
            "--initial-cluster", f"{self.name}={self.peer_url}",
            # A lone member elects itself after one election timeout when it restarts:
            # keep that short so restart tests are quick (1 s by default).
            "--heartbeat-interval", "10",
            "--election-timeout", "100",
        ]  # fmt: skip

    def _spawn(self) -> None:
        peer = self.peer_url
        argv = [
            self.binary,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster-state", "new",
            *self._member_args(),
            *self.extra_args,
        ]  # fmt: skip
        if self.tls is not None:
            argv += ["--cert-file", str(self.tls.cert_file), "--key-file", str(self.tls.key_file)]
            if self.tls.ca_file is not None:
                argv += ["--trusted-ca-file", str(self.tls.ca_file), "--client-cert-auth"]
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                die_with_parent(argv),  # no orphan etcd even if pytest is SIGKILLed
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Poll ``/health`` until etcd answers healthy; raise with its log tail otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise EtcdServerError(f"etcd exited (code {code}):\n{self.log_tail()}")
            if self._healthy():
                return
            time.sleep(0.02)
        raise EtcdServerError(f"etcd not healthy after {timeout} s:\n{self.log_tail()}")

    def _healthy(self) -> bool:
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cafile=self.tls.ca_file)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            if self.tls.client_cert_file is not None:
                context.load_cert_chain(self.tls.client_cert_file, self.tls.client_key_file)
        try:
            url = f"{self.endpoint}/health"
            with urllib.request.urlopen(url, timeout=1, context=context) as response:
                return bool(json.loads(response.read()).get("health") == "true")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), SIGKILL if it does not exit within ``timeout``."""
        self._terminate(timeout)

    def kill(self) -> None:
        """SIGKILL: an abrupt crash, as an operator's worst day would have it."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()
        self._process = None

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop if running, then start again on the same ports and data dir."""
        self._terminate()
        self.start(timeout)

    def _terminate(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)  # a frozen etcd cannot act on SIGTERM
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Stop etcd and remove the temporary directory (when this object created it)."""
        try:
            self._terminate()
        finally:
            if self._own_dir:
                shutil.rmtree(self.base_dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# -- a cluster of members -------------------------------------------------------------------


class _Member(EtcdServer):
    """One member of an ``EtcdCluster`` (ports chosen by the cluster before any start)."""

    def __init__(self, cluster: EtcdCluster, name: str, base_dir: Path) -> None:
        super().__init__(cluster.binary, base_dir, name=name, extra_args=cluster.extra_args)
        self.cluster = cluster
        self.frozen = False

    def _member_args(self) -> list[str]:
        return [
            "--initial-cluster", self.cluster.initial_cluster,
            "--initial-cluster-token", self.cluster.token,
            "--heartbeat-interval", str(self.cluster.heartbeat_ms),
            "--election-timeout", str(self.cluster.election_ms),
        ]  # fmt: skip

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start this member on its ports; healthy means the cluster has a leader."""
        if self.running:
            raise EtcdServerError(f"{self.name} is already running at {self.endpoint}")
        self.frozen = False
        self._spawn()
        self.wait_healthy(timeout)

    def spawn(self) -> None:
        """Start without waiting (the first members cannot be healthy alone)."""
        self.frozen = False
        self._spawn()

    def kill(self) -> None:
        self.frozen = False
        super().kill()

    def freeze(self) -> None:
        """SIGSTOP: the member keeps its sockets (connections are accepted) but answers
        nothing, peers included, until ``thaw()``."""
        if self._process is None or self._process.poll() is not None:
            raise EtcdServerError(f"{self.name} is not running")
        self._process.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT after ``freeze()``."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)
        self.frozen = False

    def status(self, timeout: float = 1.0) -> dict[str, object] | None:
        """etcd's maintenance status (JSON gateway), or None when it does not answer."""
        request = urllib.request.Request(
            f"{self.endpoint}/v3/maintenance/status",
            data=b"{}",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer: dict[str, object] = json.loads(response.read())
                return answer
        except (OSError, ValueError, urllib.error.URLError):
            return None


class EtcdCluster(StartedWhileUsed):
    """``size`` etcd members on loopback; ``start()``, then always ``close()``.

    Raft timing is etcd's default (heartbeat 100 ms, election 1 s) unless given: the
    figures the fault tests and the soak measure are those of a stock cluster.
    """

    def __init__(
        self,
        size: int = 3,
        binary: str = ETCD_BINARY,
        *,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            raise EtcdServerError(
                f"{binary} is missing: the tests need a real etcd "
                "(apt-get install -y etcd-server etcd-client)"
            )
        self.binary = binary
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.extra_args = extra_args
        self.base_dir = Path(tempfile.mkdtemp(prefix="ccm-etcd-cluster-"))
        self.token = f"ccm-test-{os.getpid()}-{self.base_dir.name}"
        self.members = [_Member(self, f"e{i}", self.base_dir / f"e{i}") for i in range(1, size + 1)]
        self.initial_cluster = ""

    @property
    def endpoints(self) -> list[str]:
        return [member.endpoint for member in self.members]

    @property
    def endpoint(self) -> str:
        """The first member's URL (what a single-endpoint user would list)."""
        return self.members[0].endpoint

    def __getitem__(self, index: int) -> _Member:
        return self.members[index]

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Pick free ports, start every member, wait until each one is healthy."""
        for attempt in range(3):
            ports: set[int] = set()
            while len(ports) < 2 * len(self.members):
                ports.add(_free_port())
            chosen = sorted(ports)
            for member in self.members:
                member.client_port, member.peer_port = chosen.pop(), chosen.pop()
                member.base_dir.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(member.data_dir, ignore_errors=True)
            self.initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
            for member in self.members:
                member.spawn()
            try:
                for member in self.members:
                    member.wait_healthy(timeout)
                return
            except EtcdServerError:
                self.stop()
                if attempt == 2:  # a port taken meanwhile by someone else: try others
                    raise

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Every running, unfrozen member answers healthy (so there is a leader)."""
        for member in self.members:
            if member.running and not member.frozen:
                member.wait_healthy(timeout)

    def leader(self, timeout: float = START_TIMEOUT) -> _Member:
        """The member that leads now (polls until the live members agree on one)."""
        deadline = time.monotonic() + timeout
        by_id: dict[str, _Member] = {}
        while True:
            leaders = set()
            for member in self.members:
                if not member.running or member.frozen:
                    continue
                status = member.status()
                if status is None:
                    continue
                header = status.get("header")
                if isinstance(header, dict):
                    by_id[str(header.get("member_id"))] = member
                leaders.add(str(status.get("leader")))
            if len(leaders) == 1:
                found = by_id.get(leaders.pop())
                if found is not None and found.running and not found.frozen:
                    return found
            if time.monotonic() >= deadline:
                raise EtcdServerError(f"no agreed etcd leader after {timeout} s")
            time.sleep(0.05)

    def followers(self) -> list[_Member]:
        leader = self.leader()
        return [m for m in self.members if m is not leader and m.running and not m.frozen]

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    def close(self) -> None:
        """Stop every member (thawing frozen ones) and remove the data dirs."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def log_tails(self, lines: int = 15) -> str:
        return "\n".join(f"== {m.name}\n{m.log_tail(lines)}" for m in self.members)
