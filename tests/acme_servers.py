"""Real servers for the ACME tests: Debian's pebble (Let's Encrypt's test CA) with
pebble-challtestsrv as its DNS, and an nginx that passes the challenge path on.

``PebbleServer`` makes a throw-away CA and an HTTPS certificate for pebble's own listener
(``cryptography``), writes pebble's JSON config with free loopback ports, and starts
challtestsrv (DNS only: every name is 127.0.0.1) and pebble. Pebble validates HTTP-01 by
connecting to ``http_port`` on that address: the test's nginx listens there.
``PEBBLE_VA_NOSLEEP`` (no random validation delay), ``PEBBLE_WFE_NONCEREJECT=0`` (no
random bad-nonce refusals) and ``PEBBLE_AUTHZREUSE=0`` (every order validates again)
keep the runs fast and deterministic. Pebble makes a new issuing CA at each start:
``root_pem()`` fetches it from the management port to verify what it issued.

Every process is started through ``die_with_parent`` and stopped by ``close()``.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ccm.testing.etcd import die_with_parent

PEBBLE = "/usr/bin/pebble"
CHALLTESTSRV = "/usr/bin/pebble-challtestsrv"
NGINX = "/usr/sbin/nginx"


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port free for TCP and UDP now, chosen BELOW the kernel's ephemeral
    range: these ports are bound later by another process (pebble, nginx, a responder),
    and a port the kernel hands out for ``bind(0)`` could meanwhile go to some other
    test's server or client socket on this shared machine."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(10000, low)
        try:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
            ):
                tcp.bind(("127.0.0.1", port))
                udp.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free loopback port below the ephemeral range")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def write_tls_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for ``localhost``/127.0.0.1 signed by it: (ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("ccm test CA for pebble"))
        .issuer_name(_name("ccm test CA for pebble"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class PebbleServer:
    """pebble + pebble-challtestsrv on loopback; ``start()``, then always ``close()``."""

    def __init__(self, http_port: int) -> None:
        for binary in (PEBBLE, CHALLTESTSRV):
            if not shutil.which(binary):
                raise RuntimeError(f"{binary} is missing: apt-get install -y pebble")
        self.http_port = http_port
        self.base = Path(tempfile.mkdtemp(prefix="ccm-pebble-"))
        self.ca_file, self.cert_file, self.key_file = write_tls_ca(self.base)
        self.port = free_port()
        self.management_port = free_port()
        self.dns_port = free_port()
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def _spawn(self, argv: list[str], log_name: str, env: dict[str, str] | None = None) -> None:
        with open(self.base / log_name, "ab") as log:
            self._processes.append(
                subprocess.Popen(
                    die_with_parent(argv),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=self.base,
                )
            )

    def start(self, timeout: float = 20.0) -> None:
        dns = f"127.0.0.1:{self.dns_port}"
        self._spawn(
            [
                CHALLTESTSRV,
                "-defaultIPv4", "127.0.0.1",
                "-defaultIPv6", "",
                "-dns01", dns,
                "-http01", "",
                "-https01", "",
                "-tlsalpn01", "",
                "-management", f"127.0.0.1:{free_port()}",
            ],
            "challtestsrv.log",
        )  # fmt: skip
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{self.management_port}",
                "certificate": str(self.cert_file),
                "privateKey": str(self.key_file),
                "httpPort": self.http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        config_path = self.base / "pebble-config.json"
        config_path.write_text(json.dumps(config))
        env = {
            "PATH": "/usr/bin:/bin",
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": "0",
            "PEBBLE_AUTHZREUSE": "0",
        }
        self._spawn([PEBBLE, "-config", str(config_path), "-dnsserver", dns], "pebble.log", env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self._processes:
                if process.poll() is not None:
                    raise RuntimeError(f"pebble exited:\n{self.logs()}")
            try:
                self._get(self.directory_url)
                self._get(f"https://127.0.0.1:{self.management_port}/roots/0")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"pebble not answering after {timeout} s:\n{self.logs()}")

    def _get(self, url: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            body: bytes = response.read()
            return body

    def root_pem(self) -> bytes:
        """The root of pebble's issuing chain (new at each start)."""
        return self._get(f"https://127.0.0.1:{self.management_port}/roots/0")

    def logs(self) -> str:
        return (
            f"--- pebble\n{_log_tail(self.base / 'pebble.log')}\n"
            f"--- challtestsrv\n{_log_tail(self.base / 'challtestsrv.log')}"
        )

    def close(self) -> None:
        try:
            for process in reversed(self._processes):
                _stop(process)
        finally:
            self._processes = []
            shutil.rmtree(self.base, ignore_errors=True)


