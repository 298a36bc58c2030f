"""A real, throw-away etcd for the tests: free loopback ports, a temporary data dir.

ccm's cluster logic is tested against the real server only (no in-memory fake gets
revisions, leases and compaction right). ``EtcdServer`` starts Debian's ``/usr/bin/etcd``
as a single member, waits until its ``/health`` endpoint answers (polling, with a
deadline), and is always stopped by its owner (``with EtcdServer(...)`` or a fixture's
teardown): terminate, then kill; should the test process itself be killed, the kernel
kills etcd too (``PR_SET_PDEATHSIG``). ``kill()`` (SIGKILL) and ``restart()`` on the
same ports and data dir let cluster tests exercise an etcd outage.

It runs with etcd's default limits (``--max-txn-ops 128``, 1.5 MiB requests) on purpose:
the limits a production etcd has are the ones the code must live with. Only the raft
timing is shortened (a restart elects its lone member in ~0.1 s instead of ~1 s).
"""

from __future__ import annotations

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


class EtcdServer:
    """One single-member etcd on loopback; ``start()``, then always ``stop()``."""

    def __init__(
        self,
        binary: str = ETCD_BINARY,
        base_dir: Path | None = None,
        *,
        tls: EtcdTls | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            raise EtcdServerError(
                f"{binary} is missing: the tests need a real etcd "
                "(apt-get install -y etcd-server etcd-client)"
            )
        self.binary = binary
        self.tls = tls
        self.extra_args = extra_args
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

    def _spawn(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = [
            self.binary,
            "--name", "e1",
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"e1={peer}",
            "--initial-cluster-state", "new",
            # A lone member elects itself after one election timeout when it restarts:
            # keep that short so restart tests are quick (1 s by default).
            "--heartbeat-interval", "10",
            "--election-timeout", "100",
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

    def __enter__(self) -> EtcdServer:
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
