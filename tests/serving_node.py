"""Real servers running one node root's rendered files, in a private namespace.

``ServedNode(root)`` starts one helper process inside fresh mount, network and PID
namespaces (``unshare -m -n -p``, loopback only). The helper (this file, run as a
script) bind-mounts the root's ``etc/passwd``, ``group``, ``shadow``, ``gshadow``,
``home``, ``etc/php/<v>/fpm/pool.d``, ``etc/nginx/sites-enabled``, ``etc/dovecot`` and
``var/spool/cron/crontabs`` over the real paths and scratch directories over ``/run``,
``/var/log`` and ``/var/lib/nginx``. The root's ``etc/ssl/ccm`` and ``etc/nginx/htpasswd``
have no real directory to cover: a private copy of ``/etc/ssl`` and ``/etc/nginx`` goes
over those first, with the two directories bound into it. Then it starts Debian's nginx
and php-fpm from their stock main configurations (``/etc/nginx/nginx.conf``,
``/etc/php/<v>/fpm/php-fpm.conf``) and, when asked, Dovecot with a small configuration of
the caller's. It polls until each answers (bounded), says so on stdout, and waits for its
stdin to close.

The machine's own files are never written: the mounts exist only in the private mount
namespace and vanish with it. The rendered files are used unchanged.

Everything started dies with the helper: it is PID 1 of its PID namespace (the kernel
kills the whole namespace when it exits), ``unshare --kill-child`` kills it when
``unshare`` dies, and ``setpriv --pdeathsig`` kills ``unshare`` when the test process
dies. ``run()`` executes a command inside the namespace's mounts and network
(``nsenter``), e.g. ``curl`` or ``crontab -l``.

While it runs, the helper takes one JSON request a line on its stdin and answers each
with one line: ``restart_nginx()`` (the rendered files changed: a certificate arrived)
and the namespace's half of a bridge.

**Bridges** cross the network-namespace boundary for a server outside that must reach
nginx inside (an ACME server validating a challenge: ``forward_into``) or for nginx
inside to reach a server outside (ccm's ACME responder, which the rendered files
``proxy_pass`` to: ``forward_out``). Each bridge is two ``socat`` processes joined by a
*path* unix socket in the scratch directory: a path socket is found through the file
system, which both sides share, whatever network namespace the caller is in (an
abstract one would not be). One ``socat`` listens on loopback TCP on its side and
connects to the socket, the other listens on the socket and connects to loopback TCP on
the other side; both fork per connection. The rendered files and ccm stay unchanged: the
vhosts still pass the challenge path to ``127.0.0.1:<responder port>``, which inside the
namespace is the bridge. (The alternative, a unix-socket ``responder_listen`` in ccm,
would still leave the inward hop to bridge.) The host's half runs in its own process
group under ``setpriv --pdeathsig`` and is stopped with its forked children by
``close()``; the namespace's half is the helper's child and dies with the namespace.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ccm.testing.etcd import StartedWhileUsed

START_TIMEOUT = 30.0
STOP_GRACE = 2.0
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
ACCOUNT_FILES = ("passwd", "group", "shadow", "gshadow")
#: (parent, directory) ccm writes under a parent the machine has: certificates, htpasswd
COPIED_PARENTS = (("/etc/nginx", "htpasswd"), ("/etc/ssl", "ccm"))
#: a socket to connect to, to see that something listens: (family, address)
_Probe = tuple[int, str | tuple[str, int]]


class ServingError(RuntimeError):
    """The servers could not be started (the message carries their log tails)."""


def _tool(name: str) -> str:
    found = shutil.which(name, path=SEARCH_PATH)
    if found is None:
        raise ServingError(f"{name} is not installed (scripts/install-system-packages)")
    return found


@dataclass(frozen=True)
class HttpResult:
    """One curl request: ``status`` 0 when no HTTP response came (see ``curl_exit``)."""

    status: int
    body: str
    curl_exit: int
    error: str
    #: the response's ``Location`` header ("" when none)
    location: str = ""
    #: the HTTP version spoken ("1.1", "2")
    http_version: str = ""

    def __str__(self) -> str:
        if self.status == 0:
            return f"no HTTP response (curl exit {self.curl_exit}: {self.error.strip()})"
        return f"HTTP {self.status}: {self.body[:500]!r}"


class ServedNode(StartedWhileUsed):
    """nginx + php-fpm (+ Dovecot) serving ``root``'s rendered files; ``start()``, then
    always ``close()`` (or use ``with``)."""

    def __init__(
        self,
        root: Path,
        *,
        php_version: str = "8.2",
        dovecot_config: Path | None = None,
        timeout: float = START_TIMEOUT,
    ) -> None:
        self.root = root
        self.php_version = php_version
        self.dovecot_config = dovecot_config
        self.timeout = timeout
        self.scratch = Path(tempfile.mkdtemp(prefix="ccm-served-"))
        self._process: subprocess.Popen[str] | None = None
        #: the host's halves of the bridges (each the leader of its process group)
        self._bridges: list[subprocess.Popen[bytes]] = []
        self._bridge_numbers = itertools.count(1)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        spec = {
            "root": str(self.root),
            "scratch": str(self.scratch),
            "php_version": self.php_version,
            "dovecot_config": str(self.dovecot_config) if self.dovecot_config else None,
            "timeout": self.timeout,
        }
        argv = [
            _tool("setpriv"), "--pdeathsig", "KILL", "--",
            _tool("unshare"), "--mount", "--net", "--pid", "--fork", "--kill-child",
            "--propagation", "private", "--",
            sys.executable, str(Path(__file__).resolve()), json.dumps(spec),
        ]  # fmt: skip
        with open(self.scratch / "helper.log", "w") as helper_log:
            self._process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=helper_log, text=True
            )
        line = self._read_line(self.timeout + 10)
        try:
            message = json.loads(line) if line else {}
        except ValueError:
            message = {"error": f"unexpected output from the helper: {line!r}"}
        if not message.get("ready"):
            error = message.get("error") or "the helper exited without a word"
            logs = self.log_tails()
            self.close()
            raise ServingError(f"{error}\n{logs}")

    def _read_line(self, timeout: float) -> str:
        assert self._process is not None and self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], timeout)
        if not ready:
            return json.dumps({"error": f"the servers were not ready after {timeout} s"})
        return self._process.stdout.readline()

    @property
    def pid(self) -> int:
        """The ``unshare`` process: it lives in the private mount and network namespaces."""
        assert self._process is not None, "not started"
        return self._process.pid

    def close(self) -> None:
        """Stop the host's halves of the bridges (each with the children it forked), then
        every server (the helper's stdin closes: it stops them, then exits; PID 1 of the
        namespace gone, the kernel kills what is left), remove the scratch dirs."""
        bridges, self._bridges = self._bridges, []
        process, self._process = self._process, None
        try:
            for bridge in bridges:
                _stop_group(bridge)
        finally:
            if process is not None:
                try:
                    if process.stdin is not None:
                        process.stdin.close()
                    process.wait(timeout=15)
                except (subprocess.TimeoutExpired, OSError):
                    process.kill()
                    process.wait()
                finally:
                    if process.stdout is not None:
                        process.stdout.close()
            shutil.rmtree(self.scratch, ignore_errors=True)

    # -- requests to the helper, and bridges ----------------------------------------------

    def _ask(self, request: dict[str, object]) -> None:
        """Send the helper one request; raise ``ServingError`` unless it answers ok."""
        process = self._process
        assert process is not None and process.stdin is not None, "not started"
        try:
            process.stdin.write(json.dumps(request) + "\n")
            process.stdin.flush()
        except OSError as error:
            raise ServingError(f"the helper is gone ({error})\n{self.log_tails()}") from None
        line = self._read_line(self.timeout + 10)
        try:
            reply = json.loads(line) if line else {"error": "the helper exited"}
        except ValueError:
            reply = {"error": f"unexpected output from the helper: {line!r}"}
        if not reply.get("ok"):
            raise ServingError(f"{reply.get('error')}\n{self.log_tails()}")

    def restart_nginx(self) -> None:
        """Stop nginx and start it again on the rendered files as they are now; returns
        once the new one listens on port 80. A restart, not a reload: when it returns,
        every new connection gets the new configuration (after a reload, old workers
        may still take one for a moment). ``ServingError`` if it does not start."""
        self._ask({"restart": "nginx"})

    def _host_half(self, name: str, addresses: Sequence[str]) -> None:
        """Start ``socat`` on the host (its own process group, killed if we die) and wait
        until it listens; it is stopped by ``close()`` whatever happens."""
        log_path = self.scratch / f"{name}.log"
        with open(log_path, "ab") as log:
            self._bridges.append(
                subprocess.Popen(
                    [_tool("setpriv"), "--pdeathsig", "KILL", "--", *_socat(addresses)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        _await_listening(name, self._bridges[-1], log_path, self.timeout)

    def _bridge_socket(self) -> tuple[str, Path]:
        name = f"bridge-{next(self._bridge_numbers)}"
        return name, self.scratch / f"{name}.sock"

    def forward_into(self, host_port: int, ns_port: int) -> None:
        """Connections to ``127.0.0.1:host_port`` on the host reach ``127.0.0.1:ns_port``
        inside the namespace (an ACME server outside validating through nginx inside)."""
        name, path = self._bridge_socket()
        self._ask(
            {
                "bridge": f"{name}-in-namespace",
                "addresses": [f"UNIX-LISTEN:{path},fork", f"TCP4:127.0.0.1:{ns_port}"],
            }
        )
        self._host_half(
            f"{name}-on-host",
            [f"TCP4-LISTEN:{host_port},bind=127.0.0.1,reuseaddr,fork", f"UNIX-CONNECT:{path}"],
        )

    def forward_out(self, ns_port: int, host_address: tuple[str, int]) -> None:
        """Connections to ``127.0.0.1:ns_port`` inside the namespace reach ``host_address``
        (an IPv4 address or name, and a port) on the host (nginx inside passing the
        challenge path to a ccm daemon's responder outside)."""
        name, path = self._bridge_socket()
        host, port = host_address
        self._host_half(f"{name}-on-host", [f"UNIX-LISTEN:{path},fork", f"TCP4:{host}:{port}"])
        self._ask(
            {
                "bridge": f"{name}-in-namespace",
                "addresses": [
                    f"TCP4-LISTEN:{ns_port},bind=127.0.0.1,reuseaddr,fork",
                    f"UNIX-CONNECT:{path}",
                ],
            }
        )

    # -- inside the namespace ----------------------------------------------------------------

    def run(self, argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` with the namespace's mounts and loopback network."""
        return subprocess.run(
            [_tool("nsenter"), "-t", str(self.pid), "-m", "-n", "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def get(
        self,
        host: str,
        path: str = "/",
        *,
        https: bool = False,
        ca_file: Path | None = None,
        options: Sequence[str] = (),
    ) -> HttpResult:
        """GET ``path`` from ``host`` at 127.0.0.1 (port 80, or 443 with ``https``).

        With ``ca_file`` the server's certificate is verified against it (for ``host``);
        without, it is not checked. ``options``: more curl options (``--tlsv1.1``, ``-u``).
        """
        scheme, port = ("https", 443) if https else ("http", 80)
        trust = ["--cacert", str(ca_file)] if ca_file is not None else ["--insecure"]
        done = self.run(
            [
                _tool("curl"),
                "--silent",
                "--show-error",
                *trust,
                "--max-time",
                "20",
                "--resolve",
                f"{host}:{port}:127.0.0.1",
                *options,
                "--output",
                "-",
                "--write-out",
                "\n%{http_code} %{http_version} %header{location}",
                f"{scheme}://{host}{path}",
            ]  # fmt: skip
        )
        body, _, tail = done.stdout.rpartition("\n")
        code, _, rest = tail.partition(" ")
        version, _, location = rest.partition(" ")
        return HttpResult(
            int(code or 0), body, done.returncode, done.stderr, location.strip(), version
        )

    def nginx_access_log(self) -> str:
        """nginx's access log (Debian's ``combined`` format), "" before the first request."""
        try:
            return (self.scratch / "log/nginx/access.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tails(self, lines: int = 20) -> str:
        parts = []
        for path in sorted(self.scratch.rglob("*.log")):
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            if text:
                name = path.relative_to(self.scratch)
                parts.append(f"--- {name}\n" + "\n".join(text))
        return "\n".join(parts) or "(no logs)"


def _socat(addresses: Sequence[str]) -> list[str]:
    """``socat`` between two addresses; ``-d -d`` makes it say when it listens."""
    return [_tool("socat"), "-d", "-d", *addresses]


def _await_listening(
    name: str, process: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    """Wait for socat's own notice that it listens ("listening on", in its log), not for
    a connection to succeed: that could reach another process holding the address."""
    deadline = time.monotonic() + timeout
    while b" listening on " not in log.read_bytes():
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise ServingError(f"{name} exited (code {process.returncode}): {tail}")
        if time.monotonic() > deadline:
            raise ServingError(f"{name}: not listening after {timeout} s")
        time.sleep(0.02)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM a process group (a ``socat`` and the children it forked), a short grace,
    then SIGKILL what is left of it. The leader is reaped only at the end (``WNOWAIT``
    until then), so its group id cannot have gone to another process meanwhile."""
    if process.returncode is not None:  # reaped already: it never forked (see _host_half)
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
    while time.monotonic() < deadline and os.waitid(os.P_PID, process.pid, flags) is None:
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


# -- the helper, inside the namespaces ------------------------------------------------------


def _mount_bind(source: Path, target: str) -> None:
    subprocess.run(["mount", "--bind", str(source), target], check=True, capture_output=True)


def _connectable(family: int, address: str | tuple[str, int]) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        try:
            sock.connect(address)
        except OSError:
            return False
        return True


def _pool_sockets(pool_dir: Path) -> list[str]:
    sockets = []
    for config in sorted(pool_dir.glob("*.conf")):
        for line in config.read_text().splitlines():
            if line.startswith("listen = "):
                sockets.append(line.removeprefix("listen = ").strip())
    return sockets


class _Helper:
    def __init__(self, spec: dict[str, object]) -> None:
        self.root = Path(str(spec["root"]))
        self.scratch = Path(str(spec["scratch"]))
        self.version = str(spec["php_version"])
        dovecot = spec.get("dovecot_config")
        self.dovecot_config = Path(str(dovecot)) if dovecot else None
        self.timeout = float(str(spec["timeout"]))
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def mount(self) -> None:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, capture_output=True)
        # Directories ccm writes that the machine does not have (certificates, basic auth
        # files): a private copy of their parent goes over the parent first (the real one
        # is never written), then the root's directory over the new one.
        for parent, name in COPIED_PARENTS:
            copy = self.scratch / ("copy" + parent.replace("/", "-"))
            shutil.copytree(parent, copy, symlinks=True)
            (copy / name).mkdir(exist_ok=True)
            _mount_bind(copy, parent)
            source = self.root / parent.lstrip("/") / name
            source.mkdir(parents=True, exist_ok=True)
            _mount_bind(source, f"{parent}/{name}")
        etc = self.root / "etc"
        for name in ACCOUNT_FILES:
            if (etc / name).exists():
                _mount_bind(etc / name, f"/etc/{name}")
        pool_dir = f"/etc/php/{self.version}/fpm/pool.d"
        binds = {
            "home": "/home",
            pool_dir.lstrip("/"): pool_dir,
            "etc/nginx/sites-enabled": "/etc/nginx/sites-enabled",
            "etc/dovecot": "/etc/dovecot",
            "var/spool/cron/crontabs": "/var/spool/cron/crontabs",
        }
        for source, target in binds.items():
            if not os.path.isdir(target):
                raise ServingError(f"{target} is missing (scripts/install-system-packages)")
            path = self.root / source
            path.mkdir(parents=True, exist_ok=True)
            _mount_bind(path, target)
        for name, target in (("run", "/run"), ("log", "/var/log"), ("lib-nginx", "/var/lib/nginx")):
            (self.scratch / name).mkdir(exist_ok=True)
            _mount_bind(self.scratch / name, target)
        Path("/run/php").mkdir()  # namespace
        Path("/var/log/nginx").mkdir()  # namespace

    def spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.scratch / f"{name}.log", "ab")  # noqa: SIM115
        self.children[name] = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )

    def wait_until(self, what: str, probe: list[_Probe]) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            for name, child in self.children.items():
                if child.poll() is not None:
                    raise ServingError(f"{name} exited (code {child.returncode}) before {what}")
            if all(_connectable(family, address) for family, address in probe):
                return
            if time.monotonic() > deadline:
                raise ServingError(f"{what}: not after {self.timeout} s")
            time.sleep(0.02)

    def start(self) -> None:
        pool_dir = Path(f"/etc/php/{self.version}/fpm/pool.d")
        sockets = _pool_sockets(pool_dir)
        if sockets:  # php-fpm refuses to start without a pool (a node without PHP sites)
            self.spawn(
                f"php{self.version}-fpm", [f"/usr/sbin/php-fpm{self.version}", "--nodaemonize"]
            )
            self.wait_until(
                "php-fpm listens on every pool's socket",
                [(socket.AF_UNIX, path) for path in sockets],
            )
        self.start_nginx()
        if self.dovecot_config is not None:
            self.spawn("dovecot", ["/usr/sbin/dovecot", "-F", "-c", str(self.dovecot_config)])
            base_dir = self._doveconf("base_dir")
            self.wait_until(
                "dovecot's auth service listens",
                [(socket.AF_UNIX, f"{base_dir}/auth-client")],
            )

    def start_nginx(self) -> None:
        self.spawn("nginx", ["/usr/sbin/nginx", "-g", "daemon off;"])
        self.wait_until("nginx listens on 127.0.0.1:80", [(socket.AF_INET, ("127.0.0.1", 80))])

    def stop_child(self, name: str) -> None:
        child = self.children.pop(name)
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(STOP_GRACE * 5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def handle(self, request: dict[str, object]) -> None:
        """One request from ``ServedNode``: restart nginx, or start the namespace's half
        of a bridge and wait until it listens."""
        if request.get("restart") == "nginx":
            self.stop_child("nginx")  # its master waits for its workers: port 80 is free
            self.start_nginx()
        elif isinstance(name := request.get("bridge"), str):
            addresses = request["addresses"]
            assert isinstance(addresses, list)
            self.spawn(name, _socat([str(address) for address in addresses]))
            _await_listening(name, self.children[name], self.scratch / f"{name}.log", self.timeout)
        else:
            raise ServingError(f"unknown request {request!r}")

    def serve_requests(self) -> None:
        """Answer each request line until stdin closes (the test is done, or died: then
        the kernel ends us all)."""
        for line in sys.stdin:
            try:
                self.handle(json.loads(line))
                reply: dict[str, object] = {"ok": True}
            except (ServingError, OSError, ValueError, KeyError) as error:
                reply = {"error": f"{type(error).__name__}: {error}"}
            print(json.dumps(reply), flush=True)

    def _doveconf(self, name: str) -> str:
        assert self.dovecot_config is not None
        done = subprocess.run(
            ["/usr/bin/doveconf", "-c", str(self.dovecot_config), "-h", name],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    def stop(self) -> None:
        """SIGTERM, a short grace, then SIGKILL: nothing here keeps state worth a clean
        shutdown (Dovecot's master may take seconds to stop gracefully)."""
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in self.children.values():
            try:
                child.wait(max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _helper_main(spec_json: str) -> int:
    helper = _Helper(json.loads(spec_json))
    try:
        helper.mount()
        helper.start()
    except (ServingError, OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", None)
        text = f"{error}" + (f": {detail.decode(errors='replace')}" if detail else "")
        print(json.dumps({"error": text}), flush=True)
        helper.stop()
        return 1
    print(json.dumps({"ready": True}), flush=True)
    try:
        helper.serve_requests()
    finally:
        helper.stop()
    return 0


if __name__ == "__main__":
    sys.exit(_helper_main(sys.argv[1]))