class ChallengeNginx:
    """A real nginx on ``127.0.0.1:port`` whose server block passes
    ``/.well-known/acme-challenge/`` to ``upstream`` (``host:port``) with the location
    block the vhost and default-server templates are to carry (``^~`` so no regex
    location such as ``\\.php$`` wins, ``auth_basic off`` so a realm on ``/`` does not
    401 the CA); optionally also HTTPS with a certificate, to check an issued one from a
    client."""

    def __init__(
        self,
        port: int,
        upstream: str,
        *,
        tls: tuple[Path, Path, int] | None = None,  # fullchain, key, https port
        unanswered: tuple[str, ...] = (),
        routes: dict[str, str] | None = None,
    ) -> None:
        self.port = port
        self.upstream = upstream
        self.tls = tls
        #: names served by a block that does NOT pass the challenge path (a broken vhost)
        self.unanswered = unanswered
        #: name → upstream: a server block of its own passing the path elsewhere (the
        #: name's DNS points at another web node)
        self.routes = routes or {}
        self.base = Path(tempfile.mkdtemp(prefix="ccm-acme-nginx-"))
        self._process: subprocess.Popen[bytes] | None = None

    def _config(self) -> str:
        base = self.base
        https = ""
        if self.tls is not None:
            fullchain, key, https_port = self.tls
            https = f"""
    server {{
        listen 127.0.0.1:{https_port} ssl;
        server_name _;
        ssl_certificate {fullchain};
        ssl_certificate_key {key};
        location / {{ return 200 "tls ok\\n"; }}
    }}"""
        if self.unanswered:
            https += f"""
    server {{
        listen 127.0.0.1:{self.port};
        server_name {" ".join(self.unanswered)};
        location / {{ return 404; }}
    }}"""
        for name, upstream in self.routes.items():
            https += f"""
    server {{
        listen 127.0.0.1:{self.port};
        server_name {name};
        location ^~ /.well-known/acme-challenge/ {{
            proxy_pass http://{upstream};
            proxy_set_header Host $host;
        }}
    }}"""
        return f"""
daemon off;
master_process off;
worker_processes 1;
pid {base}/nginx.pid;
error_log {base}/error.log info;
events {{ worker_connections 64; }}
http {{
    log_format ccm '$remote_addr "$request" $status host=$host upstream=$upstream_addr '
                   '"$http_user_agent"';
    access_log {base}/access.log ccm;
    client_body_temp_path {base}/body;
    proxy_temp_path {base}/proxy;
    fastcgi_temp_path {base}/fastcgi;
    uwsgi_temp_path {base}/uwsgi;
    scgi_temp_path {base}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        server_name _;
        # the whole site is behind basic auth (a realm on "/"): the challenge still passes
        auth_basic "private";
        auth_basic_user_file {base}/htpasswd;
        location ^~ /.well-known/acme-challenge/ {{
            auth_basic off;
            proxy_pass http://{self.upstream};
            proxy_set_header Host $host;
        }}
        location ~ \\.php$ {{ return 403; }}
        location / {{ return 404; }}
    }}{https}
}}
"""

    def start(self, timeout: float = 10.0) -> None:
        config = self.base / "nginx.conf"
        config.write_text(self._config())
        (self.base / "htpasswd").write_text("nobody:$6$x$not.a.real.hash\n")
        check = subprocess.run(
            [NGINX, "-t", "-c", str(config), "-e", str(self.base / "error.log")],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t refused the test config:\n{check.stderr}")
        with open(self.base / "stderr.log", "ab") as log:
            self._process = subprocess.Popen(
                die_with_parent([NGINX, "-c", str(config), "-e", str(self.base / "error.log")]),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nginx exited:\n{_log_tail(self.base / 'error.log')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("nginx not listening")

    def access_log(self) -> str:
        return (self.base / "access.log").read_text(errors="replace")

    def close(self) -> None:
        try:
            _stop(self._process)
        finally:
            self._process = None
            shutil.rmtree(self.base, ignore_errors=True)
